"""Opening study storages: URL checks, defensive SQLite settings, finding the study.

SQLite is the default (no server needed), so it is configured for several
local processes: WAL journal (readers never block the writer), a long busy
timeout, and Optuna heartbeats so a killed worker's trial ends FAIL. A server
database (PostgreSQL, MySQL) gets a connect timeout, a liveness check before
each pooled connection is reused, and the same retries: a dropped connection
or a busy database is retried, not turned into a failed trial.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.storages._rdb.models import TrialModel
from optuna.trial import TrialState
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, ProgrammingError, SQLAlchemyError,
)

from steer.errors import UserError
from steer.tables import retry_delays, transient

log = logging.getLogger("steer.storage")

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 20  # a RUNNING trial silent this long is stale and gets marked FAIL
SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
CONNECT_TIMEOUT = 10  # seconds to reach a database server before giving up


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///` URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def display_url(url: str) -> str:
    """`url` as it may be printed: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def check_url(url: str) -> None:
    """Reject a malformed or unsupported storage URL with a one-line message."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UserError(
            f"bad storage URL {display_url(url)!r}: {exc}; expected e.g. sqlite:///studies/quick.db "
            "or postgresql+psycopg://user:pass@host/db"
        ) from None
    except ImportError as exc:
        raise UserError(f"storage URL {display_url(url)!r} needs a database driver that is not installed: "
                        f"{exc}") from None


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
            raise UserError(f"no study database at {path} (from storage URL {display_url(url)!r}); "
                            "run `steer run SPEC` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path)
    kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period} if heartbeat else {}
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as exc:
        raise UserError(f"storage URL {display_url(url)!r} needs a database driver that is not installed "
                        f"({exc.__cause__ or exc}); for PostgreSQL: pip install 'steer[postgres]'") from None
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        hint = "; is the database server running and reachable from here?" if "refused" in reason else ""
        raise UserError(f"cannot open storage {display_url(url)!r}: {reason}{hint}") from None


def _rdb_storage(url: str, kwargs: dict, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's storage; retried when another process is creating the same tables right now."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RetryingRDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
        except (OperationalError, IntegrityError, ProgrammingError) as exc:
            # "table exists", "UNIQUE ... alembic_version", PostgreSQL's "duplicate key ... pg_type";
            # a server that cannot be reached is not worth waiting for.
            if attempt == attempts - 1 or _unreachable(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine settings shared by Optuna's storage and steer's own tables."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    if backend in ("postgresql", "mysql", "mariadb"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    return {"pool_pre_ping": True}


def _unreachable(exc: SQLAlchemyError) -> bool:
    return isinstance(exc, OperationalError) and "connection" in str(exc.orig).splitlines()[0].lower()


def _retried(name: str, method=None):
    """Optuna's storage method `name` (or `method`), retried when it fails on a transient database error."""
    method = method or getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        delays = retry_delays(0.05)
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.StorageInternalError as exc:
                pause = next(delays, None) if transient(exc.__cause__) else None
                if pause is None:
                    raise
                log.warning("retrying %s after a database error: %s", name,
                            str(getattr(exc.__cause__, "orig", exc.__cause__)).strip().splitlines()[0])
                time.sleep(pause)

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose idempotent calls survive a dropped connection or a busy database.

    Optuna turns every database error into `StorageInternalError`; one that is
    transient (the server closed the connection, SQLite stayed locked, a
    deadlock) re-runs the call after a short backoff. Reads, attribute writes,
    intermediate values and heartbeats give the same result when run twice;
    trial creation already retries in Optuna itself. A trial's final state
    is retried too: if the first attempt did commit, the retry finds the
    trial finished in that state and counts as success.

    A new trial records its first heartbeat at once, not when Optuna's
    heartbeat thread starts after sampling: a worker killed in between
    would otherwise leave a RUNNING trial with no heartbeat, which Optuna
    never marks stale.

    Taking an enqueued trial (WAITING -> RUNNING) is one conditional UPDATE.
    Optuna reads the state and then writes it, relying on SELECT ... FOR
    UPDATE, which SQLite ignores; Python's sqlite3 also runs that read outside
    the write's transaction, so two workers could both take the same enqueued
    trial (the baseline, a promoted trial) and train it twice (Optuna issues
    #4002, #4621; seen here with 4 workers on SQLite).
    """

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        try:
            if state == TrialState.RUNNING and values is None:
                done = _retried_take(self, trial_id)
            else:
                done = _retried_state_values(self, trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            if state.is_finished() and self.get_trial(trial_id).state == state:
                return True  # an earlier attempt committed before its connection dropped
            raise
        if done and state == TrialState.RUNNING and self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)  # an enqueued trial, just taken by this worker
        return done

    def _take_waiting_trial(self, trial_id: int) -> bool:
        """WAITING -> RUNNING if it is still WAITING, atomically; False if another worker took it."""
        trials = TrialModel.__table__
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(update(trials).where(
                    trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING,
                ).values(state=TrialState.RUNNING, datetime_start=datetime.now())).rowcount
        except SQLAlchemyError as exc:  # as Optuna reports it, so that the retry below applies
            raise optuna.exceptions.StorageInternalError(f"cannot take trial {trial_id}: {exc}") from exc
        if taken:
            return True
        self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)  # finished: Optuna skips it
        return False

    def _create_new_trial(self, study_id: int, template_trial=None):  # Optuna's cache calls this one
        trial = super()._create_new_trial(study_id, template_trial)
        if self.heartbeat_interval is not None and trial.state == TrialState.RUNNING:
            self.record_heartbeat(trial._trial_id)
        return trial


# Calls that give the same result when run twice (the underscored ones are what Optuna's trial cache calls).
IDEMPOTENT_CALLS = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "get_all_studies", "get_trial_id_from_study_id_trial_number", "get_trial",
    "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id", "get_trial_param",
    "get_trial_user_attrs", "get_trial_system_attrs", "set_study_user_attr", "set_study_system_attr",
    "set_trial_user_attr", "set_trial_system_attr", "_set_trial_param", "set_trial_intermediate_value",
    "record_heartbeat", "_get_stale_trial_ids",
)
for _name in IDEMPOTENT_CALLS:
    setattr(RetryingRDBStorage, _name, _retried(_name))
_retried_state_values = _retried("set_trial_state_values")
_retried_take = _retried("_take_waiting_trial", RetryingRDBStorage._take_waiting_trial)


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
