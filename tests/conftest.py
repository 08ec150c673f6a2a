"""Shared fixtures: tiny specs written to real files, real SQLite storages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture
def tiny_spec(write_spec) -> Path:
    return write_spec()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `steer` CLI in a subprocess (as a user would)."""
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a user's shell
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "steer", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
