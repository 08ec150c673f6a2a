"""Shared fixtures: tiny specs written to real files, real storages.

`storage_url` runs a test once on a SQLite file and once on a fresh database
of a real PostgreSQL server (Optuna's `StorageSupplier` idea). The server is
the one `$STEER_TEST_PG_URL` names (`eval "$(tests/pg.sh start)"` starts one);
without it the PostgreSQL runs skip and say why, unless
`$STEER_TEST_PG_REQUIRED` is set (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

# Browser tests drive Debian's Chromium (`make test` installs it where it can). On a developer's
# machine without it they skip; in CI (CI=true) they must run, so they fail instead.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
requires_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium); `make test` installs it when run as root",
)

@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests of one module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


PG_URL_ENV = "STEER_TEST_PG_URL"
PG_REQUIRED_ENV = "STEER_TEST_PG_REQUIRED"

TINY_SPEC = """
[study]
name = "tiny"
trials = 3
seed = 1

[target]
image = "card"
size = 16

[trial]
steps = 30
report_every = 10
backend = "torch"

[pruner]
type = "none"

[space]
lr = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
activation = {{ type = "categorical", choices = ["relu", "sine"] }}
w0 = {{ type = "float", low = 10.0, high = 30.0 }}
{extra}
"""


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec file; `write_spec(text)` or `write_spec(extra=...)` for the tiny spec plus lines."""

    def write(text: str | None = None, *, extra: str = "", name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(text if text is not None else TINY_SPEC.format(extra=extra))
        return path

    return write


@pytest.fixture(autouse=True)
def _in_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder: what a study writes to ./ (a PostgreSQL study's
    ./STUDY-artifacts) lands there, never in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_spec(write_spec) -> Path:
    return write_spec()


def steer_in_thread(folder: Path, name: str, spec_text: str, n_trials: int, url: str | None = None):
    """A real study of `spec_text` in `folder/NAME.db` (or at `url`), optimized in a thread, once its trial 0 runs.

    Returns (spec, url, study, worker thread, Control on the study).
    """
    import threading
    import time

    import steer
    from steer.control import Control

    (folder / f"{name}.toml").write_text(spec_text)
    spec = steer.load_spec(folder / f"{name}.toml")
    url = url or f"sqlite:///{folder / f'{name}.db'}"
    study = steer.create_study(spec, url)
    worker = threading.Thread(target=study.optimize, args=(steer.objective(spec),), kwargs={"n_trials": n_trials})
    worker.start()
    control = Control.open(study)
    deadline = time.monotonic() + 60
    while (live := control.live(0)) is None or not live.running:
        assert time.monotonic() < deadline, "trial 0 did not start"
        time.sleep(0.01)
    return spec, url, study, worker, control


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `steer` CLI in a subprocess (as a user would)."""
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a user's shell
    # A replay runs with the torch threads its trial recorded (the same bits need the same split); on a
    # busy machine, OpenMP threads that spin while waiting for a descheduled one made a 9 s replay take
    # over 300 s. Passive waiting changes no number, only how idle threads wait.
    full_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "steer", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@functools.lru_cache(maxsize=1)
def pg_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when the server answers."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        return (f"no PostgreSQL server for the tests: set {PG_URL_ENV}=postgresql+psycopg://USER:PASS@HOST:PORT/DB "
                '(`eval "$(tests/pg.sh start)"` starts a throwaway one)')
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install 'psycopg[binary]'"
    try:
        from steer.bench.harness import libpq_url

        psycopg.connect(libpq_url(url), connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"the PostgreSQL server of {PG_URL_ENV} is not reachable: {str(exc).strip().splitlines()[0]}"
    return None


def require_pg() -> str:
    """The server's URL; skips the test (fails it under $STEER_TEST_PG_REQUIRED) when there is none."""
    reason = pg_unavailable()
    if reason is not None:
        if os.environ.get(PG_REQUIRED_ENV):
            pytest.fail(f"{PG_REQUIRED_ENV} is set but {reason}")
        pytest.skip(reason)
    return os.environ[PG_URL_ENV]


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards: tests never see each other's studies."""
    from steer.bench.harness import fresh_pg_database  # imported here: the kernel tests need only torch

    with fresh_pg_database(require_pg(), prefix="steer_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path: Path) -> Iterator[str]:
    """A storage URL for an empty study database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
    else:
        with pg_database() as url:
            yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database, for tests of what only a server does (dropped connections)."""
    with pg_database() as url:
        yield url
