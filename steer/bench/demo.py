"""The demo as a new user meets it: `steer run studies/demo.toml --workers 2 --dash`, timed.

For each target image (the built-in card and the built-in photographs) the demo spec runs
exactly as `make demo` runs it, with its target changed and nothing else, until its budget
is spent. Measured from the outside, as a person would see it:

- app up: seconds from the command to the steering app answering its first page;
- first trial: seconds from the command to the first RUNNING trial;
- trial length: seconds per trial, for the trials that ran to the end and for all;
- study length: seconds from the command to the last trial's end;
- the baseline (trial 0: the seeds' hand-picked 2-64-64-3 ReLU net, Adam 2e-3, same image and
  steps) against the search's best trial, in dB.

`--trials` shortens the search (the photographs need no quarter of an hour each to show
whether the search beats the baseline); the timings of a shortened run still hold per trial.
"""

from __future__ import annotations

import contextlib
import signal
import statistics
import subprocess
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna

from steer import record
from steer.bench.harness import free_port, steer_process, write_spec

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def _answers(url: str) -> bool:
    with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    return False


def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def run_demo(spec: Path, image: str, trials: int | None, workers: int, folder: Path) -> dict[str, Any]:
    """One demo run on `image`; its figures (see the module's docstring)."""
    with spec.open("rb") as f:
        data = tomllib.load(f)
    data["target"]["image"] = image
    if trials is not None:
        data["study"]["trials"] = trials
    budget = data["study"]["trials"]
    path = write_spec(data, folder / f"demo-{image}.toml")
    study, url = data["study"]["name"], f"sqlite:///{folder / data['study']['name']}.db"
    port = free_port()
    log = (folder / f"demo-{image}.log").open("w")
    start, started_at = time.monotonic(), time.time()
    proc = steer_process("run", str(path), "--storage", url, "--workers", str(workers), "--dash",
                         "--dash-port", str(port), cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    app_up = None
    try:
        while True:
            time.sleep(0.5)
            now = time.monotonic() - start
            if proc.poll() is not None:
                raise RuntimeError(f"steer run exited ({proc.returncode}): {(folder / f'demo-{image}.log').read_text()}")
            if app_up is None and _answers(f"http://127.0.0.1:{port}/"):
                app_up = now
            got = _trials(url, study) if app_up is not None else []
            finished = [t for t in got if t.state in FINISHED]
            if len(finished) >= budget and not any(t.state == optuna.trial.TrialState.RUNNING for t in got):
                break
    finally:
        proc.send_signal(signal.SIGINT)  # --dash keeps the app up after the study: Ctrl-C, as a person would
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    got = _trials(url, study)
    # Optuna stamps a trial's start and end with the local clock (naive datetimes): against the command's start.
    first = min(t.datetime_start for t in got if t.datetime_start is not None).timestamp() - started_at
    last = max(t.datetime_complete for t in got if t.datetime_complete is not None).timestamp() - started_at
    return {"image": image, "trials": budget, "workers": workers, "app_up_s": round(app_up, 1),
            "first_trial_running_s": round(first, 1), "study_s": round(last, 1), **_outcome(got)}


def _outcome(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Trial lengths, states, and the best trial against the baseline."""
    def seconds(t: optuna.trial.FrozenTrial) -> float:
        return (t.datetime_complete - t.datetime_start).total_seconds()

    ended = [t for t in trials if t.datetime_complete is not None and t.datetime_start is not None]
    complete = [t for t in ended if t.state == optuna.trial.TrialState.COMPLETE]
    baseline = next((t for t in complete if record.read(t).baseline), None)
    searched = [t for t in complete if t is not baseline]
    best = max(searched, key=lambda t: t.value, default=None)
    lengths = [seconds(t) for t in ended]
    complete_lengths = [seconds(t) for t in complete]
    return {
        "states": {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "trial_s": {"min": round(min(lengths), 1), "median": round(statistics.median(lengths), 1),
                    "max": round(max(lengths), 1)},
        "complete_trial_s": {"min": round(min(complete_lengths), 1),
                             "median": round(statistics.median(complete_lengths), 1)} if complete_lengths else None,
        "baseline_db": None if baseline is None else round(baseline.value, 2),
        "best_db": None if best is None else round(best.value, 2),
        "best_trial": None if best is None else best.number,
        "best_params": None if best is None else best.params,
        "margin_db": None if baseline is None or best is None else round(best.value - baseline.value, 2),
    }


def demo(spec: Path, images: list[str], trials: int | None, workers: int = 2) -> list[dict[str, Any]]:
    """The demo run once per image, one after another (each has the machine to itself)."""
    if not spec.is_file():
        raise SystemExit(f"demo benchmark: no spec {spec} (run it from the repository, or give --spec)")
    results = []
    with tempfile.TemporaryDirectory(prefix="steer-demo-bench-") as tmp:
        for image in images:
            folder = Path(tmp) / image  # a study database of its own
            folder.mkdir()
            results.append(run_demo(spec.resolve(), image, trials, workers, folder))
            print(f"demo on {image}: {results[-1]}", flush=True)
    return results
