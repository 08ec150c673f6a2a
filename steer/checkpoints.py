"""Checkpoints of running trials: a trial's whole training state, kept so it can be forked, undone or resumed.

A checkpoint is one file in the study's Optuna artifact store (the file-system
store beside the database by default; any `optuna.artifacts` store works, for
several machines one they all reach) and one row of `steer_checkpoints` that
names it. What is in the file is the steering object's `snapshot()`: the
settings it steers (optimizer and loss names) and the loop's own state
(`Trainer.state_dict()`: weights, optimizer state, batch RNG, step, the LR
set by hand), serialised with `torch.save` and read back with
`weights_only=True`, so a file cannot run code.

Kinds, and how long each is kept (`retain`, `release`):
  cadence  every `every` seconds of training; the newest `keep` of a running trial
  before   just before each applied intervention: undo goes back to it; kept while the trial runs
  fork     the parent's state a fork starts from; kept until the fork has finished
A finished trial's checkpoints go when it ends (with any file a killed worker
left without its row), except those that a trial still waiting or running
starts from (a fork, a retry of a crashed trial); a crashed trial's once its
retry has used them.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState
from sqlalchemy import and_, select

from steer import record
from steer.storage import tables as T

log = logging.getLogger("steer.checkpoints")

KINDS = ("cadence", "before", "fork")


class CheckpointError(Exception):
    """A checkpoint that cannot be read back (missing, corrupt); the message says which and why."""


@dataclass(frozen=True)
class Checkpoint:
    id: int
    trial: int
    step: int
    kind: str
    command: int | None
    artifact_id: str
    bytes: int
    created_at: float

    def describe(self) -> str:
        return f"checkpoint {self.id} of trial {self.trial} at step {self.step} ({self.kind})"


def to_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(blob: bytes, device: Any = "cpu") -> dict[str, Any]:
    """A state that `to_bytes` wrote, with its tensors on `device`; CheckpointError if it is not one."""
    import torch

    try:
        state = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a damaged file; all mean "corrupt"
        raise CheckpointError(f"not a readable checkpoint (the file is damaged, or not one steer wrote: "
                              f"{type(exc).__name__})") from None
    if not isinstance(state, dict) or "loop" not in state or "settings" not in state:
        raise CheckpointError("not a steer checkpoint (no loop state and settings in it)")
    return state


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(row.id, row.trial_number, row.step, row.kind, row.command_id, row.artifact_id, row.bytes,
                      row.created_at)


class Checkpoints:
    """The checkpoints of one study: write, read, list and remove them."""

    def __init__(self, control: Any, store: Any, folder: Path | None = None) -> None:
        self.control = control  # steer.control.Control: the study and its database
        self.store = store  # an Optuna artifact store
        self.folder = folder  # the file-system store's folder, when it is one (orphan files are swept there)

    @classmethod
    def of(cls, control: Any, store: Any = None) -> Checkpoints:
        """The study's checkpoints in `store`, by default the study's artifact folder (`steer.artifacts`,
        which `steer run` records), else the folder beside its database."""
        if store is not None:
            return cls(control, store)
        from steer.artifacts import artifact_dir, artifact_store

        recorded = control.study_user_attr(record.ARTIFACTS)
        path = artifact_dir(control.storage.url, control.study_name, Path(recorded) if recorded else None)
        return cls(control, artifact_store(path), path)

    # ---- writing and reading -------------------------------------------------------------- #
    def save(self, trial: int, step: int, kind: str, blob: bytes, command: int | None = None) -> Checkpoint:
        """Write `blob` (a `to_bytes` state) as a checkpoint of `trial`; OSError if the store cannot take it
        (a full disk): the caller decides whether the trial can go on without it."""
        if kind not in KINDS:
            raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
        artifact_id = f"steer-checkpoint-{self.control.study_id}-{trial}-{step}-{time.time_ns()}"
        try:
            self.store.write(artifact_id, io.BytesIO(blob))
        except OSError:
            self._remove_file(artifact_id)  # a partial file is no checkpoint
            raise
        now = time.time()
        row_id = self.control.db.run(lambda s: s.execute(T.checkpoints.insert().values(
            study_id=self.control.study_id, trial_number=trial, step=step, kind=kind, command_id=command,
            artifact_id=artifact_id, bytes=len(blob), created_at=now)).inserted_primary_key[0])
        return Checkpoint(row_id, trial, step, kind, command, artifact_id, len(blob), now)

    def read(self, checkpoint: Checkpoint) -> bytes:
        """The checkpoint's bytes; CheckpointError naming it if its file is gone."""
        try:
            with self.store.open_reader(checkpoint.artifact_id) as f:
                return f.read()
        except (ArtifactNotFound, OSError) as exc:
            raise CheckpointError(f"{checkpoint.describe()}: its file {checkpoint.artifact_id!r} cannot be read "
                                  f"({type(exc).__name__}: {exc})") from None

    def load(self, checkpoint: Checkpoint, device: Any = "cpu") -> dict[str, Any]:
        """The state in a checkpoint; CheckpointError naming it if it is missing or corrupt."""
        blob = self.read(checkpoint)  # names the checkpoint itself when its file is gone
        try:
            return from_bytes(blob, device)
        except CheckpointError as exc:
            raise CheckpointError(f"{checkpoint.describe()}: {exc}") from None

    # ---- listing -------------------------------------------------------------------------- #
    def get(self, checkpoint_id: int) -> Checkpoint | None:
        row = self.control.db.run(lambda s: s.execute(select(T.checkpoints).where(and_(
            T.checkpoints.c.study_id == self.control.study_id, T.checkpoints.c.id == checkpoint_id))).first())
        return _checkpoint(row) if row else None

    def of_trial(self, trial: int, kind: str | None = None) -> list[Checkpoint]:
        """A trial's checkpoints, oldest first."""
        q = select(T.checkpoints).where(and_(T.checkpoints.c.study_id == self.control.study_id,
                                             T.checkpoints.c.trial_number == trial))
        if kind is not None:
            q = q.where(T.checkpoints.c.kind == kind)
        return [_checkpoint(r) for r in self.control.db.run(lambda s: s.execute(q.order_by(T.checkpoints.c.id)).all())]

    def all(self) -> list[Checkpoint]:
        q = select(T.checkpoints).where(T.checkpoints.c.study_id == self.control.study_id)
        return [_checkpoint(r) for r in self.control.db.run(lambda s: s.execute(q.order_by(T.checkpoints.c.id)).all())]

    def before(self, trial: int, command: int) -> Checkpoint | None:
        """The checkpoint taken just before `command` was applied to `trial`."""
        found = [c for c in self.of_trial(trial, "before") if c.command == command]
        return found[-1] if found else None

    # ---- retention -------------------------------------------------------------------------- #
    def remove(self, checkpoints: list[Checkpoint]) -> int:
        """Remove checkpoints: their rows, then their files."""
        if not checkpoints:
            return 0
        ids = [c.id for c in checkpoints]
        self.control.db.run(lambda s: s.execute(T.checkpoints.delete().where(T.checkpoints.c.id.in_(ids))))
        for c in checkpoints:
            self._remove_file(c.artifact_id)
        return len(checkpoints)

    def _remove_file(self, artifact_id: str) -> None:
        try:
            self.store.remove(artifact_id)
        except Exception:  # noqa: BLE001 - gone already, or never written: nothing to remove
            pass

    def retain(self, trial: int, keep: int) -> int:
        """Keep a running trial's newest `keep` cadence checkpoints (and the others, which undo and forks
        still need); returns how many were removed."""
        cadence = self.of_trial(trial, "cadence")
        needed = self.needed()
        return self.remove([c for c in cadence[:max(0, len(cadence) - keep)] if c.id not in needed])

    def needed(self, besides: int | None = None, trials: list[Any] | None = None) -> set[int]:
        """The checkpoints that a waiting or running trial (other than `besides`, which is ending) starts
        from: a fork, a retry. `trials`: the study's trials, when read already."""
        if trials is None:
            trials = self.control.storage.get_all_trials(self.control.study_id, deepcopy=False,
                                                         states=(TrialState.WAITING, TrialState.RUNNING))
        return {(record.attrs(t).get(record.RESUME) or {}).get("checkpoint") for t in trials
                if t.number != besides and t.state in (TrialState.WAITING, TrialState.RUNNING)} - {None}

    def release(self, trial: int | None = None) -> int:
        """Remove what no one needs any more: `trial`'s checkpoints (it is ending), and those of every
        finished trial, except what a waiting or running trial starts from. Returns how many went."""
        trials = self.control.storage.get_all_trials(self.control.study_id, deepcopy=False)
        needed = self.needed(besides=trial, trials=trials)
        # A trial whose worker died is FAIL a moment before its retry is enqueued: its checkpoints go only
        # once a retry names it, or when `Control.retry` decides it is not retried (it releases them).
        retried = {t.user_attrs.get(record.RETRY_OF) for t in trials}
        finished = {t.number for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                    or (t.state == TrialState.FAIL and t.number in retried)}
        known = self.all()
        removed = self.remove([c for c in known if (c.trial == trial or c.trial in finished) and c.id not in needed])
        return removed + self._sweep_orphans(finished | {trial}, {c.artifact_id for c in known})

    def _files(self) -> dict[Path, int | None]:
        """The study's checkpoint files in a file-system store, with the trial each is of (its name says:
        "steer-checkpoint-STUDY-TRIAL-STEP-NS"); none for a store that cannot be listed."""
        if self.folder is None or not self.folder.is_dir():
            return {}
        prefix = f"steer-checkpoint-{self.control.study_id}-"
        heads = {f: f.name[len(prefix):].split("-", 1)[0] for f in self.folder.glob(prefix + "*")}
        return {f: int(head) if head.isdigit() else None for f, head in heads.items()}

    def _sweep_orphans(self, trials: set[int | None], named: set[str]) -> int:
        """Files of `trials` (which write no more) that no row names: a worker killed between writing a
        checkpoint's file and its row leaves one."""
        orphans = [f for f, trial in self._files().items() if f.name not in named and trial in trials]
        for f in orphans:
            f.unlink(missing_ok=True)
        return len(orphans)

    def delete_study(self) -> int:
        """Remove every checkpoint of the study (it is being deleted), orphan files too."""
        removed = self.remove(self.all())
        for f in self._files():
            f.unlink(missing_ok=True)
            removed += 1
        return removed


__all__ = ["KINDS", "Checkpoint", "CheckpointError", "Checkpoints", "from_bytes", "to_bytes"]
