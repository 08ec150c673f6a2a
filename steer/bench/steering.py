"""Steering benchmarks on one SQLite study: latency, overhead, concurrency.

- latency: request -> applied for N `set_lr` requests to a running trial (from the
  times the control plane records), p50 / p95 / max.
- overhead: training steps per second of the same trial with steering off and on.
- concurrency: W worker processes on one SQLite study while another process requests
  a command every 100 ms for D seconds: "database is locked" errors, unresolved
  commands, applied commands missing from the trials' records.

Each runs the packaged `steering` spec (steer/bench/specs/steering.toml) in a temporary folder.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from steer import record
from steer.bench.harness import first_trial_control, packaged_spec, percentile, start_worker, write_spec
from steer.spec import parse_spec


def latency(requests: int = 60) -> dict[str, Any]:
    """Request -> applied latency for `requests` set_lr commands to one running trial."""
    spec = packaged_spec("steering")
    name = spec["study"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_worker(write_spec(spec, Path(tmp) / "bench.toml"))
        try:
            control = first_trial_control(f"sqlite:///{Path(tmp) / f'{name}.db'}", name, proc)
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
    return {"requests": requests, "p50_s": percentile(lat, 0.5), "p95_s": percentile(lat, 0.95), "max_s": max(lat),
            "mean_s": statistics.fmean(lat),
            "poll_interval_s": parse_spec(packaged_spec("steering")).steering["poll_interval"]}


def overhead(steps: int = 3000, repeats: int = 3) -> dict[str, Any]:
    """Steps per second of the same trial (same seed and params) with steering off and on.

    Runs in this process (no worker to start), on one torch thread, off and on interleaved.
    """
    import torch

    import steer

    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for mode in ("off", "on"):
                folder = Path(tmp) / f"{mode}{r}"
                folder.mkdir()
                data = packaged_spec("steering", trial={"steps": steps, "report_every": steps // 10},
                                     steering={"enabled": mode == "on"})
                spec = steer.load_spec(write_spec(data, folder / "bench.toml"))
                study = steer.create_study(spec, f"sqlite:///{folder / 'bench.db'}")
                study.enqueue_trial({"lr": 3e-3})
                study.optimize(steer.objective(spec), n_trials=1)
                rates[mode].append(steps / study.trials[0].user_attrs[record.TRAIN_SECONDS])
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {"steps": steps, "repeats": repeats, "image": f"{spec.size}x{spec.size}", "torch_threads": 1,
            "steps_per_s_off": off, "steps_per_s_on": on, "slowdown_pct": 100.0 * (off - on) / off,
            "all_off": rates["off"], "all_on": rates["on"]}


def concurrency(workers: int = 4, seconds: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
    """W workers on one SQLite study, a command every `interval` s for `seconds`."""
    from steer.control import Control

    data = packaged_spec("steering", study={"trials": 10_000}, target={"size": 32},
                         trial={"steps": 400, "report_every": 50})
    name = data["study"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_spec(data, Path(tmp) / "bench.toml")
        url = f"sqlite:///{Path(tmp) / f'{name}.db'}"
        procs = [start_worker(spec)]
        first_trial_control(url, name, procs[0])
        procs += [start_worker(spec) for _ in range(workers - 1)]
        control = Control.open(url, name)
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
        recorded = {e["command"] for t in study.trials for e in t.user_attrs.get(record.INTERVENTIONS, [])}
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
