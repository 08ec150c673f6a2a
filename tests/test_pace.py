"""A person's pace: pause and resume a trial, hold the study, keep a trial, spare a watched one.

Real `steer run` workers on SQLite and PostgreSQL for pause/resume and hold; the
pruning rules in-process on a real study with a pruner that prunes everything.
"""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
import torch

import steer
from conftest import run_cli
from steer import record
from steer.control import Control
from steer.storage import open_storage
from test_control import STEER_SPEC, open_control, running_trial, start_worker, wait_for


def live_step(control: Control, trial: int) -> int:
    return control.live(trial).step


def test_a_paused_trial_stays_running_past_the_grace_period_and_resumes_unchanged(tmp_path, storage_url):
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=1, steps=6000))  # heartbeat 1 s, grace period 3 s
    proc = start_worker(spec, "--storage", storage_url)
    try:
        control = open_control(storage_url, proc)
        running_trial(control, 0)
        paused = control.wait(control.request("pause", trial=0, by="tester").id)
        assert paused.state == "applied", paused.describe()
        held_at = paused.applied_step
        wait_for(lambda: live_step(control, 0) == held_at, what="the live view to show the paused step")
        time.sleep(5)  # longer than the grace period: a worker that stopped beating would be failed now
        assert live_step(control, 0) == held_at
        study = optuna.load_study(study_name="steer", storage=storage_url)
        assert study.trials[0].state.name == "RUNNING"
        assert record.read(study.trials[0]).paused["step"] == held_at
        again = control.wait(control.request("pause", trial=0, by="tester").id)
        assert again.state == "rejected" and again.reason == f"trial 0 is paused already (since step {held_at})"
        resumed = control.wait(control.request("resume", trial=0, by="tester").id)
        assert resumed.state == "applied" and resumed.applied_step == held_at
        assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    trial = optuna.load_study(study_name="steer", storage=storage_url).trials[0]
    rec = record.read(trial)
    assert trial.state.name == "COMPLETE" and rec.paused is None and rec.paused_seconds >= 5
    assert not rec.steered and [e["action"] for e in rec.interventions] == ["pause", "resume"]
    # A pause changes no number: the replay, which knows nothing of it, gives the same PSNR at every report.
    replay = run_cli("replay", "--trial", "0", "--storage", storage_url, "--json")
    assert replay.returncode == 0 and json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr
    late = run_cli("ctl", "resume", "--trial", "0", "--storage", storage_url)
    assert late.returncode == 1 and "trial 0 is COMPLETE: only running trials can be changed" in late.stdout


def test_a_paused_trial_whose_worker_dies_ends_fail(tmp_path):
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=2, steps=1_000_000))
    url = f"sqlite:///{tmp_path / 'steer.db'}"
    proc = start_worker(spec)
    try:
        control = open_control(url, proc)
        running_trial(control, 0)
        assert control.wait(control.request("pause", trial=0, by="tester").id).state == "applied"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(3.5)  # past the grace period
        proc = start_worker(spec)  # the next worker finds the dead one's trial
        wait_for(lambda: optuna.load_study(study_name="steer", storage=url).trials[0].state.name == "FAIL",
                 what="the paused trial of the killed worker to be failed")
    finally:
        proc.kill()
        proc.wait(10)


def test_a_held_study_starts_no_trial_until_released(tmp_path):
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=1, steps=50))
    url = f"sqlite:///{tmp_path / 'steer.db'}"
    study = steer.create_study(steer.load_spec(spec), open_storage(url))
    held = run_cli("ctl", "hold", "--storage", url, "--by", "tester")
    assert held.returncode == 0 and "hold {} on study: applied" in held.stdout
    again = run_cli("ctl", "hold", "--storage", url)
    assert again.returncode == 1 and "the study is held already (by tester)" in again.stdout
    proc = start_worker(spec, "--storage", url)
    try:
        time.sleep(4)  # the worker is up and waiting (torch imported, study opened)
        assert proc.poll() is None and study.trials == []
        released = run_cli("ctl", "release", "--storage", url)
        assert released.returncode == 0, released.stdout + released.stderr
        assert proc.wait(60) == 0
        assert "the study is held by tester" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    free = run_cli("ctl", "release", "--storage", url)
    assert free.returncode == 1 and "the study is not held" in free.stdout


@pytest.fixture
def pruned_twins(tmp_path):
    """Two running trials of a study whose pruner prunes every reported trial, each steerable."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=open_storage(url, heartbeat=False),
                                pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    out = []
    for _ in range(2):
        trial = study.ask()
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=trial.suggest_float("lr", 1e-3, 1e-1))
        s = steer.steering(trial, optimizer=opt)
        s.__enter__()
        s.step(10)
        trial.report(1.0, 10)
        out.append(s)
    return Control.open(url), out


def test_kept_and_watched_trials_are_spared_what_their_twins_are_not(pruned_twins):
    control, (kept, twin) = pruned_twins
    assert twin.should_prune() and kept.should_prune()  # the pruner's verdict on both
    assert control.wait(control.request("keep", trial=kept.trial.number, by="tester").id, timeout=0).state == "pending"
    kept.poll()  # the trial applies it between two steps
    assert kept.kept and not kept.should_prune() and twin.should_prune()
    assert record.attrs(kept.trial.study.trials[0])[record.SPARED] == "would be pruned at step 10 (kept)"
    assert record.read(kept.trial.study.trials[0]).kept and not record.read(kept.trial.study.trials[0]).steered
    control.watch(twin.trial.number, seconds=2)  # its page is open in the app
    assert control.watched(twin.trial.number) and not twin.should_prune()
    assert record.attrs(kept.trial.study.trials[1])[record.SPARED] == "would be pruned at step 10 (watched)"
    time.sleep(2.1)  # the page was closed: nothing renews the mark
    assert not control.watched(twin.trial.number) and twin.should_prune()
    twin.spare_watched = False  # [steering] spare_watched = false
    control.watch(twin.trial.number)
    assert twin.should_prune()
    again = control.request("keep", trial=kept.trial.number, by="tester")
    kept.poll()
    assert control.command(again.id).reason == f"trial {kept.trial.number} is kept already"
