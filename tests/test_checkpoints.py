"""Checkpoints of running trials: fork, undo, resume after a crash, retention, and what goes wrong.

Real studies in real SQLite files (and PostgreSQL for the crash), trained by
real workers: the fork and undo tests run the study in a thread of this
process (`steer_in_thread`), the crash test kills a real `steer run` process
with SIGKILL and lets another carry its trial on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

import steer
from conftest import pg_database, run_cli, steer_in_thread
from steer import record
from steer.checkpoints import Checkpoints, to_bytes
from steer.control import Control
from steer.replay import replay_trial

SPEC = """
[study]
name = "{name}"
seed = 3
artifacts = "{name}-artifacts"
[target]
image = "card"
size = 16
[trial]
steps = {steps}
report_every = 100
backend = "torch"
[pruner]
type = "none"
[steering]
poll_interval = 0.02
[checkpoints]
every = {every}
keep = 2
[space]
lr = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
optimizer = {{ type = "categorical", choices = ["adam", "adamw"] }}
"""


def spec_text(name: str, steps: int = 3000, every: float = 0.3) -> str:
    return SPEC.format(name=name, steps=steps, every=every)


def applied(control: Control, action: str, trial: int, value=None):
    cmd = control.wait(control.request(action, trial=trial, value=value, by="tester").id)
    assert cmd.state == "applied", cmd.describe()
    return cmd


def checkpoint_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*-artifacts/steer-checkpoint-*"))


# ---- fork -------------------------------------------------------------------------------- #

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def forked(request, tmp_path_factory):
    """Trial 0 steered once, then forked twice while it runs: with no change (trial 1) and with a lower LR
    and another optimizer (trial 2). All three run to the end. On SQLite, then PostgreSQL."""
    folder = tmp_path_factory.mktemp("fork")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database()) if request.param == "postgresql" else None
        spec, url, study, worker, control = steer_in_thread(folder, "fork", spec_text("fork"), n_trials=3, url=url)
        applied(control, "set_lr", 0, 3e-3)
        time.sleep(0.2)
        same = applied(control, "fork", 0)
        lower = applied(control, "fork", 0, ["lr=3e-4", "optimizer=sgd"])
        worker.join(600)
        yield folder, control, optuna.load_study(study_name="fork", storage=url), same, lower, url


def test_a_fork_with_no_change_continues_exactly_like_its_parent(forked):
    _, _, study, same, _, _ = forked
    parent, fork = study.trials[0], study.trials[1]
    step = same.applied_step
    assert same.result["new"]["trial"] == 1 and same.result["new"]["step"] == step
    assert fork.state.name == "COMPLETE" and parent.state.name == "COMPLETE"
    # It continues its parent's step count: its first report is the parent's next report step.
    assert min(fork.intermediate_values) == (step // 100 + 1) * 100
    # Bit for bit on the CPU: the same PSNR at every report after the fork, and at the end.
    assert fork.intermediate_values == {s: v for s, v in parent.intermediate_values.items() if s > step}
    assert fork.value == parent.value


def test_a_fork_with_changes_differs_and_records_its_lineage(forked):
    _, control, study, same, lower, _ = forked
    parent, fork = study.trials[0], study.trials[2]
    assert fork.state.name == "COMPLETE" and fork.value != parent.value
    rec = record.read(fork)
    step, at_lr = lower.applied_step, record.attrs(parent)["steer.interventions"][0]["step"]
    assert rec.fork_of == 0 and rec.origin == f"fork of #0 at step {step}"
    assert rec.resume["changes"] == {"lr": 3e-4, "optimizer": "sgd"}
    assert fork.user_attrs[record.FORK_OF] == 0  # shown in optuna-dashboard and `optuna trials`
    # Its params are the whole chain from step 0: the parent's start, the parent's change, its own changes.
    assert fork.params == {**parent.params, f"lr@{at_lr}": 3e-3, f"lr@{step}": 3e-4, f"optimizer@{step}": "sgd"}
    assert record.attrs(fork)["steer.effective_params"]["optimizer"] == "sgd"
    assert not rec.steered and not rec.interventions  # a clean run of that chain
    # The parent's record names its forks; both notes say it.
    changes = [record.change(e) for e in record.read(parent).interventions]
    assert changes[1:] == ["forked as #1 (no change)", "forked as #2 with lr=0.0003, optimizer=sgd"]
    assert f"Forked from #0 at step {step} (lr=0.0003, optimizer=sgd)" in record.note(rec)


def test_replay_runs_a_fork_from_step_0(forked):
    _, _, study, _, _, _ = forked
    for number in (1, 2):
        result = replay_trial(study, number)
        assert result["identical"], (number, result["original"], result["replay"])


def test_a_finished_study_keeps_no_checkpoint(forked):
    folder, control, _, _, _, url = forked
    assert Checkpoints.of(control).all() == [] and checkpoint_files(folder) == []


def test_fork_and_undo_refuse_finished_trials(forked):
    folder, control, _, _, _, url = forked
    for action in ("fork", "undo"):
        cmd = control.request(action, trial=0, by="tester")
        assert cmd.state == "rejected" and "trial 0 is COMPLETE: only running trials can be changed" in cmd.reason
    cmd = control.request("fork", trial=0, by="tester")
    assert cmd.state == "rejected" and "trial 0 is COMPLETE: only running trials can be changed" in cmd.reason
    cli = run_cli("ctl", "set-lr", "--trial", "0", "1e-3", "--set", "lr=1", "--storage", url)
    assert cli.returncode == 2 and "--set is an option of fork, not of set-lr" in cli.stderr


# ---- undo -------------------------------------------------------------------------------- #

def psnr_at(control: Control, trial: int, step: int) -> float:
    """The PSNR the trial last reported at or before `step`."""
    return [m.psnr for m in control.metrics(trial) if m.step <= step and m.psnr is not None][-1]


def test_undo_after_a_ruinous_lr_brings_the_trial_back(tmp_path):
    spec, url, study, worker, control = steer_in_thread(tmp_path, "undo", spec_text("undo", steps=5000), n_trials=1)
    time.sleep(0.5)
    bad = applied(control, "set_lr", 0, 0.5)  # a slider dragged a decade too far: the prediction collapses
    before = psnr_at(control, 0, bad.applied_step)
    while control.live(0).step < bad.applied_step + 400:
        time.sleep(0.02)
    ruined = psnr_at(control, 0, control.live(0).step)
    undo = applied(control, "undo", 0)
    assert undo.result["new"] == {"step": bad.applied_step, "command": bad.id} and "lr" in undo.result["old"]
    while control.live(0).step < undo.applied_step + 200:
        time.sleep(0.02)
    back = [m for m in control.metrics(0) if m.step > undo.applied_step and m.psnr is not None][0]
    assert ruined < before - 5, (ruined, before)  # it was ruined ...
    assert back.psnr >= before - 0.5, (back.psnr, before)  # ... and is back within 0.5 dB of where it was
    assert back.lr == pytest.approx(bad.result["old"])  # with the settings it had then
    again = control.wait(control.request("undo", trial=0, by="tester").id)
    assert again.state == "rejected" and again.reason.startswith("nothing to undo"), again.describe()
    worker.join(600)
    trial = optuna.load_study(study_name="undo", storage=url).trials[0]
    assert record.read(trial).steered
    assert [record.change(e) for e in record.read(trial).interventions] == [
        f"lr {bad.result['old']:.4g} -> 0.5", f"undid lr {bad.result['old']:.4g} -> 0.5 (command {bad.id}), back to "
                                               f"its state at step {bad.applied_step}"]
    result = replay_trial(study, 0)  # the undo is replayed: the same state, found by the same rule
    assert result["identical"], (result["original"], result["replay"])
    exported = run_cli("export", "--trial", "0", "--storage", url, "-o", str(tmp_path / "again.toml"))
    assert exported.returncode == 0, exported.stderr
    assert [(e["step"], e["action"]) for e in steer.load_spec(tmp_path / "again.toml").schedule] == [
        (bad.applied_step, "set_lr"), (undo.applied_step, "undo")]


def test_a_corrupt_checkpoint_fails_cleanly(tmp_path):
    """A damaged 'before' checkpoint: undo is rejected with the reason and the trial trains on. A damaged fork
    checkpoint: the fork fails with the reason, the parent goes on."""
    import threading

    from steer.checkpoints import CheckpointError

    (tmp_path / "bad.toml").write_text(spec_text("bad", steps=3000))
    spec = steer.load_spec(tmp_path / "bad.toml")
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    study = steer.create_study(spec, url)
    worker = threading.Thread(target=study.optimize, args=(steer.objective(spec),),
                              kwargs={"n_trials": 2, "catch": (CheckpointError,)})
    worker.start()
    control = Control.open(study)
    while (live := control.live(0)) is None or live.step < 200:
        time.sleep(0.02)
    applied(control, "set_lr", 0, 2e-3)
    checkpoints = Checkpoints.of(control)
    before = checkpoints.of_trial(0, "before")[-1]
    (tmp_path / "bad-artifacts" / before.artifact_id).write_bytes(b"not a checkpoint")
    undo = control.wait(control.request("undo", trial=0, by="tester").id)
    assert undo.state == "rejected" and f"checkpoint {before.id} of trial 0 at step {before.step} (before)" \
        in undo.reason and "not a readable checkpoint" in undo.reason, undo.describe()
    fork = applied(control, "fork", 0)
    ck = checkpoints.get(fork.result["new"]["checkpoint"])
    (tmp_path / "bad-artifacts" / ck.artifact_id).unlink()
    worker.join(600)
    parent, child = optuna.load_study(study_name="bad", storage=url).trials
    assert parent.state.name == "COMPLETE"
    assert child.state.name == "FAIL"
    assert f"checkpoint {ck.id} of trial 0 at step {ck.step} (fork): its file" in record.read(child).note


class FullDisk(FileSystemArtifactStore):
    """The study's artifact folder on a disk with no space left."""

    def write(self, artifact_id, content_body):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_costs_the_checkpoints_not_the_trial(tmp_path):
    (tmp_path / "full.toml").write_text(spec_text("full", steps=4000, every=0.1))
    spec = steer.load_spec(tmp_path / "full.toml")
    url = f"sqlite:///{tmp_path / 'full.db'}"
    study = steer.create_study(spec, url)
    import threading

    objective = steer.objective(spec, checkpoint_store=FullDisk(tmp_path / "nowhere"))
    worker = threading.Thread(target=study.optimize, args=(objective,), kwargs={"n_trials": 1})
    worker.start()
    control = Control.open(study)
    while (live := control.live(0)) is None or live.step < 500:
        time.sleep(0.02)
    bad = applied(control, "set_lr", 0, 0.5)
    fork = control.wait(control.request("fork", trial=0, by="tester").id)
    assert fork.state == "rejected" and "could not be written" in fork.reason and "No space left" in fork.reason
    undo = applied(control, "undo", 0)  # the state before the change was kept in memory instead
    assert undo.result["new"] == {"step": bad.applied_step, "command": bad.id}
    worker.join(600)
    trial = optuna.load_study(study_name="full", storage=url).trials[0]
    assert trial.state.name == "COMPLETE"
    warning = record.read(trial).checkpoint_warning
    assert "could not be written" in warning and "No space left on device" in warning
    assert Checkpoints.of(control).all() == []


def test_retention_keeps_the_newest_cadence_checkpoints(tmp_path):
    spec, url, study, worker, control = steer_in_thread(tmp_path, "keep", spec_text("keep", steps=3000, every=0.05),
                                                        n_trials=1)
    applied(control, "set_lr", 0, 2e-3)
    checkpoints = Checkpoints.of(control)
    deadline, seen = time.monotonic() + 60, set()
    while len(seen) < 6:
        assert time.monotonic() < deadline, "too few checkpoints taken"
        cadence = checkpoints.of_trial(0, "cadence")
        assert len(cadence) <= 3  # keep = 2, plus one just written
        seen |= {c.id for c in cadence}
        time.sleep(0.02)
    kinds = [c.kind for c in checkpoints.of_trial(0)]
    assert kinds.count("before") == 1 and kinds.count("cadence") <= 3  # the one undo needs is kept
    files = {p.name for p in checkpoint_files(tmp_path)}
    assert {c.artifact_id for c in checkpoints.of_trial(0)} <= files
    worker.join(600)
    assert checkpoints.all() == [] and checkpoint_files(tmp_path) == []


# ---- resume after a crash ---------------------------------------------------------------------- #

CRASH = """
[study]
name = "crash"
trials = 1
seed = 3
[target]
image = "card"
size = 16
[trial]
steps = 3000
report_every = 100
backend = "torch"
[pruner]
type = "none"
[steering]
poll_interval = 0.05
heartbeat_interval = 1
grace_period = 2
[checkpoints]
every = 0.3
[space]
lr = { type = "float", low = 1e-3, high = 1e-2, log = true }
"""


def crash_and_carry_on(folder: Path, url: str):
    """Start a worker, steer its trial, SIGKILL it after its second checkpoint, start another worker.
    Returns the newest checkpoint the dead trial had taken."""
    (folder / "crash.toml").write_text(CRASH)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    first = subprocess.Popen([sys.executable, "-m", "steer", "run", "crash.toml", "--storage", url], cwd=folder,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        control = None
        while control is None or len(Checkpoints.of(control).of_trial(0, "cadence")) < 2:
            assert time.monotonic() < deadline and first.poll() is None, "the first worker took no checkpoint"
            try:
                control = control or Control.open(url)
            except Exception:  # noqa: BLE001 - the worker has not made the study yet
                pass
            time.sleep(0.05)
        applied(control, "set_lr", 0, 2e-3)
        time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    newest = Checkpoints.of(control).of_trial(0, "cadence")[-1]
    time.sleep(2.5)  # its heartbeat goes stale (grace period 2 s)
    second = run_cli("run", "crash.toml", "--storage", url, cwd=folder)
    assert second.returncode == 0, second.stderr
    assert "trial 0 died (its worker stopped beating); trial 1 carries it on" in second.stderr
    return newest


def check_carried_on(url: str, newest) -> None:
    study = optuna.load_study(study_name="crash", storage=url)
    dead, retry = study.trials
    assert dead.state.name == "FAIL" and retry.state.name == "COMPLETE"
    rec = record.read(retry)
    assert rec.retry_of == 0 and retry.user_attrs[record.RETRY_OF] == 0
    # It started from the dead trial's newest checkpoint: at most one interval of steps was done again.
    assert (rec.resume["checkpoint"], rec.resume["step"]) == (newest.id, newest.step)
    assert min(retry.intermediate_values) == (rec.resume["step"] // 100 + 1) * 100
    # The person's change, made before the crash, is part of its chain (params and replay).
    set_at = record.attrs(dead)["steer.interventions"][0]["step"]
    assert retry.params[f"lr@{set_at}"] == 2e-3
    # The budget counted the crashed trial once, as its retry: the study stopped at 1 finished trial.
    assert len(study.trials) == 2
    assert replay_trial(study, 1)["identical"]


def test_a_killed_workers_trial_is_carried_on_from_its_checkpoint(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    check_carried_on(url, crash_and_carry_on(tmp_path, url))
    assert checkpoint_files(tmp_path) == []
    shown = run_cli("show", "--trial", "1", "--storage", url)
    assert "Retried from #0 (its worker died)" in shown.stdout, shown.stdout


def test_a_killed_workers_trial_is_carried_on_by_another_machine_on_postgresql(tmp_path):
    """Two machines share a PostgreSQL server and an artifact folder (here: one local folder)."""
    with pg_database() as url:
        check_carried_on(url, crash_and_carry_on(tmp_path, url))


def test_the_ctl_fork_command_prints_the_new_trial(tmp_path):
    spec, url, study, worker, control = steer_in_thread(tmp_path, "cli", spec_text("cli", steps=3000), n_trials=2)
    for value, says in ((["momentum=0.5"], "fork: cannot set 'momentum'; allowed: lr, optimizer, loss, weight_decay"),
                        (["lr=fast"], "lr: got 'fast'; expected a number"),
                        (["lr"], "give changes as SETTING=VALUE"),
                        (["lr=1e-3", "lr=2e-3"], "fork: lr is set twice")):
        cmd = control.request("fork", trial=0, value=value, by="tester")
        assert cmd.state == "rejected" and says in cmd.reason, cmd.describe()
    bad = run_cli("ctl", "fork", "--trial", "0", "--set", "optimizer=lbfgs", "--storage", url)
    assert bad.returncode == 1 and "optimizer: got 'lbfgs'; allowed: adam | sgd | adamw" in bad.stdout, bad.stdout
    out = run_cli("ctl", "fork", "--trial", "0", "--set", "lr=3e-4", "--set", "loss=l1", "--wait", "--json",
                  "--storage", url)
    assert out.returncode == 0, out.stderr
    cmd = json.loads(out.stdout)
    assert cmd["state"] == "applied" and cmd["result"]["new"]["trial"] == 1
    assert cmd["result"]["new"]["changes"] == {"lr": 3e-4, "loss": "l1"}
    worker.join(600)
    assert record.attrs(study.trials[1])["steer.effective_params"]["loss"] == "l1"


def test_show_compare_pairs_each_fork_with_its_parent_at_equal_steps(forked):
    folder, _, study, same, lower, url = forked
    out = run_cli("show", "--compare", "--storage", url)
    assert out.returncode == 0, out.stderr
    parent, fork = study.trials[0], study.trials[2]
    gap = fork.value - parent.value
    assert (f"trial 1 (COMPLETE), fork of #0 at step {same.applied_step} (no change): {parent.value:.2f} vs "
            f"{parent.value:.2f} at step 3000 (+0.00); ahead at 0 of") in out.stdout, out.stdout
    assert (f"trial 2 (COMPLETE), fork of #0 at step {lower.applied_step} (lr=0.0003, optimizer=sgd): "
            f"{fork.value:.2f} vs {parent.value:.2f} at step 3000 ({gap:+.2f})") in out.stdout, out.stdout


def test_deleting_a_study_removes_its_checkpoints_and_records(tmp_path):
    """A study with a checkpoint still on disk (a retry waits for it) and a neighbour study in the same file."""

    for name in ("gone", "stays"):
        (tmp_path / f"{name}.toml").write_text(spec_text(name, steps=100))
        steer.create_study(steer.load_spec(tmp_path / f"{name}.toml"), f"sqlite:///{tmp_path / 'two.db'}")
    url = f"sqlite:///{tmp_path / 'two.db'}"
    control = Control.open(url, "gone")
    control.study().optimize(steer.objective(steer.load_spec(tmp_path / "gone.toml")), n_trials=1)
    ck = Checkpoints.of(control).save(0, 100, "cadence", to_bytes({"settings": {}, "loop": {}}))
    control.request("hint", param="lr", value=2e-3, by="tester")
    assert len(checkpoint_files(tmp_path)) == 1
    refused = run_cli("delete", "--study", "gone", "--storage", url)
    assert refused.returncode == 2 and "this deletes study 'gone', its 1 trials" in refused.stderr
    out = run_cli("delete", "--study", "gone", "--storage", url, "--yes")
    assert out.returncode == 0 and "deleted study 'gone': 1 trials, 1 commands, 1 checkpoints" in out.stdout, out
    assert checkpoint_files(tmp_path) == [] and ck.artifact_id
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["stays"]
    assert Control.open(url).study_name == "stays"  # the neighbour keeps its rows (its target image)
    assert Control.open(url).has_target()


# ---- a user's own loop ------------------------------------------------------------------------ #

class Regression:
    """A user's loop state: a linear model fit by SGD on batches its own generator draws."""

    def __init__(self) -> None:
        import torch

        self.gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(512, 4, generator=self.gen)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(512, generator=self.gen)
        self.model = torch.nn.Linear(4, 1)
        torch.nn.init.zeros_(self.model.weight)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-2)
        self.step = 0

    def train_step(self):
        import torch

        idx = torch.randint(512, (32,), generator=self.gen)
        self.opt.zero_grad()
        loss = ((self.model(self.x[idx]).squeeze(1) - self.y[idx]) ** 2).mean()
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss.detach()

    def state_dict(self):
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"])
        self.step = state["step"]


def users_objective(trial: optuna.Trial) -> float:
    import torch

    loop = Regression()
    trial.suggest_float("lr", 1e-2, 1e-2)
    with steer.steering(trial, optimizer=loop.opt, model=loop.model, state=loop, poll_interval=0.01,
                        checkpoint_every=0.05) as s:
        for step in range(s.start_step + 1, 15001):
            loss = loop.train_step()
            s.step(step, loss=loss)
            if step % 1000 == 0:
                trial.report(float(loss), step)
    with torch.no_grad():
        return float(((loop.model(loop.x).squeeze(1) - loop.y) ** 2).mean())


def test_a_users_own_loop_with_its_state_can_be_forked_and_undone(tmp_path):
    import threading

    url = f"sqlite:///{tmp_path / 'mine.db'}"
    study = optuna.create_study(storage=url, study_name="mine")
    worker = threading.Thread(target=study.optimize, args=(users_objective,), kwargs={"n_trials": 2})
    worker.start()
    control = Control.open(study)
    while (live := control.live(0)) is None or live.step < 2000:
        time.sleep(0.01)
    applied(control, "set_lr", 0, 0.3)
    undo = applied(control, "undo", 0)
    fork = applied(control, "fork", 0)
    worker.join(600)
    parent, child = optuna.load_study(study_name="mine", storage=url).trials
    assert undo.result["old"] == "lr 0.01 -> 0.3"
    assert record.read(child).fork_of == 0 and child.state.name == "COMPLETE"
    assert child.value == parent.value  # no change: the same loss, its data order included
    assert child.intermediate_values == {k: v for k, v in parent.intermediate_values.items() if k > fork.applied_step}


def test_show_names_who_carries_a_trial_on(forked):
    _, _, _, _, _, url = forked
    out = run_cli("show", "--storage", url, env={"COLUMNS": "200"})  # one line per trial
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("│ ")}
    assert "forks: #1, #2" in rows["0"] and "fork of #0 at step" in rows["2"], out.stdout


def test_a_file_without_its_row_goes_with_its_trial(tmp_path):
    """A worker killed between a checkpoint's file and its row leaves a file no row names: it goes when the
    trial's checkpoints are released, and a running trial's are left alone."""
    (tmp_path / "orph.toml").write_text(spec_text("orph", steps=100))
    spec = steer.load_spec(tmp_path / "orph.toml")
    study = steer.create_study(spec, f"sqlite:///{tmp_path / 'orph.db'}")
    study.optimize(steer.objective(spec), n_trials=1)
    control = Control.open(study)
    checkpoints = Checkpoints.of(control)
    folder = tmp_path / "orph-artifacts"
    dead = folder / f"steer-checkpoint-{control.study_id}-0-50-1"
    live = folder / f"steer-checkpoint-{control.study_id}-1-50-1"  # a trial that has not finished
    other = folder / f"steer-checkpoint-{control.study_id + 1}-0-50-1"  # another study's
    for f in (dead, live, other):
        f.write_bytes(b"half written")
    assert checkpoints.release() == 1
    assert not dead.exists() and live.exists() and other.exists()


def test_the_comparison_figure_links_each_fork_to_its_parent(forked):
    from steer.comparison import comparison, comparison_figure

    _, _, study, _, _, _ = forked
    figure = comparison_figure(comparison(study))
    links = [list(t.x) for t in figure.data if t.mode == "lines" and t.line.dash == "dash"]
    assert links == [[0, 1], [0, 2]]


def test_undo_goes_back_at_most_undo_depth_changes(tmp_path):
    """Each change keeps a `before` checkpoint while the trial runs: only the newest `undo_depth` are kept,
    and an undo past them is rejected with the reason, the trial training on."""
    import threading

    from steer.checkpoints import Checkpoints

    def objective(trial: optuna.Trial) -> float:
        loop = Regression()
        with steer.steering(trial, optimizer=loop.opt, model=loop.model, state=loop, poll_interval=0.01,
                            undo_depth=2) as s:
            for step in range(s.start_step + 1, 6001):
                s.step(step, loss=loop.train_step())
                time.sleep(0.0005)  # a few seconds: time for every command below
        return 0.0

    url = f"sqlite:///{tmp_path / 'deep.db'}"
    study = optuna.create_study(storage=url, study_name="deep")
    worker = threading.Thread(target=study.optimize, args=(objective,), kwargs={"n_trials": 1})
    worker.start()
    control = Control.open(study)
    while control.live(0) is None:
        time.sleep(0.01)
    for lr in (0.02, 0.03, 0.04):
        applied(control, "set_lr", 0, lr)
    before = Checkpoints.of(control).of_trial(0, "before")
    assert len(before) == 2  # the state before 0.03 and before 0.04; the one before 0.02 went
    assert applied(control, "undo", 0).result["old"] == "lr 0.03 -> 0.04"
    assert applied(control, "undo", 0).result["old"] == "lr 0.02 -> 0.03"
    third = control.wait(control.request("undo", trial=0, by="tester").id)
    assert third.state == "rejected" and third.reason == (
        "nothing left to undo: a trial keeps the state before its last 2 changes ([checkpoints] undo_depth), "
        "and those are undone")
    worker.join(600)
    assert study.trials[0].state.name == "COMPLETE"
    assert record.attrs(study.trials[0])["steer.effective_params"]["lr"] == 0.02  # where the two undos left it
    assert Checkpoints.of(control).of_trial(0) == []  # its end releases the rest


def test_a_dead_trial_that_is_not_retried_leaves_no_checkpoint(tmp_path):
    """`[checkpoints] retries = 0`: a trial whose worker died ends there, and its checkpoints go with it."""
    (tmp_path / "dead.toml").write_text(spec_text("dead", steps=100).replace("keep = 2", "keep = 2\nretries = 0"))
    spec = steer.load_spec(tmp_path / "dead.toml")
    study = steer.create_study(spec, f"sqlite:///{tmp_path / 'dead.db'}")
    control = Control.open(study)
    trial = study.ask()  # a trial whose worker then died, with a cadence checkpoint of its own
    Checkpoints.of(control).save(trial.number, 50, "cadence", to_bytes({"settings": {}, "loop": {}}))
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert len(checkpoint_files(tmp_path)) == 1
    assert control.retry(study.trials[0]) is None  # not retried: no retries left
    assert checkpoint_files(tmp_path) == [] and Checkpoints.of(control).of_trial(0) == []
    assert len(study.trials) == 1
