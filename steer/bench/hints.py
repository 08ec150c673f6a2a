"""Did the hunch help? The quick study without a hint, with a good one and with a bad one.

For each seed the quick study (`studies/quick.toml`, its baseline trial left out so that
hints reach the first trials; `size` and `steps` may be made smaller for speed) runs
three times, each in a database of its own, from the same seed:
- no hint, `trials` trials;
- a good hint, given before the first trial: the best params found by the unhinted runs
  of the *other* seeds (a person's experience from earlier studies), each searched param
  hinted, strength 1 over K = 5 trials; `trials` + K trials;
- a bad hint: activation relu, encoding none and lr 3e-2 (the top of the range: plain ReLU
  nets stay near 15 dB on the card), strength 1 over 5 trials; `trials` + K trials.
The hinted runs get K trials more, so that what a hint costs can show. Reported per run:
its best PSNR, and `reach`: how many trials it took to come within TOLERANCE_DB of the
unhinted run's best (None when it never did). A bad hint should cost at most its K
trials: `reach` with it at most K more than without.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import optuna

import steer
from steer.bench.harness import write_spec
from steer.control import Control

BAD = {"activation": "relu", "encoding": "none", "lr": 3e-2}
STRENGTH, K = 1.0, 5
TOLERANCE_DB = 1.0


def _run(spec_data: dict[str, Any], hints: dict[str, Any], trials: int, folder: Path) -> optuna.Study:
    spec_path = write_spec(spec_data, folder / f"{spec_data['study']['name']}.toml")
    spec = steer.load_spec(spec_path)
    study = steer.create_study(spec, f"sqlite:///{folder / 'study.db'}")
    control = Control.open(study)
    for param, value in hints.items():
        cmd = control.request("hint", param=param, value=value, options={"strength": STRENGTH, "trials": K},
                              by="bench")
        assert cmd.state == "applied", cmd.describe()
    study.optimize(steer.objective(spec), n_trials=trials)
    return study


def _values(study: optuna.Study) -> list[float]:
    return [t.value if t.value is not None else float("-inf") for t in study.trials]


def _reach(values: list[float], target: float) -> int | None:
    return next((i for i, v in enumerate(values, start=1) if v >= target - TOLERANCE_DB), None)


def hints_bench(seeds: tuple[int, ...] = (0, 1, 2), trials: int = 16, spec: Path = Path("studies/quick.toml"),
                steps: int | None = None, size: int | None = None) -> list[dict[str, Any]]:
    """One row per seed x hint: best PSNR, trials to reach the unhinted best, hinted trials, seconds."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with spec.open("rb") as f:
        base = tomllib.load(f)
    base["study"].update(baseline=False)
    if steps is not None:
        base["trial"].update(steps=steps, report_every=max(1, steps // 10))
    if size is not None:
        base["target"]["size"] = size
    searched = {name for name, v in base["space"].items() if isinstance(v, dict)}
    rows: list[dict[str, Any]] = []

    def measure(seed: int, name: str, hints: dict[str, Any], n: int, target: float | None) -> dict[str, Any]:
        data = {**base, "study": {**base["study"], "name": f"hints-{name}-{seed}", "seed": seed, "trials": n}}
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            study = _run(data, hints, n, Path(tmp))
            seconds = time.perf_counter() - start
            values = _values(study)
            best_params = study.best_params
        best = max(values)
        first = [v for v in values[:K] if v != float("-inf")]  # the trials a hint reaches
        row = {"seed": seed, "hint": name, "hints": hints, "trials": n, "best": best, "best_params": best_params,
               "first_k_mean": statistics.mean(first) if first else None,
               "reach": _reach(values, best if target is None else target), "values": values,
               "seconds": round(seconds, 1)}
        print(f"measured: seed {seed}, hint {name} {hints}: best {best:.2f} dB in {n} trials, within "
              f"{TOLERANCE_DB} dB of the unhinted best at trial {row['reach']}", flush=True)
        return row

    plain = {seed: measure(seed, "none", {}, trials, None) for seed in seeds}
    rows += plain.values()
    for seed in seeds:
        others = [plain[s] for s in seeds if s != seed] or [plain[seed]]
        good = {k: v for k, v in max(others, key=lambda r: r["best"])["best_params"].items() if k in searched}
        for name, hints in (("good", good), ("bad", BAD)):
            rows.append(measure(seed, name, hints, trials + K, plain[seed]["best"]))
    return rows


def _best_so_far(values: list[float]) -> list[float]:
    out, best = [], float("-inf")
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def mean_best_so_far(rows: list[dict[str, Any]], name: str, shift: int = 0) -> list[float]:
    """The best PSNR after n trials (n = 1, 2, ...), averaged over seeds, of the runs with hint `name`,
    read `shift` trials later (a bad hint's run read K trials later: has it caught up with no hint?)."""
    curves = [_best_so_far(r["values"]) for r in rows if r["hint"] == name]
    length = min(len(c) for c in curves) - shift
    return [statistics.mean(c[n + shift] for c in curves) for n in range(length)]


def curves_table(rows: list[dict[str, Any]]) -> str:
    """Mean best-so-far by trial: no hint, a good hint, and a bad hint read K trials later."""
    none, good, bad = (mean_best_so_far(rows, "none"), mean_best_so_far(rows, "good"),
                       mean_best_so_far(rows, "bad", shift=K))
    lines = [f"| after n trials | no hint | good hint | bad hint, after n + {K} trials |", "|---:|---:|---:|---:|"]
    for n in range(min(len(none), len(good), len(bad))):
        lines.append(f"| {n + 1} | {none[n]:.1f} | {good[n]:.1f} | {bad[n]:.1f} |")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"| seed | hint | trials | best PSNR (dB) | trials to within {TOLERANCE_DB:g} dB of the unhinted best "
             f"| mean PSNR of the first {K} trials |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        reach = "never" if r["reach"] is None else str(r["reach"])
        first = "-" if r.get("first_k_mean") is None else f"{r['first_k_mean']:.2f}"
        lines.append(f"| {r['seed']} | {r['hint']} | {r['trials']} | {r['best']:.2f} | {reach} | {first} |")
    for name in ("none", "good", "bad"):
        reached = [r["reach"] for r in rows if r["hint"] == name]
        got = [x for x in reached if x is not None]
        mean = f"{statistics.mean(got):.1f}" if got else "-"
        firsts = [r["first_k_mean"] for r in rows if r["hint"] == name and r.get("first_k_mean") is not None]
        lines.append(f"| mean | {name} | | {statistics.mean(r['best'] for r in rows if r['hint'] == name):.2f} | "
                     f"{mean} ({len(got)} of {len(reached)} reached) | "
                     f"{statistics.mean(firsts) if firsts else float('nan'):.2f} |")
    return "\n".join(lines) + "\n\nMean best PSNR (dB) so far, over the seeds:\n\n" + curves_table(rows)
