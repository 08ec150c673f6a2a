"""The honest record: promote re-runs what a person did, the sampler learns from clean runs, export re-trains.

A real study on SQLite: trial 0 is steered (set_lr at one step, set_optimizer
at another), then promoted; its promoted run must train the same schedule from
step 0 with the same seed and reach the same PSNR bit for bit, carry the
schedule as Optuna params, never be pruned, and say where it came from
everywhere a person looks. `steer export` then `steer run` trains it once more.
"""

from __future__ import annotations

import json

import optuna
import pytest

import steer
from conftest import run_cli, steer_in_thread
from steer import record
from steer.control import Control
from steer.sampler import SteerSampler
from steer.storage import study_view

SPEC = """
[study]
name = "promo"
seed = 3
[target]
image = "card"
size = 16
[trial]
steps = 1200
report_every = 100
backend = "torch"
[pruner]
type = "none"
[steering]
poll_interval = 0.02
[space]
lr = { type = "float", low = 1e-3, high = 1e-2, log = true }
optimizer = { type = "categorical", choices = ["adam", "adamw"] }
"""


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    """Trial 0 steered twice and promoted (as trial 1), trial 1 run under a pruner that prunes everything
    else (trial 2 shows it does), and two more promotions of trial 0 enqueued with options."""
    folder = tmp_path_factory.mktemp("promo")
    spec, url, study, worker, control = steer_in_thread(folder, "promo", SPEC, n_trials=1)
    for action, value in (("set_lr", 3e-4), ("set_optimizer", "sgd")):
        cmd = control.wait(control.request(action, trial=0, value=value, by="tester").id)
        assert cmd.state == "applied", cmd.describe()
    worker.join(600)
    promote = control.request("promote", trial=0, by="tester")  # finished: the control plane enqueues it
    assert promote.state == "applied" and promote.result["new"]["trial"] == 1, promote.describe()
    # A pruner that stops every trial at its first report, unless the trial is exempt.
    study.pruner = optuna.pruners.ThresholdPruner(lower=1e9)
    study.optimize(steer.objective(spec), n_trials=2)  # trial 1 (promoted) and trial 2 (sampled)
    options = {}
    for value in ("final-values", "new-seed"):
        cmd = control.request("promote", trial=0, value=value, by="tester")
        assert cmd.state == "applied", cmd.describe()
        options[value] = cmd.result["new"]["trial"]
    return folder, url, optuna.load_study(study_name="promo", storage=url), options


def test_the_promoted_run_trains_the_persons_schedule_bit_for_bit(promoted):
    _, _, study, _ = promoted
    steered, clean, sampled = study.trials[:3]
    at = {e["action"]: e["step"] for e in record.attrs(steered)["steer.interventions"]}
    assert at["set_lr"] < at["set_optimizer"]
    # The steered trial's params got its changes when it ended, each at its step ...
    changes = {f"lr@{at['set_lr']}": 3e-4, f"optimizer@{at['set_optimizer']}": "sgd"}
    assert {k: v for k, v in steered.params.items() if record.is_scheduled(k)} == changes
    started = record.read(steered).started_with  # what trained at step 0: the sampled values, changes left out
    assert {k: started[k] for k in steered.params if k not in changes} == {k: v for k, v in steered.params.items()
                                                                          if k not in changes}
    assert not any(record.is_scheduled(k) for k in started)
    # ... and the promoted run's params are the same schedule: the starting values, and each change at its step.
    assert clean.params == steered.params and clean.distributions == steered.distributions
    assert record.attrs(clean)["steer.seed"] == record.attrs(steered)["steer.seed"]
    # Same seed, same changes at the same steps: the same PSNR at every report.
    assert clean.state.name == "COMPLETE" and clean.value == steered.value
    assert clean.intermediate_values == steered.intermediate_values
    # It trained with what its schedule says, and it is clean: no intervention, not steered.
    assert record.attrs(clean)["steer.effective_params"]["optimizer"] == "sgd"
    assert record.attrs(clean)["steer.effective_params"]["lr"] == 3e-4
    rec = record.read(clean)
    assert not rec.steered and rec.interventions == [] and rec.promoted_from == 0
    # The pruner stopped the sampled trial at its first report; the promoted one was never pruned.
    assert sampled.state.name == "PRUNED" and min(sampled.intermediate_values) == 100
    # The two tie, bit for bit, and Optuna names the older: either way best_params say what trained,
    # and they are the clean run's params (the sampler learns from it, not from trial 0).
    assert study.best_trial.number in (0, 1) and study.best_value == clean.value
    assert study.best_params == clean.params


def test_promote_options(promoted):
    _, _, study, options = promoted
    steered = study.trials[0]
    final = study.trials[options["final-values"]]
    assert final.state.name == "WAITING"
    effective = record.attrs(steered)["steer.effective_params"]
    assert final.params == {} and final.system_attrs["fixed_params"] == effective  # enqueued: trained when run
    assert "steer.schedule" not in record.attrs(final) and record.attrs(final)["steer.overrides"] == effective
    fresh = study.trials[options["new-seed"]]
    assert "steer.seed" not in record.attrs(fresh)  # it draws its own when it runs
    assert record.attrs(fresh)["steer.promotion"] == {"from": 0, "schedule": True, "seed": "new"}


def test_the_sampler_learns_from_clean_runs_only(promoted):
    _, _, study, _ = promoted
    tpe = optuna.samplers.TPESampler(seed=0)
    seen = {}
    for mode in ("exclude", "sampled"):
        sampler = SteerSampler(tpe, steered=mode)
        # What TPE reads (`Study._get_trials`, as its sample_independent does), through the wrapper's view.
        view = sampler._seen(study)
        seen[mode] = [t.number for t in view._get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                                   optuna.trial.TrialState.PRUNED))]
    assert seen["exclude"] == [1, 2]  # not trial 0: steered; its clean run, trial 1, informs the sampler
    assert seen["sampled"] == [0, 1, 2]
    # A hidden trial is still in the study for every other reader.
    assert len(study_view(study, lambda t: True).trials) == 0 and len(study.trials) == 5


def test_provenance_everywhere(promoted):
    _, url, study, options = promoted
    table = run_cli("show", "--storage", url, env={"COLUMNS": "200"})  # a wide terminal: rows on one line
    assert table.returncode == 0, table.stderr
    assert "promoted from #0" in table.stdout and "steered; promoted as #1, #3, #4" in table.stdout
    # The best trial was steered: the table says how to get it again.
    assert "best: trial 0" in table.stdout and "it was steered; its clean run is trial 1 (COMPLETE" in table.stdout
    rows = {r["number"]: r for r in json.loads(run_cli("show", "--storage", url, "--json").stdout)}
    assert rows[1]["promoted_from"] == 0 and rows[0]["promoted_as"] == [1, 3, 4]
    one = run_cli("show", "--storage", url, "--trial", "1", env={"COLUMNS": "200"})
    assert "Promoted from #0: its schedule from step 0 (2 changes), same seed; never pruned automatically." \
        in one.stdout
    zero = run_cli("show", "--storage", url, "--trial", "0", env={"COLUMNS": "200"})
    assert "Promoted as #1, #3, #4." in zero.stdout and "-> 0.0003" in zero.stdout and "-> sgd" in zero.stdout
    detail = json.loads(run_cli("show", "--storage", url, "--trial", "1", "--json").stdout)
    assert detail["promotion"] == {"from": 0, "schedule": True, "seed": "same"} and len(detail["schedule"]) == 2
    # The optuna-dashboard notes of both (optuna-dashboard stores them in the study's system attrs).
    system = study._storage.get_study_system_attrs(study._study_id)

    def note(number):
        trial_id = study.trials[number]._trial_id
        return "".join(v for k, v in sorted(system.items()) if k.startswith(f"dashboard:{trial_id}:note_str:"))

    assert "Promoted from #0" in note(1) and "Promoted as #1, #3, #4." in note(0)
    assert "| optimizer " in note(0) and "-> sgd | tester |" in note(0)


def test_export_then_run_trains_the_trial_again(promoted, tmp_path):
    _, url, study, _ = promoted
    out = tmp_path / "again.toml"
    result = run_cli("export", "--storage", url, "--trial", "0", "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count("[[changes]]") == 2 and 'action = "set_optimizer"' in text
    spec = steer.load_spec(out)
    assert spec.trial_seed == record.attrs(study.trials[0])["steer.seed"] and len(spec.schedule) == 2
    ran = run_cli("run", str(out))
    assert ran.returncode == 0, ran.stderr
    again = optuna.load_study(study_name="promo-trial-0", storage=f"sqlite:///{tmp_path / 'promo-trial-0.db'}")
    assert again.trials[0].value == study.trials[0].value
    scheduled = {k: v for k, v in study.trials[1].params.items() if record.is_scheduled(k)}
    assert again.trials[0].params == scheduled  # the schedule as params, like the promoted run's


def test_bad_promote_and_export_requests(promoted):
    _, url, _, _ = promoted
    control = Control.open(url, "promo")
    before = len(control.study().trials)
    bad = control.request("promote", trial=0, value="twice", by="tester")
    assert bad.state == "rejected" and bad.reason == "promote: got 'twice'; allowed options: final-values, new-seed"
    assert control.commands(trial=0)[-1].state == "rejected"  # recorded
    extra = run_cli("ctl", "promote", "--storage", url, "--trial", "0", "--new-seed", "--", "twice")
    assert extra.returncode == 2 and "promote: unexpected extra arguments: twice" in extra.stderr
    wrong = run_cli("ctl", "set-lr", "--storage", url, "--trial", "0", "1e-3", "--new-seed")
    assert wrong.returncode == 2 and "--new-seed is an option of promote, not of set-lr" in wrong.stderr
    missing = run_cli("export", "--storage", url, "--trial", "99")
    assert missing.returncode == 2 and "no trial 99 in study 'promo'" in missing.stderr
    assert len(control.study().trials) == before  # nothing enqueued by any of them


def test_plain_optuna_tools_work(promoted):
    _, _, study, _ = promoted
    frame = study.trials_dataframe()  # pandas comes with steer: Optuna's own table of the study
    assert list(frame["number"]) == [0, 1, 2, 3, 4] and "params_lr@" in " ".join(frame.columns)


def test_optuna_trials_rows_stay_readable(promoted):
    """`optuna trials` prints every user attribute in full: the record must not widen a steered trial's row."""
    import subprocess
    import sys
    from pathlib import Path

    _, url, _, _ = promoted
    optuna_cli = Path(sys.executable).parent / "optuna"
    result = subprocess.run([str(optuna_cli), "trials", "--study-name", "promo", "--storage", url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    steered = next(line for line in rows if line.split("|")[1].strip() == "0")
    assert "'steer.steered': True" in steered
    assert len(steered) <= 300, f"{len(steered)} characters: {steered}"


def test_a_steered_best_trial_says_how_to_get_it_again(promoted):
    _, _, study, _ = promoted
    rows = record.rows(study.trials)
    assert record.how_to_get_again(rows, 0).startswith("it was steered; its clean run is trial 1 (COMPLETE")
    rows[0]["promoted_as"] = []  # as it stood before it was promoted
    assert record.how_to_get_again(rows, 0).startswith(
        "it was steered, so the sampler does not learn from it: promote it (its page's button, or "
        "`steer ctl promote --trial 0`)")
    rows[0]["params"] = {k: v for k, v in rows[0]["params"].items() if not record.is_scheduled(k)}
    assert record.how_to_get_again(rows, 0).startswith(  # a trial recorded before its changes were params
        "it was steered, so its params do not say what trained: promote it")
    assert record.how_to_get_again(rows, 2).startswith("it trained as its params say")
