"""Steering and scale benchmarks. They print figures; they assert nothing.

    python -m steer.benchmarks all --json docs/steering-bench.json
    python -m steer.benchmarks scale --pg-url postgresql+psycopg://steer:steer@127.0.0.1:55432/steer \
        --json docs/scale-bench.json

- latency: request -> applied for N `set_lr` requests to a running trial (from the
  times the control plane records), p50 / p95 / max.
- overhead: training steps per second of the same trial with steering off and on.
- concurrency: W worker processes on one SQLite study while another process
  requests a command every 100 ms for D seconds: "database is locked" errors,
  unresolved commands, applied commands missing from the trials' records.
- throughput: trials per minute of `studies/quick.toml` run by `steer run --workers N`
  for N = 1, 2, 4 on SQLite and on PostgreSQL, each configuration R times (interleaved,
  so a slow spell of the machine does not land on one configuration): median and range.
- readers: 4 workers on a SQLite study while optuna-dashboard serves it (its HTTP API
  hit a few times a second) and a Control reader polls live state and metrics at 2 Hz:
  worker, dashboard and reader errors.
- faults: 4 workers, one killed with SIGKILL every 20 s for 2 minutes while commands
  are requested every 100 ms; then the next worker start: interventions lost, trials
  left RUNNING, database errors.

The `scale` group runs the last three; PostgreSQL runs need a server (`--pg-url`,
default `$STEER_TEST_PG_URL`) whose user may create databases: each run gets a fresh one.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import optuna

SPEC = """
[study]
name = "bench"
trials = {trials}
seed = 0
[target]
image = "card"
size = {size}
[trial]
steps = {steps}
report_every = {report_every}
backend = "torch"
[pruner]
type = "none"
[steering]
enabled = {enabled}
[space]
lr = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
encoding = "fourier"
fourier_sigma = 4.0
"""


def _write_spec(folder: Path, **kw: Any) -> Path:
    values = {"trials": 1, "size": 64, "steps": 1_000_000, "report_every": 100, "enabled": "true", **kw}
    path = folder / "bench.toml"
    path.write_text(SPEC.format(**values))
    return path


def _worker(spec: Path, threads: int = 1) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, "-m", "steer", "run", str(spec)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _control(url: str, proc: subprocess.Popen, timeout: float = 60.0):
    from steer.control import Control
    from steer.errors import UserError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {proc.stderr.read()}")
        try:
            control = Control.open(url, "bench")
            if control.live(0) is not None:
                return control
        except UserError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the worker did not start a trial in time")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(requests: int = 60) -> dict[str, Any]:
    """Request -> applied latency for `requests` set_lr commands to one running trial."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = _write_spec(Path(tmp))
        proc = _worker(spec)
        try:
            control = _control(f"sqlite:///{Path(tmp) / 'bench.db'}", proc)
            lat = []
            for i in range(requests):
                cmd = control.wait(control.request("set_lr", trial=0, value=1e-3 * (1 + i % 7), by="bench").id)
                if cmd.state != "applied":
                    raise RuntimeError(cmd.describe())
                lat.append(cmd.resolved_at - cmd.requested_at)
                time.sleep(0.05 + (i % 5) * 0.03)  # spread requests over the poll phase
        finally:
            proc.kill()
            proc.wait()
    return {"requests": requests, "p50_s": _pct(lat, 0.5), "p95_s": _pct(lat, 0.95), "max_s": max(lat),
            "mean_s": statistics.fmean(lat), "poll_interval_s": 0.2}


def overhead(steps: int = 3000, repeats: int = 3) -> dict[str, Any]:
    """Steps per second of the same trial (same seed and params) with steering off and on."""
    import torch

    import steer

    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for mode in ("off", "on"):
                folder = Path(tmp) / f"{mode}{r}"
                folder.mkdir()
                spec = steer.load_spec(_write_spec(folder, steps=steps, report_every=steps // 10,
                                                   enabled="true" if mode == "on" else "false"))
                study = steer.create_study(spec, f"sqlite:///{folder / 'bench.db'}")
                study.enqueue_trial({"lr": 3e-3})
                study.optimize(steer.objective(spec), n_trials=1)
                rates[mode].append(steps / study.trials[0].user_attrs["steer.train_seconds"])
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {"steps": steps, "repeats": repeats, "image": "64x64", "torch_threads": 1,
            "steps_per_s_off": off, "steps_per_s_on": on, "slowdown_pct": 100.0 * (off - on) / off,
            "all_off": rates["off"], "all_on": rates["on"]}


def concurrency(workers: int = 4, seconds: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
    """W workers on one SQLite study, a command every `interval` s for `seconds`."""
    from steer.control import Control

    with tempfile.TemporaryDirectory() as tmp:
        spec = _write_spec(Path(tmp), size=32, steps=400, report_every=50, trials=10_000)
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        procs = [_worker(spec)]
        _control(url, procs[0])
        procs += [_worker(spec) for _ in range(workers - 1)]
        control = Control.open(url, "bench")
        sent, request_errors = 0, []
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            running = [t.number for t in control.study().get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
            try:
                if running:
                    control.request("set_lr", trial=running[i % len(running)], value=1e-3 * (1 + i % 7), by="bench")
                    sent += 1
            except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure, of any kind
                request_errors.append(repr(exc))
            i += 1
            time.sleep(interval)
        for p in procs:
            p.terminate()  # SIGTERM, like Ctrl-C: the running trials end FAIL, the workers exit
        stderr = []
        for p in procs:
            try:
                stderr.append(p.communicate(timeout=60)[1])
            except subprocess.TimeoutExpired:
                p.kill()
                stderr.append(p.communicate()[1])
        control.sweep()
        commands = control.commands()
        study = control.study()
        recorded = {e["command"] for t in study.trials for e in t.user_attrs.get("steer.interventions", [])}
        applied = {c.id for c in commands if c.state == "applied"}
        return {
            "workers": workers, "seconds": seconds, "requests_sent": sent,
            "trials_finished": sum(t.state.is_finished() for t in study.trials),
            "database_locked_errors": sum(e.count("database is locked") for e in stderr + request_errors),
            "request_errors": len(request_errors),
            "states": {s: sum(c.state == s for c in commands) for s in ("pending", "applied", "rejected", "expired")},
            "applied_missing_from_record": len(applied - recorded),
            "worker_exit_codes": [p.returncode for p in procs],
        }

# ---- scale ------------------------------------------------------------------ #

QUICK_SPEC = Path(__file__).resolve().parent.parent / "studies" / "quick.toml"
ERROR_MARKS = ("Traceback", "OperationalError", "StorageInternalError", "ControlError", "database is locked")


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it (no `+driver`), password included."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_pg_database(base_url: str, prefix: str = "steer_bench") -> Iterator[str]:
    """A new, empty database on the server of `base_url` (its user needs CREATEDB), dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _storage(kind: str, folder: Path, pg_url: str | None) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    else:
        if not pg_url:
            raise SystemExit("PostgreSQL runs need --pg-url or $STEER_TEST_PG_URL")
        with fresh_pg_database(pg_url) as url:
            yield url


def _steer(*args: str, cwd: Path, threads: int | None = None, **popen: Any) -> subprocess.Popen:
    """`steer ARGS` in a subprocess, run in `cwd` (a PostgreSQL study's artifacts go to ./STUDY-artifacts)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "steer", *args], env=env, text=True, cwd=cwd, **popen)


def _errors(texts: list[str]) -> int:
    return sum(line.count(mark) for text in texts for line in text.splitlines() for mark in ERROR_MARKS)


def _error_lines(texts: list[str], most: int = 5) -> list[str]:
    """The first lines that `_errors` counts, to say what went wrong."""
    return [line for text in texts for line in text.splitlines() if any(m in line for m in ERROR_MARKS)][:most]


def _fixed_work_spec(folder: Path, trials: int) -> Path:
    """The quick study with pruning off: every run then trains the same trials to the end."""
    import re

    text = re.sub(r"(?ms)^\[pruner\].*?(?=^\[)", '[pruner]\ntype = "none"\n\n', QUICK_SPEC.read_text())
    text = re.sub(r"(?m)^trials = \d+", f"trials = {trials}", text)
    path = folder / "quick-fixed.toml"
    path.write_text(text)
    return path


def _enqueue_same_trials(spec_path: Path, url: str, trials: int) -> None:
    """Create the study and enqueue `trials` param sets drawn once from its space (seed 0), baseline first."""
    import steer
    from steer.objective import suggest_params

    spec = steer.load_spec(spec_path)
    study = steer.create_study(spec, url)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials - len(study.trials)):
        trial = draw.ask()
        suggest_params(trial, spec)
        study.enqueue_trial(trial.params)


def _throughput_run(spec: Path, kind: str, n: int, trials: int, folder: Path, pg_url: str | None) -> dict[str, Any]:
    with _storage(kind, folder, pg_url) as url:
        _enqueue_same_trials(spec, url, trials)
        start = time.perf_counter()
        proc = _steer("run", str(spec), "--storage", url, "--workers", str(n), cwd=folder,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.communicate()[1]
        wall = time.perf_counter() - start
        done = [t for t in optuna.load_study(study_name="quick", storage=url).trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    row = {
        "storage": kind, "workers": n, "trials": len(done), "exit_code": proc.returncode,
        "wall_s": wall, "span_s": span, "trials_per_min": 60 * len(done) / span,
        "steps_per_s": sum(t.user_attrs.get("steer.final_step", 0) for t in done) / span,
        "mean_trial_s": statistics.fmean(t.duration.total_seconds() for t in done),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in done),
        "errors": _errors([err]), "error_samples": _error_lines([err]), "load_avg_1m": os.getloadavg()[0],
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
    return {"spec": "studies/quick.toml, pruner off, the same enqueued trials in every run", "trials": trials,
            "repeats": repeats, "summary": summary, "runs": runs}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readers(seconds: float = 60.0, workers: int = 4) -> dict[str, Any]:
    """`workers` workers on a SQLite quick study, read all the while by optuna-dashboard and a Control reader."""
    from steer.control import Control

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'quick.db'}"
        run = _steer("run", str(QUICK_SPEC), "--storage", url, "--workers", str(workers), "--trials", "100000",
                     "--timeout", str(seconds), cwd=Path(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not Path(tmp, "quick.db").exists() and run.poll() is None:
            time.sleep(0.1)
        port = _free_port()
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
                    control = control or Control.open(url, "quick")
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
        study = optuna.load_study(study_name="quick", storage=url)
        return {
            "workers": workers, "seconds": seconds, "exit_code": run.returncode, "worker_errors": _errors([err]),
            "trials_finished": sum(t.state.is_finished() for t in study.trials),
            "trials_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "dashboard_requests": http["requests"], "dashboard_errors": len(http["errors"]) + _errors([dash_err]),
            "dashboard_p50_ms": 1000 * _pct(http["latency"], 0.5) if http["latency"] else None,
            "dashboard_max_ms": 1000 * max(http["latency"]) if http["latency"] else None,
            "control_polls": reads["polls"], "control_errors": len(reads["errors"]),
            "error_samples": (http["errors"] + reads["errors"])[:5],
        }


FAULT_SPEC = SPEC.replace("enabled = {enabled}\n",
                          "enabled = {enabled}\nheartbeat_interval = {heartbeat}\ngrace_period = {grace}\n")


def faults(storage: str = "sqlite", seconds: float = 120.0, kill_every: float = 20.0, workers: int = 4,
           interval: float = 0.1, pg_url: str | None = None, heartbeat: int = 5, grace: int = 20) -> dict[str, Any]:
    """`workers` workers, one SIGKILLed (and replaced) every `kill_every` s while commands stream in."""
    from steer.control import Control
    from steer.errors import UserError

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp, _storage(storage, Path(tmp), pg_url) as url:
        spec = Path(tmp) / "bench.toml"
        spec.write_text(FAULT_SPEC.format(trials=100_000, size=32, steps=400, report_every=50, enabled="true",
                                          heartbeat=heartbeat, grace=grace))

        logs: list[Path] = []

        def worker() -> subprocess.Popen:  # stderr to a file: nobody reads a pipe while it runs
            logs.append(Path(tmp) / f"worker{len(logs)}.log")
            with logs[-1].open("w") as log:
                return _steer("run", str(spec), "--storage", url, cwd=Path(tmp), threads=1,
                              stdout=subprocess.DEVNULL, stderr=log)

        procs = [worker()]
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(UserError):
                control = Control.open(url, "bench")
                if control.live(0) is not None:
                    break
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"the first worker did not start a trial: {logs[0].read_text()}")
            time.sleep(0.2)
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
        after = _steer("run", str(spec), "--storage", url, "--trials", "1", cwd=Path(tmp), threads=1,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = [log.read_text() for log in logs] + [after.communicate(timeout=120)[1]]
        study = control.study()
        commands = control.commands()
        recorded = {e["command"] for t in study.trials for e in t.user_attrs.get("steer.interventions", [])}
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
            "database_errors": _errors(stderr) + len(request_errors),
            "retried_database_errors": sum(text.count("retrying") for text in stderr),
            "clean_exit_codes": sorted(p.returncode for p in procs) + [after.returncode],
            "error_samples": request_errors[:5],
        }


def markdown(results: dict[str, Any]) -> str:
    out = []
    if "latency" in results:
        r = results["latency"]
        out += ["| steering latency (request -> applied) | value |", "|---|---:|",
                f"| requests | {r['requests']} |", f"| p50 | {r['p50_s'] * 1000:.0f} ms |",
                f"| p95 | {r['p95_s'] * 1000:.0f} ms |", f"| max | {r['max_s'] * 1000:.0f} ms |", ""]
    if "overhead" in results:
        r = results["overhead"]
        out += ["| training speed, same trial | steps / s |", "|---|---:|",
                f"| steering off | {r['steps_per_s_off']:.1f} |", f"| steering on | {r['steps_per_s_on']:.1f} |",
                f"| slowdown | {r['slowdown_pct']:.1f} % |", ""]
    if "concurrency" in results:
        r = results["concurrency"]
        out += ["| concurrency | value |", "|---|---:|", f"| workers | {r['workers']} |",
                f"| duration | {r['seconds']:.0f} s |", f"| commands requested | {r['requests_sent']} |",
                f"| trials finished | {r['trials_finished']} |",
                f"| 'database is locked' errors | {r['database_locked_errors']} |",
                f"| commands left pending | {r['states']['pending']} |",
                f"| applied / rejected / expired | {r['states']['applied']} / {r['states']['rejected']} / "
                f"{r['states']['expired']} |",
                f"| applied but missing from the trial's record | {r['applied_missing_from_record']} |", ""]
    if "throughput" in results:
        out += ["| storage | workers | runs x trials | trials / min (median, range) | training steps / s "
                "| mean trial | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['storage']} | {r['workers']} | {r['runs']} x {r['trials']} | {r['trials_per_min']:.1f} "
                f"({r['trials_per_min_min']:.1f} - {r['trials_per_min_max']:.1f}) | {r['steps_per_s']:.0f} | "
                f"{r['mean_trial_s']:.1f} s | {r['errors']} |" for r in results["throughput"]["summary"]]
        out.append("")
    if "readers" in results:
        r = results["readers"]
        out += ["| readers under load (SQLite) | value |", "|---|---:|", f"| workers | {r['workers']} |",
                f"| duration | {r['seconds']:.0f} s |", f"| trials finished | {r['trials_finished']} |",
                f"| worker errors | {r['worker_errors']} (exit status {r['exit_code']}) |",
                f"| optuna-dashboard API requests | {r['dashboard_requests']} |",
                f"| optuna-dashboard errors | {r['dashboard_errors']} |",
                f"| optuna-dashboard p50 / max latency | {r['dashboard_p50_ms'] or 0:.0f} / "
                f"{r['dashboard_max_ms'] or 0:.0f} ms |",
                f"| Control reader polls (live_all + metrics) | {r['control_polls']} |",
                f"| Control reader errors | {r['control_errors']} |", ""]
    for r in results.get("faults", []):
        out += [f"| fault run, {r['storage']} | value |", "|---|---:|",
                f"| workers / killed (SIGKILL every {r['kill_every_s']:.0f} s) | {r['workers']} / "
                f"{r['workers_killed']} |",
                f"| duration | {r['seconds']:.0f} s |", f"| commands requested | {r['requests_sent']} |",
                f"| applied / rejected / expired / pending | {r['states']['applied']} / {r['states']['rejected']} / "
                f"{r['states']['expired']} / {r['states']['pending']} |",
                f"| lost interventions (applied, not in the trial's record) | {r['lost_interventions']} |",
                f"| trials finished / FAIL | {r['trials_finished']} / {r['trials_failed']} |",
                f"| trials left RUNNING after the next worker start | {r['trials_running_after_next_start']} |",
                f"| database errors | {r['database_errors']} |",
                f"| transient errors retried | {r['retried_database_errors']} |", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steer.benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("latency", "overhead", "concurrency", "all", "throughput", "readers",
                                          "faults", "scale"))
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"], choices=("sqlite", "postgresql"))
    parser.add_argument("--trials", type=int, default=8, help="trials per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per configuration")
    parser.add_argument("--fault-seconds", type=float, default=120.0)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--pg-url", default=os.environ.get("STEER_TEST_PG_URL"),
                        help="a PostgreSQL server whose user may create databases (default: $STEER_TEST_PG_URL)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from steer.workers import cpu_count

    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {cpu_count()} cores",
                               "python": platform.python_version(), "optuna": optuna.__version__,
                               "date": time.strftime("%Y-%m-%d")}
    sections = {
        "latency": (("latency", "all"), lambda: latency(args.requests)),
        "overhead": (("overhead", "all"), overhead),
        "concurrency": (("concurrency", "all"), lambda: concurrency(args.workers, args.seconds)),
        "throughput": (("throughput", "scale"),
                       lambda: throughput(storages=tuple(args.storages), trials=args.trials, repeats=args.repeats,
                                          pg_url=args.pg_url)),
        "readers": (("readers", "scale"), lambda: readers(args.seconds, args.workers)),
        "faults": (("faults", "scale"), lambda: [faults(kind, args.fault_seconds, args.kill_every, args.workers,
                                                        pg_url=args.pg_url) for kind in args.storages]),
    }
    for key, (wanted_by, measure) in sections.items():
        if args.which in wanted_by:
            results[key] = measure()
            if args.json:  # after each section: a long run that fails later keeps what it measured
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
