"""The objective as a library: real Optuna studies in real SQLite files."""

import optuna
import pytest

import steer
from steer import record
from steer.objective import Objective, baseline_params, suggest_params


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'lib.db'}"


def test_library_use_reports_psnr_and_records_attrs(tiny_spec, storage):
    spec = steer.load_spec(tiny_spec)
    study = steer.create_study(spec, storage)
    study.optimize(steer.objective(spec), n_trials=2)
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert sorted(t.intermediate_values) == [10, 20, 30]
        assert t.value == t.intermediate_values[30] and t.value > 5.0
        attrs = record.attrs(t)
        assert attrs["steer.backend"] == "torch" and attrs["steer.device"] == "cpu"
        assert attrs["steer.effective_params"]["lr"] == t.params["lr"]
        assert isinstance(attrs["steer.seed"], int)
    assert study.user_attrs["steer.spec"]["size"] == 16


def test_conditional_params_only_suggested_when_relevant(tiny_spec):
    spec = steer.load_spec(tiny_spec)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"activation": "relu", "lr": 2e-3})
    trial = study.ask()
    params = suggest_params(trial, spec)
    assert "w0" not in trial.params and params["activation"] == "relu"
    study.enqueue_trial({"activation": "sine", "lr": 2e-3, "w0": 12.0})
    trial = study.ask()
    suggest_params(trial, spec)
    assert trial.params["w0"] == 12.0


def test_baseline_trial_is_enqueued_first(write_spec, storage):
    text = write_spec().read_text().replace("seed = 1", "seed = 1\nbaseline = true")
    spec = steer.load_spec(write_spec(text))
    assert baseline_params(spec) == {"lr": 2e-3, "activation": "relu"}  # no w0: not a sine net
    study = steer.create_study(spec, storage)
    study.optimize(steer.objective(spec), n_trials=1)
    first = study.trials[0]
    assert first.params == {"lr": 2e-3, "activation": "relu"} and first.user_attrs["steer.baseline"] is True
    steer.create_study(spec, storage)  # resuming does not enqueue it again
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 1


def test_the_target_is_stored_before_any_trial_runs(tiny_spec, storage):
    """A trial page opened the moment its trial starts decides once whether the study has images: the
    target must be there from the study's creation (the walkthrough found a page that said "no images")."""
    from steer.control import Control

    study = steer.create_study(steer.load_spec(tiny_spec), storage)
    assert study.trials == [] and Control.open(study).has_target()


def test_diverging_trial_is_pruned_with_reason_and_study_goes_on(tiny_spec, storage):
    spec = steer.load_spec(tiny_spec)
    study = steer.create_study(spec, storage)
    objective = Objective(spec)
    objective.target[0, 0, 0] = float("nan")
    study.optimize(objective, n_trials=1)
    objective.target[0, 0, 0] = 0.5
    study.optimize(objective, n_trials=1)
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.PRUNED
    # Checked at the first report, not after every step (reading the loss waits for the GPU).
    assert first.user_attrs["steer.diverged"] == f"training loss became nan by step {spec.report_every}"
    assert first.last_step is None  # the NaN never reached Optuna as a value
    assert second.state == optuna.trial.TrialState.COMPLETE


def test_median_pruner_prunes_and_records_reason(write_spec, storage):
    path = write_spec(extra="").read_text().replace('type = "none"', 'type = "median"\nn_startup_trials = 1')
    spec = steer.load_spec(write_spec(path))
    study = steer.create_study(spec, storage)
    study.enqueue_trial({"lr": 1e-2, "activation": "sine", "w0": 30.0})  # a good first trial
    study.enqueue_trial({"lr": 1e-3, "activation": "relu"})  # much worse at step 10
    study.optimize(steer.objective(spec), n_trials=2)
    second = study.trials[1]
    assert second.state == optuna.trial.TrialState.PRUNED
    assert second.user_attrs["steer.pruned_reason"].startswith("pruned by MedianPruner at step 10")


def test_a_trial_reads_tensors_back_only_when_it_reports(write_spec, storage, monkeypatch):
    """Reading a tensor's value (item, float, bool, tolist, cpu, numpy) makes the host wait for a
    GPU; a trial's loop may do it when it reports or publishes, never once a step. Counted on the
    CPU: the same calls, made by steer's own code (torch's optimizers read their CPU step counters)."""
    import collections
    import sys

    import torch

    text = write_spec().read_text().replace("steps = 30\nreport_every = 10", "steps = 200\nreport_every = 50")
    spec = steer.load_spec(write_spec(text + "\n[steering]\npublish_interval = 60.0\n"))
    study = steer.create_study(spec, storage)
    reads: collections.Counter = collections.Counter()
    for name in ("item", "tolist", "__float__", "__bool__", "cpu", "numpy"):
        def counted(self, *args, _name=name, _original=getattr(torch.Tensor, name), **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("steer"):
                reads[f"{caller}.{_name}"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    study.optimize(steer.objective(spec), n_trials=1)
    monkeypatch.undo()
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    reports = spec.steps // spec.report_every
    # One read a step would be 200 or more; a report reads the loss, the PSNR and the preview.
    assert 0 < sum(reads.values()) <= 6 * reports + 10, reads
