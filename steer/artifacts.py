"""Images through Optuna's artifact store: the study's target and each trial's final prediction.

A file-system store beside the database by default (`studies/quick.db` ->
`studies/quick-artifacts/`), where optuna-dashboard finds them with no steer
process running.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from steer.storage import sqlite_path

TARGET_ARTIFACT = "target.png"
PREDICTION_ARTIFACT = "prediction.png"


def artifact_dir(url: str | None, study_name: str, configured: Path | None = None) -> Path | None:
    """Where a study's artifacts go: `configured`, else beside a SQLite database
    (`studies/quick.db` -> `studies/quick-artifacts/`), else `./<study>-artifacts`.
    None for in-memory storages (nothing to keep them beside)."""
    if configured is not None:
        return configured
    if url is None:
        return None
    db = sqlite_path(url)
    if db is not None:
        return db.parent / f"{db.stem}-artifacts"
    return Path.cwd() / f"{study_name}-artifacts"


def artifact_store(path: Path) -> optuna.artifacts.FileSystemArtifactStore:
    path.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(path))


def upload_png(store: optuna.artifacts.FileSystemArtifactStore, png: bytes, name: str,
               study_or_trial: optuna.Study | optuna.Trial) -> str:
    """Upload PNG bytes as an artifact named `name`; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(png)
        return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                study_or_trial=study_or_trial, mimetype="image/png")


def has_study_artifact(study: optuna.Study, name: str) -> bool:
    return any(meta.filename == name for meta in optuna.artifacts.get_all_artifact_meta(study))
