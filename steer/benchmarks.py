"""Steering benchmarks: latency, overhead, concurrency. They print figures; they assert nothing.

    python -m steer.benchmarks all --json docs/steering-bench.json

- latency: request -> applied for N `set_lr` requests to a running trial (from the
  times the control plane records), p50 / p95 / max.
- overhead: training steps per second of the same trial with steering off and on.
- concurrency: W worker processes on one SQLite study while another process
  requests a command every 100 ms for D seconds: "database is locked" errors,
  unresolved commands, applied commands missing from the trials' records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steer.benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("latency", "overhead", "concurrency", "all"))
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                               "python": platform.python_version(), "optuna": optuna.__version__}
    if args.which in ("latency", "all"):
        results["latency"] = latency(args.requests)
    if args.which in ("overhead", "all"):
        results["overhead"] = overhead()
    if args.which in ("concurrency", "all"):
        results["concurrency"] = concurrency(args.workers, args.seconds)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
