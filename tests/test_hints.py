"""A person's hunch into the search: hints, search-space edits and the LR finder, on real studies.

Real `steer run` workers on SQLite; requests through the real CLI (`steer ctl`), as a person
sends them. The rules themselves (what a request may ask, how a hint draws) are in
tests/test_search_space.py; the range test's own behaviour in tests/test_lr_finder.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

import steer
from conftest import run_cli, steer_in_thread
from steer import record
from steer.control import Control
from steer.steering import InvalidChange, Steering

STUDIES = Path(__file__).resolve().parent.parent / "studies"

SPEC = """
[study]
name = "hunch"
seed = 5
[target]
image = "card"
size = 8
[trial]
steps = 20
report_every = 10
backend = "torch"
[sampler]
type = "random"
[pruner]
type = "none"
[space]
lr = { type = "float", low = 1e-4, high = 3e-2, log = true }
optimizer = { type = "categorical", choices = ["adam", "adamw", "sgd"] }
width = { type = "int", low = 8, high = 32, step = 8 }
"""


def ctl(url: str, *args: str) -> dict:
    done = run_cli("ctl", *args, "--storage", url, "--by", "alice", "--json")
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def run(folder, url: str, trials: int) -> None:
    done = run_cli("run", "hunch.toml", "--storage", url, "--trials", str(trials), cwd=folder)
    assert done.returncode == 0, done.stderr


def new_study(folder):
    (folder / "hunch.toml").write_text(SPEC)
    url = f"sqlite:///{folder / 'hunch.db'}"
    run(folder, url, 2)
    return folder, url


@pytest.fixture
def study(tmp_path):
    return new_study(tmp_path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One study for the bad requests: each must leave it as it was, so they can share it."""
    return new_study(tmp_path_factory.mktemp("bad"))


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="hunch", storage=url).trials


def test_a_hint_draws_the_next_trials_near_it_then_fades(study):
    """`hint lr 1e-3 --strength 1 --trials 5` with the study's random sampler: the i-th trial after it
    (i = 0..4) is hinted with probability (5 - i) / 5, so the first one always; a hinted draw lies
    within a factor of 2 of 1e-3 with probability 98.8 % (log-normal, sigma ln 2 / 2.5), and with
    the study seed fixed these draws are fixed too. Trials after the five are never hinted."""
    folder, url = study
    cmd = ctl(url, "hint", "lr", "1e-3", "--strength", "1", "--trials", "5")
    assert cmd["state"] == "applied" and cmd["args"] == {"param": "lr", "value": 1e-3, "strength": 1.0, "trials": 5}
    assert cmd["result"]["new"]["first_trial"] == 2
    run(folder, url, 9)
    ts = trials(url)
    hinted = {t.number: record.read(t).hinted for t in ts}
    assert 2 in {n for n, h in hinted.items() if h}, hinted  # probability 1
    assert all(not hinted[n] for n in (0, 1, 7, 8)), hinted
    for n in range(2, 7):
        if hinted[n]:
            assert set(hinted[n]) == {"lr"} and hinted[n]["lr"] == ts[n].params["lr"]
            assert 0.5e-3 <= ts[n].params["lr"] <= 2e-3, (n, ts[n].params)
            assert ts[n].user_attrs[record.HINTED] == hinted[n]  # shown in optuna-dashboard and trials_dataframe
    shown = run_cli("show", "--storage", url)
    assert "hint: lr near 0.001, strength 1, trials 2-6 (by alice)" in shown.stdout
    assert "hinted lr" in shown.stdout
    compare = run_cli("show", "--compare", "--storage", url).stdout
    assert "hinted vs drawn by the sampler" in compare and "not hinted" in compare
    assert ctl(url, "unhint", "lr")["state"] == "applied"
    assert Control.open(url).hints() == {}


def test_pins_win_over_hints(study):
    folder, url = study
    ctl(url, "hint", "optimizer", "sgd", "--strength", "1", "--trials", "3")
    ctl(url, "pin", "optimizer", "adamw")
    run(folder, url, 4)
    for t in trials(url)[2:]:
        assert t.params["optimizer"] == "adamw" and not record.read(t).hinted


def test_space_edits_bound_later_trials_and_reset(study):
    folder, url = study
    assert ctl(url, "space", "lr", "--low", "1e-3", "--high", "2e-3")["state"] == "applied"
    assert ctl(url, "space", "optimizer", "--choices", "sgd")["state"] == "applied"
    run(folder, url, 6)
    for t in trials(url)[2:]:
        assert 1e-3 <= t.params["lr"] <= 2e-3 and t.params["optimizer"] == "sgd", t.params
        assert t.distributions["lr"] == optuna.distributions.FloatDistribution(1e-3, 2e-3, log=True)
        assert record.attrs(t)[record.SPACE_EDITS] == {"lr": "[0.001, 0.002] log", "optimizer": "sgd"}
    shown = run_cli("show", "--storage", url).stdout
    assert "space: lr [0.001, 0.002] log (spec: [0.0001, 0.03] log) (by alice)" in shown
    cmd = ctl(url, "space", "lr", "--reset")
    assert cmd["state"] == "applied" and cmd["result"]["new"]["low"] == 1e-4
    ctl(url, "space", "optimizer", "--reset")
    run(folder, url, 7)
    assert trials(url)[6].distributions["lr"] == optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)
    assert Control.open(url).space_edits() == {}


@pytest.mark.parametrize("action, kwargs, words", [
    ("hint", dict(param="batch_size", value="8"), "needs a searched parameter: one of lr, optimizer, width"),
    ("space", dict(param=["lr"], options={"low": 1e-3}), "needs a searched parameter"),  # found by fuzzing
    ("hint", dict(param="lr", value="5"), "outside the space"),
    ("hint", dict(param="lr", value="1e-3", options={"strength": "1.5"}), "--strength: got 1.5; allowed: [0, 1]"),
    ("hint", dict(param="lr", value="1e-3", options={"trials": "0"}), "--trials"),
    ("hint", dict(param="optimizer", value="rmsprop"), "rmsprop"),
    ("hint", dict(param="lr", value="1e-3", trial=0), "acts on the study: give no trial"),
    ("unhint", dict(param="lr"), "lr is not hinted"),
    ("space", dict(param="lr", options={"low": "1e-2", "high": "1e-3"}), "empty or inverted"),
    ("space", dict(param="lr", options={"low": "0"}), "allowed: float in [1e-07, 1]"),
    ("space", dict(param="optimizer", options={"choices": ","}), "empty"),
    ("space", dict(param="optimizer", options={"low": "1"}), "takes --choices"),
    ("space", dict(param="width", options={"choices": "8,16"}), "not --choices"),
    ("space", dict(param="optimizer", options={"choices": "adam,rmsprop"}), "rmsprop"),
    ("space", dict(param="lr"), "give --low/--high"),
    ("find_lr", dict(trial=0), "trial 0 is COMPLETE: only running trials can be changed"),
    ("set_lr", dict(trial=0, value=1e-3, options={"low": 1}), "set_lr takes no options"),
])
def test_bad_requests_are_rejected_recorded_and_change_nothing(finished, action, kwargs, words):
    _, url = finished
    control = Control.open(url)
    before = (control.hints(), control.space_edits())
    cmd = control.request(action, by="alice", **kwargs)
    assert cmd.state == "rejected" and words in cmd.reason, cmd.describe()
    assert control.commands()[-1].id == cmd.id and control.commands()[-1].state == "rejected"
    assert (control.hints(), control.space_edits()) == before


def test_the_cli_says_why_a_request_was_rejected(finished):
    _, url = finished
    cmd = ctl(url, "hint", "lr", "5")
    assert cmd["state"] == "rejected" and "outside the space" in cmd["reason"]
    done = run_cli("ctl", "space", "lr", "--low", "1e-2", "--high", "1e-3", "--storage", url)
    assert done.returncode == 1 and "rejected (space lr: --low must be below --high" in done.stdout


def test_options_of_other_actions_are_refused_by_the_cli(finished):
    _, url = finished
    done = run_cli("ctl", "pin", "lr", "1e-3", "--strength", "1", "--storage", url)
    assert done.returncode != 0 and "--strength is an option of hint, not of pin" in done.stderr


def test_find_lr_on_a_running_trial_leaves_it_unchanged(tmp_path):
    """find-lr waits the trial at a step boundary, tests copies, and the trial trains on as if it never
    ran: its replay (which does not repeat the test) gives the same PSNR at every report, bit for bit."""
    spec_text = SPEC.replace("steps = 20", "steps = 3000").replace("report_every = 10", "report_every = 500") \
        + '\n[steering]\npoll_interval = 0.02\n'
    _, url, _, worker, control = steer_in_thread(tmp_path, "hunch", spec_text, n_trials=1)
    cmd = control.wait(control.request("find_lr", trial=0, by="alice").id, timeout=60)
    assert cmd.state == "applied", cmd.describe()
    test = cmd.result["range_test"]
    assert len(test["lrs"]) == len(test["losses"]) >= 10 and test["lrs"] == sorted(test["lrs"])
    assert test["suggestion"] is None or 1e-7 <= test["suggestion"] <= 1.0
    assert cmd.result["new"]["suggestion"] == test["suggestion"] and test["rule"].startswith("steepest descent")
    worker.join(600)
    trial = trials(url)[0]
    assert [e["action"] for e in record.read(trial).interventions] == ["find_lr"]
    assert not record.read(trial).steered  # a range test changes nothing that trains
    replay = run_cli("replay", "--trial", "0", "--storage", url, "--json")
    assert json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr
    shown = run_cli("show", "--trial", "0", "--storage", url).stdout
    assert "LR range test: suggested" in shown or "LR range test: no suggestion" in shown


def test_find_lr_needs_a_loss_to_test_with():
    model = torch.nn.Linear(2, 1)
    knobs = Steering(None, torch.optim.SGD(model.parameters(), lr=0.1), model=model)
    with pytest.raises(InvalidChange, match="lr_range_loss"):
        knobs.apply("find_lr", {})


def test_lr_find_in_a_spec_starts_each_trial_at_the_suggestion(tmp_path):
    (tmp_path / "hunch.toml").write_text(SPEC.replace('lr = { type = "float", low = 1e-4, high = 3e-2, log = true }',
                                                      'lr = "find"'))
    url = f"sqlite:///{tmp_path / 'hunch.db'}"
    run(tmp_path, url, 1)
    trial = trials(url)[0]
    found = record.attrs(trial)[record.LR_FOUND]
    started = record.read(trial).started_with["lr"]
    assert found["suggestion"] is None or started == found["suggestion"]
    replay = run_cli("replay", "--trial", "0", "--storage", url, "--json")
    assert json.loads(replay.stdout)["identical"], replay.stdout + replay.stderr
    assert steer.load_spec(tmp_path / "hunch.toml").fixed["lr"] == "find"


def test_hints_and_space_edits_on_postgresql(tmp_path, pg_url):
    (tmp_path / "hunch.toml").write_text(SPEC)
    spec = steer.load_spec(tmp_path / "hunch.toml")
    study = steer.create_study(spec, pg_url)
    control = Control.open(study)
    assert control.request("hint", param="lr", value=2e-3, options={"strength": 1, "trials": 2}, by="a").state == "applied"
    assert control.request("space", param="lr", options={"low": 1e-3, "high": 4e-3}, by="b").state == "applied"
    assert control.request("hint", param="lr", value=2e-3, options={"strength": 1, "trials": 3},
                           by="a").state == "applied"  # replaces the first
    study.optimize(steer.objective(spec), n_trials=3)
    ts = study.trials
    assert control.hints()["lr"].trials == 3 and all(1e-3 <= t.params["lr"] <= 4e-3 for t in ts)
    assert record.read(ts[0]).hinted  # probability 1


def test_the_hints_benchmark_runs_its_three_arms():
    from steer.bench.hints import K, hints_bench, markdown_table

    rows = hints_bench(seeds=(0,), trials=2, steps=5, size=8, spec=STUDIES / "quick.toml")
    assert [(r["hint"], r["trials"]) for r in rows] == [("none", 2), ("good", 2 + K), ("bad", 2 + K)]
    assert rows[0]["reach"] is not None  # an unhinted run reaches its own best
    table = markdown_table(rows)
    assert "| mean | bad |" in table and f"bad hint, after n + {K} trials" in table
    assert "| 2 |" in table  # two trials of the unhinted run, each hinted run read K later
