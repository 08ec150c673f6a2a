"""steer's own tables, beside Optuna's in the study database.

Optuna's tables are never altered. Ours use their own `MetaData`, a `steer_`
prefix and a recorded schema version, and are created on first use through
SQLAlchemy, so SQLite and PostgreSQL both work. Trials are named by
(Optuna study id, trial number), the numbers users see.

All access goes through `Database.run`: it commits, rolls back on error, retries
the transient "database is locked" / dropped-connection errors, and turns any
other SQLAlchemy error into `ControlError`. Rows that several processes may
create at once (the target image, a pin, the schema version) are written with
`upsert`, one atomic statement, not "read, then insert if missing", which two
workers can both pass on PostgreSQL.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import (
    Boolean, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text, create_engine,
    event, select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    DBAPIError, IntegrityError, OperationalError, PendingRollbackError, ProgrammingError, SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

SCHEMA_VERSION = 1
T = TypeVar("T")

metadata = MetaData()

schema = Table(
    "steer_schema", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

commands = Table(
    "steer_commands", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, nullable=False),
    Column("trial_number", Integer, nullable=True),  # NULL: a study-level command
    Column("action", String(32), nullable=False),
    Column("args", Text, nullable=False),  # JSON object
    Column("request_id", String(128), nullable=True),
    Column("requested_by", String(128), nullable=False),
    Column("requested_at", Float, nullable=False),  # unix seconds
    Column("state", String(16), nullable=False),  # pending | applied | rejected | expired
    Column("applied_step", Integer, nullable=True),
    Column("resolved_at", Float, nullable=True),
    Column("reason", Text, nullable=True),
    Column("result", Text, nullable=True),  # JSON: the event (old -> new) once applied
    Index("ix_steer_commands_pending", "study_id", "trial_number", "state"),
    Index("ix_steer_commands_request", "study_id", "request_id"),
)

live = Table(
    "steer_live", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("trial_number", Integer, primary_key=True),
    Column("step", Integer, nullable=False),
    Column("wall_time", Float, nullable=False),
    Column("png", LargeBinary, nullable=True),  # latest prediction, <= preview_size px
    Column("running", Boolean, nullable=False),
)

metrics = Table(
    "steer_metrics", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("wall_time", Float, nullable=False),
    Column("loss", Float, nullable=True),
    Column("psnr", Float, nullable=True),
    Column("lr", Float, nullable=False),
    Column("weight_decay", Float, nullable=False),
    Column("optimizer", String(16), nullable=False),
    Column("loss_name", String(16), nullable=False),
    Index("ix_steer_metrics_trial", "study_id", "trial_number", "step"),
)

pins = Table(
    "steer_pins", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("param", String(32), primary_key=True),
    Column("value", Text, nullable=False),  # JSON scalar
    Column("pinned_by", String(128), nullable=False),
    Column("pinned_at", Float, nullable=False),
    Column("source_trial", Integer, nullable=True),
)

targets = Table(
    "steer_targets", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("png", LargeBinary, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
)


def upsert(s: Session, table: Table, values: dict[str, Any], *, replace: bool = True) -> None:
    """Insert a row; if its primary key exists, update it with `values` (or keep it: `replace=False`)."""
    dialect = s.get_bind().dialect.name
    keys = [c.name for c in table.primary_key]
    changes = {k: v for k, v in values.items() if k not in keys}
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(table).values(**values)
        stmt = stmt.on_duplicate_key_update(**changes) if replace else stmt.prefix_with("IGNORE")
    else:  # PostgreSQL and SQLite share ON CONFLICT
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(table).values(**values)
        stmt = (stmt.on_conflict_do_update(index_elements=keys, set_=changes) if replace and changes
                else stmt.on_conflict_do_nothing(index_elements=keys))
    s.execute(stmt)


class ControlError(RuntimeError):
    """The control-plane database could not be read or written."""


RETRY_SECONDS = 30  # how long transient errors are retried, here and in Optuna's storage calls (a server restart)


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
    """One engine and the one session helper for steer's tables in a study database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self._ensure_schema()

    @classmethod
    def from_url(cls, url: str) -> Database:
        from steer.storage import engine_kwargs

        engine = create_engine(url, **engine_kwargs(url))
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return cls(engine)

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

    def _ensure_schema(self) -> None:
        for attempt in range(3):  # several processes may create the tables at once
            try:
                metadata.create_all(self.engine, checkfirst=True)
                break
            except (OperationalError, IntegrityError, ProgrammingError):  # PostgreSQL: "duplicate key ... pg_type"
                if attempt == 2:
                    raise
                time.sleep(0.1)

        def record_version(s: Session) -> int:
            upsert(s, schema, {"id": 1, "version": SCHEMA_VERSION}, replace=False)
            return s.execute(select(schema.c.version)).scalar()

        version = self.run(record_version)
        if version > SCHEMA_VERSION:
            raise ControlError(f"the study database has steer schema version {version}; this steer "
                               f"knows {SCHEMA_VERSION}: upgrade steer")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
