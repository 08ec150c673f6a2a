"""Scale benchmarks: several workers, SQLite and PostgreSQL, readers, killed workers.

- throughput: trials per minute of the quick study run by `steer run --workers N` for
  N = 1, 2, 4 on SQLite and on PostgreSQL, each configuration R times (interleaved, so a
  slow spell of the machine does not land on one configuration): median and range.
- readers: 4 workers on a SQLite quick study while optuna-dashboard serves it (its HTTP
  API hit a few times a second) and a Control reader polls live state and metrics at
  2 Hz: worker, dashboard and reader errors.
- faults: 4 workers, one killed with SIGKILL every 20 s for 2 minutes while commands are
  requested every 100 ms; then the next worker start: interventions lost, trials left
  RUNNING, database errors.

throughput and readers run the packaged `quick` spec (a copy of studies/quick.toml),
faults the packaged `steering` one. PostgreSQL runs need a server whose user may create
databases: each run gets a fresh one (harness.fresh_storage).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna

from steer import record
from steer.bench.harness import (
    count_errors, error_lines, first_trial_control, free_port, fresh_storage, packaged_spec, percentile,
    steer_process, write_spec,
)


# ---- throughput ------------------------------------------------------------- #

def _fixed_work_spec(folder: Path, trials: int) -> Path:
    """The quick study with pruning off and `trials` trials: every run trains the same trials to the end."""
    data = packaged_spec("quick", study={"trials": trials})
    data["pruner"] = {"type": "none"}
    return write_spec(data, folder / "quick-fixed.toml")


def _enqueue_same_trials(spec_path: Path, url: str, trials: int) -> str:
    """Create the study and enqueue `trials` param sets drawn once from its space (seed 0), baseline first.

    Returns the study's name.
    """
    import steer
    from steer.objective import suggest_params

    spec = steer.load_spec(spec_path)
    study = steer.create_study(spec, url)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials - len(study.trials)):
        trial = draw.ask()
        suggest_params(trial, spec)
        study.enqueue_trial(trial.params)
    return spec.name


def _throughput_run(spec: Path, kind: str, n: int, trials: int, folder: Path, pg_url: str | None) -> dict[str, Any]:
    """One `steer run --workers n` of the fixed-work study on a fresh storage of `kind`."""
    with fresh_storage(kind, folder, pg_url) as url:
        name = _enqueue_same_trials(spec, url, trials)
        start = time.perf_counter()
        proc = steer_process("run", str(spec), "--storage", url, "--workers", str(n), cwd=folder,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.communicate()[1]
        wall = time.perf_counter() - start
        done = [t for t in optuna.load_study(study_name=name, storage=url).trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    row = {
        "storage": kind, "workers": n, "trials": len(done), "exit_code": proc.returncode,
        "wall_s": wall, "span_s": span, "trials_per_min": 60 * len(done) / span,
        "steps_per_s": sum(t.user_attrs.get(record.FINAL_STEP, 0) for t in done) / span,
        "mean_trial_s": statistics.fmean(t.duration.total_seconds() for t in done),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in done),
        "errors": count_errors([err]), "error_samples": error_lines([err]), "load_avg_1m": os.getloadavg()[0],
    }
    print(f"throughput {kind} x{n}: {row['trials_per_min']:.1f} trials/min ({row['load_avg_1m']:.1f} load)",
          file=sys.stderr)
    return row


def throughput(workers: tuple[int, ...] = (1, 2, 4), storages: tuple[str, ...] = ("sqlite", "postgresql"),
               trials: int = 8, repeats: int = 3, pg_url: str | None = None) -> dict[str, Any]:
    """Trials per minute of the quick study run by `steer run --workers N` on a fresh storage.

    Every run trains the same `trials` param sets (enqueued) to the end (pruning off), so the
    runs differ only in how many workers share the cores. The trials per minute count from
    the first trial's start to the last one's end (process start-up is left out, `wall_s` has it).
    """
    configs = [(kind, n) for kind in storages for n in workers]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = _fixed_work_spec(Path(tmp), trials)
        for _ in range(repeats):
            runs += [_throughput_run(spec, kind, n, trials, Path(tmp), pg_url) for kind, n in configs]
    summary = []
    for kind, n in configs:
        mine = [r for r in runs if (r["storage"], r["workers"]) == (kind, n)]
        rates = [r["trials_per_min"] for r in mine]
        summary.append({
            "storage": kind, "workers": n, "runs": len(mine), "trials": mine[0]["trials"],
            "trials_per_min": statistics.median(rates), "trials_per_min_min": min(rates),
            "trials_per_min_max": max(rates), "steps_per_s": statistics.median(r["steps_per_s"] for r in mine),
            "mean_trial_s": statistics.median(r["mean_trial_s"] for r in mine),
            "errors": sum(r["errors"] for r in mine), "failed": sum(r["failed"] for r in mine),
        })
    return {"spec": "quick (studies/quick.toml), pruner off, the same enqueued trials in every run",
            "trials": trials, "repeats": repeats, "summary": summary, "runs": runs}


# ---- readers ---------------------------------------------------------------- #

def readers(seconds: float = 60.0, workers: int = 4) -> dict[str, Any]:
    """`workers` workers on a SQLite quick study, read all the while by optuna-dashboard and a Control reader."""
    from steer.control import Control

    data = packaged_spec("quick")
    name = data["study"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_spec(data, Path(tmp) / "quick.toml")
        database = Path(tmp) / f"{name}.db"
        url = f"sqlite:///{database}"
        run = steer_process("run", str(spec), "--storage", url, "--workers", str(workers), "--trials", "100000",
                            "--timeout", str(seconds), cwd=Path(tmp), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
        while not database.exists() and run.poll() is None:
            time.sleep(0.1)
        port = free_port()
        dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), url,
                                      "--port", str(port), "--host", "127.0.0.1", "--quiet"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop = threading.Event()
        http = {"requests": 0, "errors": [], "latency": []}
        reads = {"polls": 0, "errors": []}

        def hit_dashboard() -> None:
            base, i = f"http://127.0.0.1:{port}", 0
            while not stop.is_set():
                path = ("/api/studies", "/api/studies/1?after=0", "/api/studies/1/plot/timeline")[i % 3]
                if i % 25 == 24:
                    path = "/api/studies/1/param_importances"
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(base + path, timeout=30) as resp:
                        resp.read()
                    http["requests"] += 1
                    http["latency"].append(time.perf_counter() - t0)
                except urllib.error.HTTPError as exc:
                    http["errors"].append(f"{path}: HTTP {exc.code}")
                except OSError as exc:  # not up yet: not counted until the first answer
                    if http["requests"]:
                        http["errors"].append(f"{path}: {exc}")
                i += 1
                time.sleep(0.2)

        def poll_control() -> None:
            control = None
            while not stop.is_set():
                try:
                    control = control or Control.open(url, name)
                    for live in control.live_all():
                        control.metrics(live.trial)
                    reads["polls"] += 1
                except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure, of any kind
                    if control is not None:
                        reads["errors"].append(repr(exc))
                time.sleep(0.5)

        threads = [threading.Thread(target=hit_dashboard), threading.Thread(target=poll_control)]
        for t in threads:
            t.start()
        err = run.communicate(timeout=seconds + 300)[1]
        stop.set()
        for t in threads:
            t.join()
        dashboard.terminate()
        dash_err = dashboard.communicate(timeout=30)[1]
        study = optuna.load_study(study_name=name, storage=url)
        return {
            "workers": workers, "seconds": seconds, "exit_code": run.returncode,
            "worker_errors": count_errors([err]),
            "trials_finished": sum(t.state.is_finished() for t in study.trials),
            "trials_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "dashboard_requests": http["requests"], "dashboard_errors": len(http["errors"]) + count_errors([dash_err]),
            "dashboard_p50_ms": 1000 * percentile(http["latency"], 0.5) if http["latency"] else None,
            "dashboard_max_ms": 1000 * max(http["latency"]) if http["latency"] else None,
            "control_polls": reads["polls"], "control_errors": len(reads["errors"]),
            "error_samples": (http["errors"] + reads["errors"])[:5],
        }


# ---- faults ----------------------------------------------------------------- #

def faults(storage: str = "sqlite", seconds: float = 120.0, kill_every: float = 20.0, workers: int = 4,
           interval: float = 0.1, pg_url: str | None = None, heartbeat: int = 5, grace: int = 20) -> dict[str, Any]:
    """`workers` workers, one SIGKILLed (and replaced) every `kill_every` s while commands stream in."""
    rng = random.Random(0)
    data = packaged_spec("steering", study={"trials": 100_000}, target={"size": 32},
                         trial={"steps": 400, "report_every": 50},
                         steering={"heartbeat_interval": heartbeat, "grace_period": grace})
    name = data["study"]["name"]
    with tempfile.TemporaryDirectory() as tmp, fresh_storage(storage, Path(tmp), pg_url) as url:
        spec = write_spec(data, Path(tmp) / "bench.toml")
        logs: list[Path] = []

        def worker() -> subprocess.Popen:  # stderr to a file: nobody reads a pipe while it runs
            logs.append(Path(tmp) / f"worker{len(logs)}.log")
            with logs[-1].open("w") as log:
                return steer_process("run", str(spec), "--storage", url, cwd=Path(tmp), threads=1,
                                     stdout=subprocess.DEVNULL, stderr=log)

        procs = [worker()]
        control = first_trial_control(url, name, procs[0], timeout=120, log=logs[0])
        procs += [worker() for _ in range(workers - 1)]
        killed: list[subprocess.Popen] = []
        sent, request_errors = [], []
        stop = threading.Event()

        def requester() -> None:
            i = 0
            while not stop.is_set():
                try:
                    running = [t.number for t in control.study().get_trials(
                        deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
                    if running:
                        sent.append(control.request("set_lr", trial=running[i % len(running)],
                                                    value=1e-3 * (1 + i % 7), by="bench").id)
                        i += 1
                except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure, of any kind
                    request_errors.append(repr(exc))
                time.sleep(interval)

        thread = threading.Thread(target=requester)
        thread.start()
        start = time.monotonic()
        next_kill = start + kill_every
        while time.monotonic() - start < seconds:
            time.sleep(max(0.0, min(next_kill, start + seconds) - time.monotonic()))
            if time.monotonic() >= next_kill:
                victim = procs.pop(rng.randrange(len(procs)))
                victim.send_signal(signal.SIGKILL)
                killed.append(victim)
                procs.append(worker())
                next_kill += kill_every
        stop.set()
        thread.join()
        for p in procs:
            p.terminate()  # SIGTERM: the survivors stop cleanly
        for p in procs + killed:
            p.wait(120)
        time.sleep(grace + heartbeat + 1)  # every killed worker's last heartbeat is now past the grace period
        after = steer_process("run", str(spec), "--storage", url, "--trials", "1", cwd=Path(tmp), threads=1,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = [log.read_text() for log in logs] + [after.communicate(timeout=120)[1]]
        study = control.study()
        commands = control.commands()
        recorded = {e["command"] for t in study.trials for e in t.user_attrs.get(record.INTERVENTIONS, [])}
        applied = {c.id for c in commands if c.state == "applied"}
        return {
            "storage": storage, "workers": workers, "seconds": seconds, "kill_every_s": kill_every,
            "heartbeat_interval_s": heartbeat, "grace_period_s": grace,
            "workers_killed": len(killed), "requests_sent": len(sent), "request_errors": len(request_errors),
            "trials_finished": sum(t.state.is_finished() for t in study.trials),
            "trials_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "trials_running_after_next_start": sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials),
            "states": {s: sum(c.state == s for c in commands) for s in ("pending", "applied", "rejected", "expired")},
            "rejected_reasons": dict(collections.Counter(c.reason for c in commands if c.state == "rejected")),
            "lost_interventions": len(applied - recorded),
            "database_errors": count_errors(stderr) + len(request_errors),
            "retried_database_errors": sum(text.count("retrying") for text in stderr),
            "clean_exit_codes": sorted(p.returncode for p in procs) + [after.returncode],
            "error_samples": request_errors[:5],
        }
