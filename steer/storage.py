"""Opening study storages: URL checks, defensive SQLite settings, finding the study.

SQLite is the default (no server needed), so it is configured for several
local processes: WAL journal (readers never block the writer), a long busy
timeout, and Optuna heartbeats so a killed worker's trial ends FAIL.
"""

from __future__ import annotations

import os
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, SQLAlchemyError

from steer.errors import UserError

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 20  # a RUNNING trial silent this long is stale and gets marked FAIL
SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///` URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_url(url: str) -> None:
    """Reject a malformed or unsupported storage URL with a one-line message."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UserError(
            f"bad storage URL {url!r}: {exc}; expected e.g. sqlite:///studies/quick.db "
            "or postgresql+psycopg://user:pass@host/db"
        ) from None
    except ImportError as exc:
        raise UserError(f"storage URL {url!r} needs a database driver that is not installed: {exc}") from None


def open_storage(url: str, *, must_exist: bool = False, heartbeat: bool = True,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
                 ) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for `url`, with SQLite in WAL mode and heartbeats on.

    `must_exist` refuses to create a new SQLite file (for commands that only read).
    Workers need `heartbeat`; readers and the control plane do not.
    """
    check_url(url)
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.is_file():
            raise UserError(f"no study database at {path} (from storage URL {url!r}); run `steer run SPEC` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path)
    kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period} if heartbeat else {}
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as exc:
        raise UserError(f"storage URL {url!r} needs a database driver that is not installed "
                        f"({exc.__cause__ or exc}); for PostgreSQL: pip install 'steer[postgres]'") from None
    except (OperationalError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserError(f"cannot open storage {url!r}: {reason}") from None


def _rdb_storage(url: str, kwargs: dict, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's storage; retried when another process is creating the same tables right now."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
        except (OperationalError, IntegrityError):  # "table exists", "UNIQUE ... alembic_version"
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine settings shared by Optuna's storage and steer's own tables."""
    if sqlite_path(url) is not None:
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    return {"pool_pre_ping": True}


def _enable_wal(path: Path) -> None:
    """WAL is a property of the database file: set it once, every later connection uses it."""
    try:
        with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: not a usable SQLite database ({exc})") from None


def default_storage_url() -> str:
    """`$STEER_STORAGE`, else the only `studies/*.db` under the current folder."""
    env = os.environ.get("STEER_STORAGE")
    if env:
        return env
    found = sorted(Path("studies").glob("*.db"))
    if len(found) == 1:
        return f"sqlite:///{found[0]}"
    if not found:
        raise UserError("no study database found under ./studies; pass --storage URL or run `steer run SPEC` first")
    names = ", ".join(str(p) for p in found)
    raise UserError(f"several study databases under ./studies ({names}); pick one with --storage sqlite:///PATH")


def resolve_study_name(storage: optuna.storages.BaseStorage, name: str | None) -> str:
    """`name` if the storage holds it; with no name, the storage's only study."""
    names = [s.study_name for s in storage.get_all_studies()]
    if name is not None:
        if name not in names:
            known = ", ".join(names) or "none"
            raise UserError(f"no study named {name!r} in this storage; studies there: {known}")
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise UserError("the storage holds no study yet; run `steer run SPEC` first")
    raise UserError(f"the storage holds several studies ({', '.join(names)}); pick one with --study NAME")


def load_study(storage_url: str | None, study_name: str | None) -> optuna.Study:
    """Load an existing study for reading or steering, resolving defaults as above."""
    storage = open_storage(storage_url or default_storage_url(), must_exist=True)
    return optuna.load_study(study_name=resolve_study_name(storage, study_name), storage=storage)
