"""How steer talks to a study database: engine settings, SQLite pragmas, retries, the session helper.

Nothing here knows Optuna or steer's tables. It holds what both need:

- `engine_kwargs`: the settings an engine is created with. SQLite gets a long
  busy timeout (a writer waits for the lock instead of failing), a server
  database a connect timeout and a liveness check before a pooled connection
  is reused (a restarted server's dead connections are replaced, not used).
- `prepare_engine`: per-connection SQLite pragmas (WAL, `synchronous=NORMAL`,
  the busy timeout), attached to an engine once. `enable_wal` sets WAL on the
  file before the first engine opens it, since WAL is a property of the file.
- `retry_delays` and `transient`: the one backoff schedule and the one
  definition of "worth retrying", shared by `Database.run` and the retried
  Optuna storage calls in `_optuna`.
- `Database`: the one session helper. Every read and write of steer's tables
  goes through `Database.run`, which commits, rolls back on error, retries
  transient errors and turns any other SQLAlchemy error into `ControlError`.
"""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from steer.errors import UserError

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
CONNECT_TIMEOUT = 10  # seconds to reach a database server before giving up
RETRY_SECONDS = 30  # how long transient errors are retried, here and in Optuna's storage calls (a server restart)


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine settings for a study database (Optuna's storage engine, which steer's tables share)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    if backend in ("postgresql", "mysql", "mariadb"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    return {"pool_pre_ping": True}


def enable_wal(path: Path) -> None:
    """WAL is a property of the database file: set it once, every later connection uses it.

    Two processes that open a new database at once (`steer run --workers 2`, or a worker and the app)
    both switch it: each takes a shared lock and asks for an exclusive one, and SQLite answers one of
    them "database is locked" at once, without waiting (a deadlock otherwise). That one tries again
    until the other is done (3 threads at once on a new file: 27 of 200 failed before this).
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise UserError(f"{path}: not a usable SQLite database ({exc})") from None
            time.sleep(0.05)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path}: not a usable SQLite database ({exc})") from None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")  # also for an engine steer did not create
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode; a commit no longer waits for fsync
    cur.close()


def prepare_engine(engine: Engine) -> None:
    """Run the SQLite pragmas on every connection of `engine` (a no-op for other databases and the second time).

    Connections the engine opened before (Optuna creates its tables while its
    storage is constructed) are closed, so the pool only hands out prepared ones.
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "connect", _sqlite_pragmas):
        return
    event.listen(engine, "connect", _sqlite_pragmas)
    engine.dispose()  # checked-out connections stay valid and are dropped when returned


class ControlError(RuntimeError):
    """The control-plane database could not be read or written."""


def retry_delays(first: float) -> Iterator[float]:
    """How long to sleep before each retry of a transient error: doubling from `first`
    up to 1 s, with jitter, until `RETRY_SECONDS` have passed since this call (made
    before the first attempt, so a slow first attempt counts against the limit)."""
    deadline = time.monotonic() + RETRY_SECONDS

    def delays() -> Iterator[float]:
        delay = first
        while time.monotonic() < deadline:
            yield delay * (1 + random.random())
            delay = min(delay * 2, 1.0)

    return delays()


def transient(exc: BaseException | None) -> bool:
    """A database error worth retrying: "database is locked", a dropped connection, a deadlock."""
    if isinstance(exc, OperationalError):
        return True  # "database is locked", a dropped server connection
    if isinstance(exc, PendingRollbackError):  # a statement before it in the transaction lost its connection
        return transient(exc.__context__)
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Database:
    """The one session helper for steer's tables, on an engine it does not own (the Optuna storage's)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    def run(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in one transaction: commit on success, roll back on error.

        Transient errors ("database is locked", a dropped connection) re-run
        `fn` after a short backoff for up to `RETRY_SECONDS`, so `fn` must
        have no side effects outside the database. Any other database error
        becomes `ControlError`.
        """
        delays = retry_delays(0.02)
        while True:
            with self._sessions() as sess:
                try:
                    result = fn(sess)
                    sess.commit()
                    return result
                except SQLAlchemyError as exc:
                    sess.rollback()
                    pause = next(delays, None) if transient(exc) else None
                    if pause is not None:
                        time.sleep(pause)
                        continue
                    first_line = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                    raise ControlError(f"control-plane database error: {type(exc).__name__}: {first_line}") from exc
