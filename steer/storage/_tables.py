"""steer's own tables, beside Optuna's in the study database.

Optuna's tables are never altered. Ours use their own `MetaData`, a `steer_`
prefix and a recorded schema version, and are created on first use through
SQLAlchemy, so SQLite and PostgreSQL both work. The definitions below are in
users' databases: change a table only with a new `SCHEMA_VERSION` and a way
to upgrade. Trials are named by (Optuna study id, trial number), the numbers
users see.

All access goes through `Database.run` (in `_engine`). Rows that several
processes may create at once (the target image, a pin, the schema version)
are written with `upsert`, one atomic statement, not "read, then insert if
missing", which two workers can both pass on PostgreSQL.

Callers write `from steer.storage import tables as T` and then `T.commands`.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Boolean, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from steer.storage._engine import ControlError, Database

SCHEMA_VERSION = 4
# What each version added. A database of an older version is brought up to date in place when it is
# opened: `create_all` adds the missing tables, then the recorded version moves up. Versions that
# change an existing table need a step here too (none yet).
#   1  steer_schema, steer_commands, steer_live, steer_metrics, steer_pins, steer_targets
#   2  steer_watch: the trials a person has open in the app (not pruned automatically while watched)
#   3  steer_hints, steer_space: a person's hints and search-space edits for later trials
#   4  steer_checkpoints: running trials' checkpoints (files in the study's artifact store)

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

hints = Table(  # steer.search_space: a soft pin for the next `trials` trials from `first_trial`
    "steer_hints", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("param", String(32), primary_key=True),
    Column("value", Text, nullable=False),  # JSON scalar
    Column("strength", Float, nullable=False),
    Column("trials", Integer, nullable=False),
    Column("first_trial", Integer, nullable=False),
    Column("hinted_by", String(128), nullable=False),
    Column("hinted_at", Float, nullable=False),
)

space = Table(  # steer.search_space: one dimension of the spec's space as later trials draw it
    "steer_space", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("param", String(32), primary_key=True),
    Column("dimension", Text, nullable=False),  # JSON, steer.search_space.to_dict
    Column("edited_by", String(128), nullable=False),
    Column("edited_at", Float, nullable=False),
)

checkpoints = Table(  # steer.checkpoints: a trial's full training state, a file in Optuna's artifact store
    "steer_checkpoints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("step", Integer, nullable=False),  # the steps it had trained when taken
    Column("kind", String(16), nullable=False),  # cadence | before (an intervention) | fork
    Column("command_id", Integer, nullable=True),  # before: the command applied just after it; fork: the fork's
    Column("artifact_id", String(64), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_steer_checkpoints_trial", "study_id", "trial_number"),
)

watch = Table(
    "steer_watch", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("trial_number", Integer, primary_key=True),
    Column("until", Float, nullable=False),  # unix seconds: watched until then unless the page renews it
)

targets = Table(
    "steer_targets", metadata,
    Column("study_id", Integer, primary_key=True),
    Column("png", LargeBinary, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
)


# Every table with rows of one study (all but steer_schema): deleting a study deletes its rows in each.
STUDY_TABLES = (commands, live, metrics, pins, hints, space, watch, targets, checkpoints)


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


def ensure_schema(db: Database) -> None:
    """Create steer's tables where missing and record the schema version; refuse a newer schema."""
    for attempt in range(3):  # several processes may create the tables at once
        try:
            metadata.create_all(db.engine, checkfirst=True)
            break
        except (OperationalError, IntegrityError, ProgrammingError):  # PostgreSQL: "duplicate key ... pg_type"
            if attempt == 2:
                raise
            time.sleep(0.1)

    def record_version(s: Session) -> int:
        upsert(s, schema, {"id": 1, "version": SCHEMA_VERSION}, replace=False)
        found = s.execute(select(schema.c.version)).scalar()
        if found < SCHEMA_VERSION:  # an older database: its new tables exist now (create_all above)
            s.execute(schema.update().where(schema.c.id == 1).values(version=SCHEMA_VERSION))
        return found

    version = db.run(record_version)
    if version > SCHEMA_VERSION:
        raise ControlError(f"the study database has steer schema version {version}; this steer "
                           f"knows {SCHEMA_VERSION}: upgrade steer")
