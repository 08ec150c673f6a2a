"""Study storages: opening them, finding the study, and steer's tables beside Optuna's.

This is the public face; the modules behind it are private:

- `_engine`: engine settings, SQLite pragmas, retries and `Database`, the one
  session helper (knows neither Optuna nor steer's tables).
- `_tables`: steer's own tables, `upsert` and the schema version (exported
  here as `tables`: `from steer.storage import tables as T; T.commands`).
- `_optuna`: every touch of Optuna's private internals, checked at import.

SQLite is the default (no server needed), so it is configured for several
local processes: WAL journal (readers never block the writer), a long busy
timeout, and Optuna heartbeats so a killed worker's trial ends FAIL. A server
database (PostgreSQL, MySQL) gets a connect timeout, a liveness check before
each pooled connection is reused, and the same retries: a dropped connection
or a busy database is retried, not turned into a failed trial.

steer's tables share the Optuna storage's engine (`shared_database`): one
connection pool per storage and process. Each extra pool holds its own server
connections, and a worker that opened new pools per trial piled them up
faster than they were collected.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, ProgrammingError, SQLAlchemyError,
)

from steer.errors import UserError
from steer.storage import _tables as tables
from steer.storage._engine import ControlError, Database, enable_wal, engine_kwargs, prepare_engine
from steer.storage._optuna import (
    RetryingRDBStorage, check_optuna_internals, enqueue_trial, rdb_storage, reported_values, save_trial_note,
    set_trial_param, set_trial_system_attr, study_id, study_view, trial_state, trial_system_attrs,
)
from steer.storage._tables import SCHEMA_VERSION, upsert

__all__ = [
    "GRACE_PERIOD", "HEARTBEAT_INTERVAL", "SCHEMA_VERSION", "ControlError", "Database", "check_optuna_internals",
    "check_url", "default_storage_url", "display_url", "enqueue_trial", "load_study", "open_storage", "rdb_storage",
    "reported_values", "resolve_study_name", "save_trial_note", "set_trial_param",
    "set_trial_system_attr", "shared_database", "sqlite_path", "storage_url", "study_id", "study_view", "tables",
    "trial_state", "trial_system_attrs", "upsert",
]

HEARTBEAT_INTERVAL = 5  # seconds between a running trial's heartbeats
GRACE_PERIOD = 20  # a RUNNING trial silent this long is stale and gets marked FAIL


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
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Each connection to an in-memory SQLite database gets its own, empty one: steer's readers,
        # the app and the workers would each see no study (found by hand: `steer show --storage
        # sqlite:///` retried "no such table" without end).
        raise UserError(f"storage URL {display_url(url)!r} is an in-memory database, which no other "
                        "connection can see; name a file, e.g. sqlite:///studies/quick.db")


# Optuna 4.9 renamed RDBStorage's failed_trial_callback (the old name warns); optuna>=4.0 is allowed.
_STALE_CALLBACK = ("heartbeat_stale_trial_callback"
                   if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                   else "failed_trial_callback")


def open_storage(url: str, *, must_exist: bool = False, heartbeat: bool = True,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
                 failed_trial_callback: Any = None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for `url`, with SQLite in WAL mode and heartbeats on.

    `must_exist` refuses to create a new SQLite file (for commands that only read).
    Workers need `heartbeat`; readers and the control plane do not. `failed_trial_callback`:
    Optuna's, called for a trial whose heartbeat went stale (`steer run` retries it from a checkpoint).
    """
    check_url(url)
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.is_file():
            raise UserError(f"no study database at {path} (from storage URL {display_url(url)!r}); "
                            "run `steer run SPEC` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        enable_wal(path)
    kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period} if heartbeat else {}
    if heartbeat and failed_trial_callback is not None:
        kwargs[_STALE_CALLBACK] = failed_trial_callback
    try:
        storage = _rdb_storage(url, kwargs)
    except ImportError as exc:
        raise UserError(f"storage URL {display_url(url)!r} needs a database driver that is not installed "
                        f"({exc.__cause__ or exc}); for PostgreSQL: pip install 'steer[postgres]'") from None
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        hint = "; is the database server running and reachable from here?" if "refused" in reason else ""
        raise UserError(f"cannot open storage {display_url(url)!r}: {reason}{hint}") from None
    prepare_engine(storage.engine)  # SQLite pragmas for Optuna's connections and steer's alike
    return storage


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


def _unreachable(exc: SQLAlchemyError) -> bool:
    return isinstance(exc, OperationalError) and "connection" in str(exc.orig).splitlines()[0].lower()


_SHARED: weakref.WeakKeyDictionary[optuna.storages.RDBStorage, Database] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared_database(storage: optuna.storages.RDBStorage) -> Database:
    """steer's tables on `storage`'s own engine (created on first use): one per storage object and process.

    Sharing the engine means sharing its connection pool, so a process holds
    one pool per storage, not one for Optuna and another for steer.
    """
    with _SHARED_LOCK:
        db = _SHARED.get(storage)
        if db is None:
            prepare_engine(storage.engine)  # a storage steer did not open (or one unpickled) gets the pragmas too
            db = Database(storage.engine)
            tables.ensure_schema(db)
            _SHARED[storage] = db
        return db


def storage_url(study: optuna.Study) -> str | None:
    """The database URL behind an Optuna study, or None when it is not an RDB storage (in-memory)."""
    storage = rdb_storage(study)
    return storage.url if storage is not None else None


def default_storage_url() -> str:
    """`$STEER_STORAGE`, else the only study database (`*.db`) in ./studies or in the current folder
    (`steer run SPEC` puts it beside the spec)."""
    env = os.environ.get("STEER_STORAGE")
    if env:
        return env
    found = sorted(Path("studies").glob("*.db")) + sorted(Path(".").glob("*.db"))
    if len(found) == 1:
        return f"sqlite:///{found[0]}"
    if not found:
        raise UserError("no study database (*.db) found in ./studies or here; pass --storage URL or run "
                        "`steer run SPEC` first")
    names = ", ".join(str(p) for p in found)
    raise UserError(f"several study databases ({names}); pick one with --storage sqlite:///PATH")


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
