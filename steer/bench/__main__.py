"""`python -m steer.bench WHICH [--json PATH] ...`: run benchmarks, print markdown, keep the raw numbers."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import optuna

import steer.bench
from steer.bench.checkpoints import checkpoint_cost
from steer.bench.click import click_to_applied
from steer.bench.demo import demo
from steer.bench.hints import hints_bench
from steer.bench.precision import precision
from steer.bench.report import markdown
from steer.bench.scale import faults, readers, throughput
from steer.bench.steering import concurrency, latency, overhead
from steer.bench.trainer_step import trainer_step

# The groups a benchmark belongs to, besides its own name.
GROUPS = {"latency": "all", "overhead": "all", "concurrency": "all", "click": "app",
          "throughput": "scale", "readers": "scale", "faults": "scale", "demo": "demo", "precision": "gpu", "step": "gpu", "hints": "hints",
          "checkpoints": "checkpoints"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steer.bench", description=steer.bench.__doc__.splitlines()[0],
                                     epilog="example: python -m steer.bench all --json docs/steering-bench.json")
    parser.add_argument("which", choices=(*GROUPS, *sorted(set(GROUPS.values()))),
                        help="one benchmark, or a group: all (latency, overhead, concurrency), "
                             "scale (throughput, readers, faults), app (click: needs Playwright and Chromium), "
                             "demo (make demo's study, timed, and its best trial against the baseline), "
                             "gpu (precision: the quick study's nets trained at each kernel precision; step: "
                             "Trainer.step at the kernel goal's shape with and without CUDA graphs; both need CUDA), "
                             "hints (the quick study with no hint, a good and a bad one, per seed), "
                             "checkpoints (bytes and time per checkpoint, steps/s with and without, widths 64 and 128)")
    parser.add_argument("--json", type=Path, help="write the results here (after each benchmark)")
    parser.add_argument("--requests", type=int, default=60, help="latency: set_lr requests")
    parser.add_argument("--clicks", type=int, default=20, help="click: LR changes sent from the trial page")
    parser.add_argument("--workers", type=int, default=4, help="concurrency, readers, faults: worker processes")
    parser.add_argument("--seconds", type=float, default=60.0, help="concurrency, readers: duration")
    parser.add_argument("--storages", nargs="+", default=["sqlite", "postgresql"], choices=("sqlite", "postgresql"),
                        help="throughput, faults")
    parser.add_argument("--trials", type=int, default=8, help="trials per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per configuration")
    parser.add_argument("--fault-seconds", type=float, default=120.0)
    parser.add_argument("--kill-every", type=float, default=20.0, help="faults: seconds between two SIGKILLs")
    parser.add_argument("--spec", type=Path, default=Path("studies/demo.toml"), help="demo: the demo spec")
    parser.add_argument("--images", nargs="+", default=["card"], help="demo: target images, one run each")
    parser.add_argument("--demo-trials", type=int, help="demo: trials per run (default: the spec's)")
    parser.add_argument("--precision-size", type=int, default=64, help="precision: image side in pixels")
    parser.add_argument("--precision-steps", type=int, default=1000, help="precision: steps per run")
    parser.add_argument("--precision-seeds", type=int, nargs="+", default=[0, 1, 2], help="precision: seeds")
    parser.add_argument("--step-size", type=int, default=256, help="step: image side in pixels (256: 2^16 points)")
    parser.add_argument("--step-steps", type=int, default=300, help="step: timed steps per run")
    parser.add_argument("--hint-seeds", type=int, nargs="+", default=[0, 1, 2], help="hints: seeds")
    parser.add_argument("--hint-trials", type=int, default=16, help="hints: trials per study")
    parser.add_argument("--hint-steps", type=int, help="hints: steps per trial (default: the quick spec's)")
    parser.add_argument("--hint-size", type=int, help="hints: image side (default: the quick spec's)")
    parser.add_argument("--checkpoint-seconds", type=float, default=9.0,
                        help="checkpoints: seconds of training per steps/s figure")
    parser.add_argument("--pg-url", default=os.environ.get("STEER_TEST_PG_URL"),
                        help="a PostgreSQL server whose user may create databases (default: $STEER_TEST_PG_URL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from steer.launch import cpu_count

    measures: dict[str, Callable[[], Any]] = {
        "latency": lambda: latency(args.requests),
        "overhead": overhead,
        "click": lambda: click_to_applied(args.clicks),
        "concurrency": lambda: concurrency(args.workers, args.seconds),
        "throughput": lambda: throughput(storages=tuple(args.storages), trials=args.trials, repeats=args.repeats,
                                         pg_url=args.pg_url),
        "readers": lambda: readers(args.seconds, args.workers),
        "demo": lambda: demo(args.spec, args.images, args.demo_trials, workers=2),
        "faults": lambda: [faults(kind, args.fault_seconds, args.kill_every, args.workers, pg_url=args.pg_url)
                           for kind in args.storages],
        "precision": lambda: precision(size=args.precision_size, steps=args.precision_steps,
                                         seeds=tuple(args.precision_seeds)),
        "step": lambda: trainer_step(size=args.step_size, steps=args.step_steps),
        "checkpoints": lambda: checkpoint_cost(seconds=args.checkpoint_seconds),
        "hints": lambda: hints_bench(seeds=tuple(args.hint_seeds), trials=args.hint_trials, steps=args.hint_steps,
                                     size=args.hint_size),
    }
    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {cpu_count()} cores",
                               "python": platform.python_version(), "optuna": optuna.__version__,
                               "date": time.strftime("%Y-%m-%d")}
    for name, measure in measures.items():
        if args.which in (name, GROUPS[name]):
            results[name] = measure()
            if args.json:  # after each benchmark: a long run that fails later keeps what it measured
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
