"""Steering end to end: real `steer run` worker processes, real SQLite and PostgreSQL, the Control API and CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from PIL import Image

import steer
from conftest import run_cli
from steer import record
from steer.control import Control

STEER_SPEC = """
[study]
name = "steer"
trials = {trials}
seed = 5

[target]
image = "card"
size = 16

[trial]
steps = {steps}
report_every = 50
backend = "torch"

[pruner]
type = "none"

[steering]
poll_interval = 0.05
publish_interval = 0.1
heartbeat_interval = 1
grace_period = 3

[space]
lr = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
optimizer = {{ type = "categorical", choices = ["adam", "sgd", "adamw"] }}
"""

WORKER_ENV = {"OMP_NUM_THREADS": "1"}  # several processes share 2 cores in CI


def start_worker(spec: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.Popen([sys.executable, "-m", "steer", "run", str(spec), *args], env={**env, **WORKER_ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_control(url: str, proc: subprocess.Popen | None = None) -> Control:
    def try_open():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited {proc.returncode}: {proc.stderr.read()}")
        try:
            return Control.open(url, "steer")
        except steer.UserError:
            return None
    return wait_for(try_open, what="the study to exist")


def running_trial(control: Control, number: int) -> None:
    wait_for(lambda: (live := control.live(number)) is not None and live.running, what=f"trial {number} running")


@pytest.fixture
def worker(tmp_path, storage_url):
    """A worker on a study whose trials run until a person prunes them (SQLite, then PostgreSQL)."""
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=2, steps=1_000_000))
    proc = start_worker(spec, "--storage", storage_url)
    url = storage_url
    yield proc, url, spec
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_every_action_applied_recorded_and_replayable(worker):
    proc, url, _ = worker
    control = open_control(url, proc)
    running_trial(control, 0)

    def ok(action, **kw):
        cmd = control.wait(control.request(action, trial=0, by="test", **kw).id, timeout=30)
        assert cmd.state == "applied", cmd.describe()
        assert cmd.applied_step is not None and cmd.result["action"] == action
        return cmd

    set_lr = ok("set_lr", value=3e-3)
    assert set_lr.result["new"] == 3e-3 and set_lr.result["old"] != 3e-3
    ok("set_optimizer", value="AdamW")
    ok("set_loss", value="huber")
    ok("set_weight_decay", value="1e-4")  # strings from forms and the CLI are numbers too
    reset = ok("reset", value=42)
    assert reset.args == {"seed": 42}
    ok("pin", param="loss")
    assert control.pin_values() == {"loss": "huber"}
    ok("promote")
    steps = [c.applied_step for c in control.commands(trial=0)]
    assert steps == sorted(steps)

    # Visible in plain Optuna while the trial still runs.
    trial = optuna.load_study(study_name="steer", storage=url).trials[0]
    assert trial.state == optuna.trial.TrialState.RUNNING
    recorded = record.attrs(trial)["steer.interventions"]
    assert [e["action"] for e in recorded] == ["set_lr", "set_optimizer", "set_loss", "set_weight_decay",
                                               "reset", "pin", "promote"]
    assert all({"action", "args", "old", "new", "step", "at", "by"} <= e.keys() for e in recorded)
    assert recorded[1]["old"] == trial.params["optimizer"] and recorded[1]["new"] == "adamw"
    assert trial.user_attrs["steer.steered"] is True

    # Live state: a small PNG preview and metric rows that show the changes.
    live = control.live(0)
    with Image.open(io.BytesIO(live.png)) as im:
        assert im.format == "PNG" and im.size == (16, 16)
    metrics = control.metrics(0)
    assert metrics[-1].lr == 3e-3 and metrics[-1].optimizer == "adamw" and metrics[-1].loss_name == "huber"
    assert any(m.psnr is not None for m in metrics)
    assert control.target_png() is not None

    prune = ok("prune", reason="seen enough")
    wait_for(lambda: optuna.load_study(study_name="steer", storage=url).trials[0].state.is_finished(),
             what="trial 0 to end")
    study = optuna.load_study(study_name="steer", storage=url)
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.PRUNED
    assert first.user_attrs["steer.pruned_reason"] == f"pruned by test at step {prune.applied_step}: seen enough"
    assert record.attrs(first)["steer.effective_params"]["optimizer"] == "adamw"
    assert record.attrs(first)["steer.final_step"] == prune.applied_step
    # The optuna-dashboard note carries the timeline.
    system = study._storage.get_study_system_attrs(study._study_id)
    note = "".join(v for k, v in sorted(system.items()) if k.startswith(f"dashboard:{first._trial_id}:note_str:"))
    assert "| lr " in note and " -> 0.003 | test |" in note and "| pruned: seen enough | test |" in note

    # The promoted trial runs next: trial 0's start and its changes at their steps, as params too; the pin
    # (loss = huber, set after the loss change) did not override its starting loss.
    running_trial(control, 1)
    second = optuna.load_study(study_name="steer", storage=url).trials[1]
    assert second.user_attrs["steer.promoted_from"] == 0
    at = {c.action: c.applied_step for c in control.commands(trial=0)}
    assert second.params == {**first.params, f"lr@{at['set_lr']}": 3e-3, f"optimizer@{at['set_optimizer']}": "adamw",
                             f"loss@{at['set_loss']}": "huber", f"weight_decay@{at['set_weight_decay']}": 1e-4,
                             f"reset@{at['reset']}": 42}
    assert record.attrs(second)["steer.params"]["loss"] == "mse"
    assert record.attrs(second)["steer.seed"] == record.attrs(first)["steer.seed"]
    control.wait(control.request("prune", trial=1, by="test").id)
    proc.wait(60)
    assert proc.returncode == 0, proc.stderr.read()

    # Replay: same params, seed and interventions at the same steps give the same PSNRs.
    result = run_cli("replay", "--storage", url, "--trial", "0", "--json")
    assert result.returncode == 0, result.stderr
    replay = json.loads(result.stdout)
    assert replay["identical"] is True and replay["original"] == replay["replay"] == first.value
    assert replay["interventions"] == 5  # the ones that change training

    # `steer show --trial` shows the log.
    shown = run_cli("show", "--storage", url, "--trial", "0")
    assert "set_optimizer" in shown.stdout and "seen enough" in shown.stdout


def test_rejections_are_recorded_with_reasons(worker):
    proc, url, _ = worker
    control = open_control(url, proc)
    running_trial(control, 0)
    cases = [
        (dict(action="set_lr", trial=0, value=float("nan")), "lr: got nan"),
        (dict(action="set_lr", trial=0, value=2.0), "lr: got 2.0; allowed: float in [1e-07, 1]"),
        (dict(action="set_lr", trial=0, value="fast"), "lr: got 'fast'; expected a number"),
        (dict(action="set_optimizer", trial=0, value="rmsprop"), "optimizer: got 'rmsprop'; allowed: adam | sgd | adamw"),
        (dict(action="set_loss", trial=0, value="ssim"), "loss: got 'ssim'"),
        (dict(action="set_weight_decay", trial=0, value=-0.1), "weight_decay: got -0.1"),
        (dict(action="explode", trial=0), "unknown action 'explode'"),
        (dict(action="set_lr", trial=7, value=1e-3), "no trial 7 in study 'steer'"),
        (dict(action="set_lr", value=1e-3), "set_lr needs a trial number"),
        (dict(action="pin", param="colour"), "pin needs a parameter: one of lr, optimizer, loss, weight_decay"),
        (dict(action="pin", param="lr"), "pin lr needs a value, or a trial to take the value from"),
        (dict(action="unpin", param="lr"), "lr is not pinned"),
        (dict(action="reset", trial=0, value=-1), "reset seed must be a non-negative integer"),
    ]
    for kwargs, reason in cases:
        cmd = control.request(**kwargs, by="test")
        assert cmd.state == "rejected" and reason in cmd.reason, (kwargs, cmd.reason)
    first = control.request("set_lr", trial=0, value=2e-3, request_id="req-1")
    dup = control.request("set_lr", trial=0, value=2e-3, request_id="req-1")
    assert dup.state == "rejected" and dup.reason == f"duplicate request id 'req-1' (already command {first.id})"
    assert control.wait(first.id).state == "applied"
    rejected = control.commands(states=("rejected",))
    assert len(rejected) == len(cases) + 1  # every bad request is kept
    # The trial kept running through all of it.
    assert control.live(0).running and proc.poll() is None

    control.wait(control.request("prune", trial=0).id)
    # Its last preview (running: false) is written a moment before Optuna records the trial's end.
    wait_for(lambda: control.study().trials[0].state.is_finished(), what="trial 0 to end")
    late = control.request("set_lr", trial=0, value=1e-3)
    assert late.state == "rejected" and late.reason == "trial 0 is PRUNED: only running trials can be changed"
    # Finished trials can still be read from: pin their value, promote them.
    assert control.request("pin", trial=0, param="lr").state == "applied"
    assert control.pin_values() == {"lr": 2e-3}


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)  # the CLI is the same on any storage
def test_ctl_cli(worker):
    proc, url, _ = worker
    control = open_control(url, proc)
    running_trial(control, 0)
    result = run_cli("ctl", "set-lr", "--storage", url, "--trial", "0", "4e-3", "--wait")
    assert result.returncode == 0, result.stderr
    assert "set_lr" in result.stdout and ": applied at step" in result.stdout
    bad = run_cli("ctl", "set-lr", "--storage", url, "--trial", "0", "1e9")
    assert bad.returncode == 1 and "rejected (lr: got 1000000000.0; allowed: float in [1e-07, 1])" in bad.stdout
    pin = run_cli("ctl", "pin", "--storage", url, "optimizer", "sgd", "--json")
    assert json.loads(pin.stdout)["state"] == "applied"
    assert run_cli("ctl", "unpin", "--storage", url, "optimizer").returncode == 0
    missing = run_cli("ctl", "set-lr", "--storage", url, "--trial", "0")
    assert missing.returncode == 2 and "set-lr needs a VALUE" in missing.stderr


def test_pins_are_honoured_by_later_trials(tiny_spec, storage_url):
    url = storage_url
    spec = steer.load_spec(tiny_spec)
    study = steer.create_study(spec, url)
    control = Control.open(study)
    assert control.request("pin", param="lr", value=4e-3).state == "applied"
    assert control.request("pin", param="loss", value="l1").state == "applied"  # not searched by the spec
    study.optimize(steer.objective(spec), n_trials=1)
    trial = study.trials[0]
    assert trial.params["lr"] == 4e-3  # recorded as the Optuna param: the sampler learns from it
    assert record.attrs(trial)["steer.pinned"] == {"lr": 4e-3, "loss": "l1"}
    assert record.attrs(trial)["steer.effective_params"]["loss"] == "l1"
    # A pin outside the spec's range still trains with the pinned value.
    control.request("pin", param="lr", value=0.5)
    study.optimize(steer.objective(spec), n_trials=1)
    assert record.attrs(study.trials[1])["steer.effective_params"]["lr"] == 0.5
    control.request("unpin", param="lr")
    control.request("unpin", param="loss")
    study.optimize(steer.objective(spec), n_trials=1)
    assert "steer.pinned" not in record.attrs(study.trials[2])


def test_killed_worker_leaves_fail_and_expired_commands(tmp_path):
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=2, steps=1_000_000))
    url = f"sqlite:///{tmp_path / 'steer.db'}"
    proc = start_worker(spec)
    try:
        control = open_control(url, proc)
        running_trial(control, 0)
        applied = control.wait(control.request("set_lr", trial=0, value=5e-3).id)
        assert applied.state == "applied"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stranded = control.request("set_loss", trial=0, value="l1")  # the trial still looks RUNNING
        assert stranded.state == "pending"
        time.sleep(3.5)  # past the grace period
        proc = start_worker(spec)  # the next worker finds the dead one's trial
        wait_for(lambda: control.command(stranded.id).state == "expired", what="the command to expire")
        study = optuna.load_study(study_name="steer", storage=url)
        dead = study.trials[0]
        assert dead.state == optuna.trial.TrialState.FAIL
        assert [e["action"] for e in record.attrs(dead)["steer.interventions"]] == ["set_lr"]  # nothing lost
        assert control.command(stranded.id).reason == "the trial ended before the command was applied"
        running_trial(control, 1)
    finally:
        proc.kill()
        proc.wait(10)


def test_two_workers_and_a_steady_stream_of_commands(tmp_path):
    """A small version of the concurrency benchmark: no lock errors, every command resolved."""
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=6, steps=300))
    url = f"sqlite:///{tmp_path / 'steer.db'}"
    procs = [start_worker(spec)]
    control = open_control(url, procs[0])
    procs.append(start_worker(spec))
    sent: list[int] = []
    stop = threading.Event()

    def requester():
        i = 0
        while not stop.is_set():
            running = [t.number for t in control.study().get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
            if running:
                lr = 1e-3 * (1 + i % 5)
                sent.append(control.request("set_lr", trial=running[i % len(running)], value=lr).id)
                i += 1
            time.sleep(0.1)

    thread = threading.Thread(target=requester)
    thread.start()
    try:
        for p in procs:
            p.wait(180)
    finally:
        stop.set()
        thread.join()
    errors = [p.stderr.read() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert not any("locked" in e for e in errors), errors
    commands = control.commands()
    assert len(sent) >= 5 and {c.id for c in commands} >= set(sent)
    assert all(c.state in ("applied", "rejected", "expired") for c in commands)
    applied = [c for c in commands if c.state == "applied"]
    assert applied
    study = optuna.load_study(study_name="steer", storage=url)
    # Each worker stops once 6 trials finished; both may have started one more just before.
    assert 6 <= len(study.trials) <= 7 and all(t.state.is_finished() for t in study.trials)
    recorded = {e["command"] for t in study.trials for e in record.attrs(t).get("steer.interventions", [])}
    assert {c.id for c in applied} == recorded  # no applied command missing from the record


def test_sigterm_stops_a_worker_cleanly(worker):
    proc, url, spec = worker
    control = open_control(url, proc)
    running_trial(control, 0)
    proc.terminate()
    assert proc.wait(30) == 130 and "steer: interrupted" in proc.stderr.read()
    trial = optuna.load_study(study_name="steer", storage=url).trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert not control.live(0).running  # its last preview says it ended
    assert "steer.effective_params" in record.attrs(trial)
