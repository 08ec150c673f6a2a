"""Old studies keep working: a study database from each steer schema version opens, continues and is steered.

`fixtures/schema-v1.db` was made by steer's main of 2026-11-25 (schema 1; schema 2 added
`steer_watch`, schema 3 `steer_hints` and `steer_space`, schema 4 `steer_checkpoints`, which
opening it creates) from
`fixtures/schema-v1.toml`: trial 0 steered (set_lr at step 2460, then its
loss pinned and the trial promoted after it finished), trials 1 and 2 plain,
trial 3 the promoted run, still WAITING, and two rejected commands.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import run_cli
from steer import record
from steer.control import Control
from steer.storage import SCHEMA_VERSION

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def copy_fixture(folder: Path, version: int) -> tuple[Path, str]:
    """The schema-N fixture study copied into `folder` (opening it migrates it): (folder, its URL)."""
    shutil.copy(FIXTURES / f"schema-v{version}.toml", folder / "fixture.toml")
    shutil.copy(FIXTURES / f"schema-v{version}.db", folder / "fixture.db")
    return folder, f"sqlite:///{folder / 'fixture.db'}"


@pytest.fixture
def v1(tmp_path):
    return copy_fixture(tmp_path, 1)


def test_v1_reads_as_it_was_recorded(v1):
    folder, url = v1
    control = Control.open(url)
    assert SCHEMA_VERSION == 4  # a new version needs a migration and a fixture of its own
    with sqlite3.connect(folder / "fixture.db") as db:  # migrated in place when opened
        assert db.execute("SELECT version FROM steer_schema").fetchall() == [(4,)]
        assert db.execute("SELECT count(*) FROM steer_watch").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM steer_hints").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM steer_space").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM steer_checkpoints").fetchone() == (0,)
    assert [(c.action, c.state) for c in control.commands()] == [
        ("set_lr", "applied"), ("set_loss", "rejected"), ("pin", "applied"), ("set_lr", "rejected"),
        ("promote", "applied")]
    assert control.pin_values() == {"loss": "mse"}
    study = control.study()
    rec = record.read(study.trials[0])
    assert rec.steered and rec.interventions[0]["new"] == 0.003 and rec.effective["lr"] == 0.003
    assert record.read(study.trials[3]).promoted_from == 0 and study.trials[3].state.name == "WAITING"
    shown = json.loads(run_cli("show", "--storage", url, "--json").stdout)
    assert [r["steered"] for r in shown] == [True, False, False, False]
    replay = run_cli("replay", "--trial", "0", "--storage", url, "--json")
    assert replay.returncode == 0 and json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr


def test_v1_continues_and_is_steered(v1):
    folder, url = v1
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "steer", "run", "fixture.toml", "--storage", url,
                             "--trials", "4", "--steps", "10000000"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        control = Control.open(url)
        deadline = time.monotonic() + 60
        while (live := control.live(3)) is None or not live.running:  # the promoted trial, waiting since v1
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the promoted trial did not start"
            time.sleep(0.05)
        cmd = control.wait(control.request("set_lr", trial=3, value=1e-3, by="tester").id)
        assert cmd.state == "applied", cmd.describe()
        cmd = control.wait(control.request("prune", trial=3, by="tester").id)
        assert cmd.state == "applied", cmd.describe()
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    trial = optuna.load_study(study_name="fixture", storage=url).trials[3]
    rec = record.read(trial)
    assert trial.state.name == "PRUNED" and rec.promoted_from == 0
    assert [e["action"] for e in rec.interventions] == ["set_lr", "prune"]
    assert rec.started_with["loss"] == "mse"  # the v1 pin, honoured


@pytest.fixture
def v2(tmp_path):
    """`fixtures/schema-v2.db`, made by this round's code: trial 0 paused at step 45 (its LR set while
    paused), resumed, kept; the study held after it and released; trials 1 and 2 plain."""
    return copy_fixture(tmp_path, 2)


def test_v2_reads_replays_and_continues(v2):
    folder, url = v2
    control = Control.open(url)
    assert [(c.action, c.state, c.requested_by) for c in control.commands()] == [
        ("pause", "applied", "alice"), ("set_lr", "applied", "alice"), ("resume", "applied", "alice"),
        ("keep", "applied", "bob"), ("hold", "applied", "bob"), ("release", "applied", "bob")]
    assert control.held() is None
    rec = record.read(control.study().trials[0])
    assert rec.steered and rec.kept and rec.paused is None and rec.paused_seconds > 0
    replay = run_cli("replay", "--trial", "0", "--storage", url, "--json")
    assert replay.returncode == 0 and json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr
    more = run_cli("run", "fixture.toml", "--storage", url, "--trials", "4", "--steps", "60", cwd=folder)
    assert more.returncode == 0, more.stderr
    assert [t.state.name for t in optuna.load_study(study_name="fixture", storage=url).trials][-1] == "COMPLETE"


@pytest.fixture
def v3(tmp_path):
    """`fixtures/schema-v3.db`, made by this round's code from `fixtures/schema-v3.toml`: find-lr applied
    to trial 0 while it ran (by alice), then a hint on lr (strength 1, 2 trials, by alice), the
    optimizer narrowed to sgd and lr to [0.0015, 0.005] (by bob), a rejected hint (lr 5, by bob);
    trials 1 and 2 drawn under them, both hinted."""
    return copy_fixture(tmp_path, 3)


def test_v2_gains_hints_and_space_edits(v2):
    _, url = v2
    assert run_cli("ctl", "hint", "lr", "2e-3", "--storage", url).returncode == 0
    assert run_cli("ctl", "space", "lr", "--low", "2e-3", "--high", "4e-3", "--storage", url).returncode == 0
    control = Control.open(url)
    assert control.hints()["lr"].value == 2e-3 and control.hints()["lr"].first_trial == 3
    assert control.space()["lr"].low == 2e-3


def test_v3_reads_replays_and_continues(v3):
    folder, url = v3
    control = Control.open(url)
    assert [(c.action, c.state, c.requested_by) for c in control.commands()] == [
        ("find_lr", "applied", "alice"), ("hint", "applied", "alice"), ("space", "applied", "bob"),
        ("space", "applied", "bob"), ("hint", "rejected", "bob")]
    assert control.hints()["lr"].describe() == "lr near 0.002, strength 1, trials 1-2"
    assert {n: e.dimension for n, e in control.space_edits().items()} == {
        "optimizer": {"kind": "categorical", "choices": ["sgd"]},
        "lr": {"kind": "float", "low": 0.0015, "high": 0.005, "log": True, "step": None}}
    study = control.study()
    assert [bool(record.read(t).hinted) for t in study.trials] == [False, True, True]
    replay = run_cli("replay", "--trial", "0", "--storage", url, "--json")
    assert replay.returncode == 0 and json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr
    more = run_cli("run", "fixture.toml", "--storage", url, "--trials", "4", "--steps", "60", cwd=folder)
    assert more.returncode == 0, more.stderr
    last = optuna.load_study(study_name="fixture", storage=url).trials[-1]
    assert last.state.name == "COMPLETE" and last.params["optimizer"] == "sgd" and 1.5e-3 <= last.params["lr"] <= 5e-3
    assert not record.read(last).hinted  # the hint covered trials 1 and 2


@pytest.fixture
def v4(tmp_path):
    """`fixtures/schema-v4.db`, made by this round's code from `fixtures/schema-v4.toml`: trial 0's LR set to
    0.2 at step 1087 and undone at step 1313 (by alice), trial 0 forked at step 1347 with lr 5e-4 as trial 1
    (by bob), a second undo rejected (nothing left to undo, by bob)."""
    return copy_fixture(tmp_path, 4)


def test_v4_reads_replays_and_continues(v4):
    folder, url = v4
    control = Control.open(url)
    assert [(c.action, c.state, c.applied_step) for c in control.commands()] == [
        ("set_lr", "applied", 1087), ("undo", "applied", 1313), ("fork", "applied", 1347), ("undo", "rejected", None)]
    study = control.study()
    parent, fork = (record.read(t) for t in study.trials)
    assert [record.change(e) for e in parent.interventions] == [
        "lr 0.002612 -> 0.2", "undid lr 0.002612 -> 0.2, back to its state at step 1087",
        "forked as #1 with lr=0.0005"]
    assert fork.origin == "fork of #0 at step 1347" and fork.resume["changes"] == {"lr": 5e-4}
    assert study.trials[1].params == {**study.trials[0].params, "lr@1087": 0.2, "undo@1313": 1, "lr@1347": 5e-4}
    replay = run_cli("replay", "--trial", "1", "--storage", url, "--json")  # from step 0: the parent's change,
    assert replay.returncode == 0 and json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr  # its
    # undo, then the fork's own change
    more = run_cli("run", "fixture.toml", "--storage", url, "--trials", "3", "--steps", "60", cwd=folder)
    assert more.returncode == 0, more.stderr
    assert optuna.load_study(study_name="fixture", storage=url).trials[-1].state.name == "COMPLETE"
