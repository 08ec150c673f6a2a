"""`steer run --workers N --gpus LIST`: each worker its own GPU, round-robin, checked before anything starts.

No GPU here: the choosing and its errors are checked as functions and through the CLI, the plumbing
with real worker processes that report the CUDA_VISIBLE_DEVICES they were given, and the record with a
real trial.
"""

from __future__ import annotations

import io
import sys

import optuna
import pytest
from rich.console import Console

import steer
from steer import record
from steer.errors import UserError
from steer.launch import Workers, assign_gpus, parse_gpus, worker_gpus
from conftest import run_cli


def test_gpus_are_parsed_or_refused_with_the_reason():
    assert parse_gpus("0,1") == [0, 1] and parse_gpus(" 3 ") == [3]
    for bad, reason in (("x", "GPU indices separated by commas"), ("-1", "GPU indices"), ("", "GPU indices"),
                        ("0,,1", "GPU indices"), ("1,1", "each GPU once")):
        with pytest.raises(UserError, match=reason):
            parse_gpus(bad)


def test_without_cuda_no_worker_is_given_a_gpu_and_asking_for_one_is_an_error():
    assert worker_gpus(3, None) == [None, None, None]
    with pytest.raises(UserError, match=r"--gpus 0,1: torch sees no CUDA device on this machine"):
        worker_gpus(2, [0, 1])


def test_gpus_are_assigned_in_turn_and_follow_a_visible_devices_list():
    """The choosing, for machines this one is not (torch here sees no GPU)."""
    assert assign_gpus(3, None, 1, None) == [None] * 3  # one GPU: nothing to choose
    assert assign_gpus(5, None, 2, None) == ["0", "1", "0", "1", "0"]
    assert assign_gpus(3, [1, 3], 4, None) == ["1", "3", "1"]
    assert assign_gpus(2, None, 2, "5,7") == ["5", "7"]  # the user's own CUDA_VISIBLE_DEVICES renumbers
    assert assign_gpus(2, [1], 2, "GPU-ab, GPU-cd") == ["GPU-cd", "GPU-cd"]
    with pytest.raises(UserError, match=r"no GPU 2, 5 here; torch sees 2 \(0 to 1\)"):
        assign_gpus(2, [0, 2, 5], 2, None)


def test_each_worker_process_sees_only_its_own_gpu():
    code = "import os, sys; sys.stderr.write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + '\\n')"
    out = io.StringIO()
    pool = Workers([sys.executable, "-c", code], 4, Console(file=out, width=200), ["0", "1", "0", None])
    for proc in pool.procs:
        proc.wait(timeout=60)  # each writes its line and exits
    assert pool.stop(timeout=30)  # joins the threads that echo their output
    lines = sorted(line for line in out.getvalue().splitlines() if line.startswith("worker"))
    assert lines == ["worker 1: 0", "worker 2: 1", "worker 3: 0", "worker 4: unset"]


def test_the_cli_refuses_gpus_it_cannot_honour_before_making_a_study(tiny_spec):
    alone = run_cli("run", str(tiny_spec), "--gpus", "0")
    assert alone.returncode == 2 and "--gpus gives each of --workers N its own GPU: add --workers" in alone.stderr
    no_cuda = run_cli("run", str(tiny_spec), "--workers", "2", "--gpus", "0,1")
    assert no_cuda.returncode == 2 and "torch sees no CUDA device" in no_cuda.stderr
    assert "Traceback" not in alone.stderr + no_cuda.stderr
    assert not list(tiny_spec.parent.glob("*.db"))  # nothing was created


def test_a_trial_records_the_gpu_its_worker_was_given(tiny_spec, tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'gpus.db'}"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what --gpus gives a worker; torch here has no CUDA
    spec = steer.load_spec(tiny_spec)
    study = steer.create_study(spec, storage)
    study.optimize(steer.objective(spec), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert record.attrs(trial)[record.VISIBLE_GPUS] == "1"
