"""What the benchmarks share: their specs, fresh storages, `steer` processes, error counts.

Every benchmark drives real `steer run` processes, as a user would, so the helpers here
start them, wait for their first trial, give each run a storage of its own and count
the errors the processes print. The specs are package data (`steer/bench/specs/*.toml`),
read with importlib.resources so the benchmarks run from an installed wheel too; a
benchmark changes values on the parsed tables and writes its copy with a TOML writer.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import tomli_w

if TYPE_CHECKING:
    from steer.control import Control

SPEC_NAMES = ("steering", "quick")  # the files under steer/bench/specs/, without .toml
# A line of a process's stderr with one of these counts as an error.
ERROR_MARKS = ("Traceback", "OperationalError", "StorageInternalError", "ControlError", "database is locked")


# ---- specs ------------------------------------------------------------------ #

def packaged_spec(name: str, **changes: dict[str, Any]) -> dict[str, Any]:
    """The parsed spec `steer/bench/specs/NAME.toml`, with `changes` merged into its tables.

    `packaged_spec("steering", trial={"steps": 400})` keeps the other keys of `[trial]`.
    Each call returns a fresh document, so a caller may change it further.
    """
    if name not in SPEC_NAMES:
        raise ValueError(f"no packaged spec {name!r}; there are: {', '.join(SPEC_NAMES)}")
    text = (resources.files("steer.bench") / "specs" / f"{name}.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for table, values in changes.items():
        data.setdefault(table, {}).update(values)
    return data


def write_spec(data: dict[str, Any], path: Path) -> Path:
    """Write a spec document as TOML to `path` (the study's SQLite file lands beside it)."""
    with path.open("wb") as f:
        tomli_w.dump(data, f)
    return path


# ---- storages --------------------------------------------------------------- #

def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it (no `+driver`), password included."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_pg_database(base_url: str, prefix: str = "steer_bench") -> Iterator[str]:
    """A new, empty database on the server of `base_url` (its user needs CREATEDB), dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
            for attempt in range(100):
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except psycopg.errors.InsufficientPrivilege:
                    # FORCE ends the database's connections, but not an autovacuum worker (a superuser's
                    # process) that happens to be on it; it ends within moments (seen under two test processes)
                    if attempt == 99:
                        raise
                    time.sleep(0.1)


@contextlib.contextmanager
def fresh_storage(kind: str, folder: Path, pg_url: str | None) -> Iterator[str]:
    """The URL of an empty storage for one run: a new SQLite file in `folder`, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    else:
        if not pg_url:
            raise SystemExit("PostgreSQL runs need --pg-url or $STEER_TEST_PG_URL")
        with fresh_pg_database(pg_url) as url:
            yield url


# ---- processes -------------------------------------------------------------- #

def steer_process(*args: str, cwd: Path, threads: int | None = None, **popen: Any) -> subprocess.Popen:
    """`steer ARGS` in a subprocess, run in `cwd` (a PostgreSQL study's artifacts go to ./STUDY-artifacts).

    `threads` sets OMP_NUM_THREADS; without it the process picks its own (as `--workers` does).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "steer", *args], env=env, text=True, cwd=cwd, **popen)


def start_worker(spec: Path, *storage: str) -> subprocess.Popen:
    """One `steer run SPEC` worker on one torch thread, in the spec's folder, its stderr on a pipe.

    `storage` is `"--storage", URL`, or nothing for the SQLite file beside the spec.
    """
    return steer_process("run", str(spec), *storage, cwd=spec.parent, threads=1,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def first_trial_control(url: str, study: str, proc: subprocess.Popen, timeout: float = 60.0,
                        log: Path | None = None) -> Control:
    """A `Control` on `study` once its trial 0 runs; an error (with the worker's stderr) when
    `proc` exits first or `timeout` passes. `log`: where the worker's stderr goes, if not a pipe."""
    from steer.control import Control
    from steer.errors import UserError

    def stderr() -> str:
        if log is not None:
            return log.read_text()
        return proc.stderr.read() if proc.stderr and proc.poll() is not None else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited before trial 0 started: {stderr()}")
        with contextlib.suppress(UserError):  # the study does not exist yet
            control = Control.open(url, study)
            if control.live(0) is not None:
                return control
        time.sleep(0.1)
    raise RuntimeError(f"the worker did not start trial 0 within {timeout:.0f} s: {stderr()}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- figures ---------------------------------------------------------------- #

def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank: one of the measured values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def count_errors(texts: list[str]) -> int:
    """How many error marks (ERROR_MARKS) the processes' outputs `texts` hold."""
    return sum(line.count(mark) for text in texts for line in text.splitlines() for mark in ERROR_MARKS)


def error_lines(texts: list[str], most: int = 5) -> list[str]:
    """The first lines that `count_errors` counts, to say what went wrong."""
    return [line for text in texts for line in text.splitlines() if any(m in line for m in ERROR_MARKS)][:most]
