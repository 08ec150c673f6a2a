"""The benchmarks' results as markdown tables, one per benchmark that ran (docs/steering.md, docs/scale.md)."""

from __future__ import annotations

from typing import Any, Callable


def _latency(r: dict[str, Any]) -> list[str]:
    return ["| steering latency (request -> applied) | value |", "|---|---:|",
            f"| requests | {r['requests']} |", f"| p50 | {r['p50_s'] * 1000:.0f} ms |",
            f"| p95 | {r['p95_s'] * 1000:.0f} ms |", f"| max | {r['max_s'] * 1000:.0f} ms |"]


def _click(r: dict[str, Any]) -> list[str]:
    return ["| click to applied, on the trial page (Chromium) | value |", "|---|---:|",
            f"| clicks | {r['clicks']} |", f"| p50 | {r['p50_s'] * 1000:.0f} ms |",
            f"| p95 | {r['p95_s'] * 1000:.0f} ms |", f"| max | {r['max_s'] * 1000:.0f} ms |"]


def _overhead(r: dict[str, Any]) -> list[str]:
    return ["| training speed, same trial | steps / s |", "|---|---:|",
            f"| steering off | {r['steps_per_s_off']:.1f} |", f"| steering on | {r['steps_per_s_on']:.1f} |",
            f"| slowdown | {r['slowdown_pct']:.1f} % |"]


def _concurrency(r: dict[str, Any]) -> list[str]:
    states = r["states"]
    return ["| concurrency | value |", "|---|---:|", f"| workers | {r['workers']} |",
            f"| duration | {r['seconds']:.0f} s |", f"| commands requested | {r['requests_sent']} |",
            f"| trials finished | {r['trials_finished']} |",
            f"| 'database is locked' errors | {r['database_locked_errors']} |",
            f"| commands left pending | {states['pending']} |",
            f"| applied / rejected / expired | {states['applied']} / {states['rejected']} / {states['expired']} |",
            f"| applied but missing from the trial's record | {r['applied_missing_from_record']} |"]


def _throughput(result: dict[str, Any]) -> list[str]:
    out = ["| storage | workers | runs x trials | trials / min (median, range) | training steps / s "
           "| mean trial | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    return out + [f"| {r['storage']} | {r['workers']} | {r['runs']} x {r['trials']} | {r['trials_per_min']:.1f} "
                  f"({r['trials_per_min_min']:.1f} - {r['trials_per_min_max']:.1f}) | {r['steps_per_s']:.0f} | "
                  f"{r['mean_trial_s']:.1f} s | {r['errors']} |" for r in result["summary"]]


def _readers(r: dict[str, Any]) -> list[str]:
    return ["| readers under load (SQLite) | value |", "|---|---:|", f"| workers | {r['workers']} |",
            f"| duration | {r['seconds']:.0f} s |", f"| trials finished | {r['trials_finished']} |",
            f"| worker errors | {r['worker_errors']} (exit status {r['exit_code']}) |",
            f"| optuna-dashboard API requests | {r['dashboard_requests']} |",
            f"| optuna-dashboard errors | {r['dashboard_errors']} |",
            f"| optuna-dashboard p50 / max latency | {r['dashboard_p50_ms'] or 0:.0f} / "
            f"{r['dashboard_max_ms'] or 0:.0f} ms |",
            f"| Control reader polls (live_all + metrics) | {r['control_polls']} |",
            f"| Control reader errors | {r['control_errors']} |"]


def _faults(runs: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in runs:  # one table per storage
        states = r["states"]
        out += [f"| fault run, {r['storage']} | value |", "|---|---:|",
                f"| workers / killed (SIGKILL every {r['kill_every_s']:.0f} s) | {r['workers']} / "
                f"{r['workers_killed']} |",
                f"| duration | {r['seconds']:.0f} s |", f"| commands requested | {r['requests_sent']} |",
                f"| applied / rejected / expired / pending | {states['applied']} / {states['rejected']} / "
                f"{states['expired']} / {states['pending']} |",
                f"| lost interventions (applied, not in the trial's record) | {r['lost_interventions']} |",
                f"| trials finished / FAIL | {r['trials_finished']} / {r['trials_failed']} |",
                f"| trials left RUNNING after the next worker start | {r['trials_running_after_next_start']} |",
                f"| database errors | {r['database_errors']} |",
                f"| transient errors retried | {r['retried_database_errors']} |", ""]
    return out[:-1]


def _demo(runs: list[dict[str, Any]]) -> list[str]:
    out = ["| demo on | trials | app up | first trial running | trial length (min / median / max) "
           "| study | complete / pruned / failed | baseline | best (#) | best - baseline |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        t, s = r["trial_s"], r["states"]
        out.append(f"| {r['image']} | {r['trials']} | {r['app_up_s']:.0f} s | {r['first_trial_running_s']:.0f} s | "
                   f"{t['min']:.0f} / {t['median']:.0f} / {t['max']:.0f} s | {r['study_s'] / 60:.1f} min | "
                   f"{s['COMPLETE']} / {s['PRUNED']} / {s['FAIL']} | {r['baseline_db']} dB | "
                   f"{r['best_db']} dB (#{r['best_trial']}) | {r['margin_db']:+.2f} dB |")
    return out


def _precision(rows: list[dict[str, Any]]) -> list[str]:
    from steer.bench.precision import markdown_table

    return markdown_table(rows).splitlines()


def _step(rows: list[dict[str, Any]]) -> list[str]:
    from steer.bench.trainer_step import markdown_table

    return markdown_table(rows).splitlines()


def _hints(rows: list[dict[str, Any]]) -> list[str]:
    from steer.bench.hints import markdown_table

    return markdown_table(rows).splitlines()


# In the order the tables are printed; the keys are those of the results dict.
def _checkpoints(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| width | params | device | bytes per checkpoint | ms per checkpoint | ms per step | cost at every "
           "10 s | steps/s, none | steps/s, every 0.5 s | measured cost |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['width']} | {r['params']} | {r['device']} | {r['bytes']:,.0f} | {r['save_ms']:.2f} | "
                   f"{r['step_ms']:.3f} | {r['overhead_at_every']:.3%} | {r['steps_per_s']:.0f} | "
                   f"{r['steps_per_s_checkpointing']:.0f} | {r['measured_overhead']:.1%} |")
    return out


TABLES: dict[str, Callable[[Any], list[str]]] = {
    "click": _click, "latency": _latency, "overhead": _overhead, "concurrency": _concurrency,
    "throughput": _throughput, "readers": _readers, "faults": _faults, "demo": _demo,
    "precision": _precision, "step": _step, "hints": _hints, "checkpoints": _checkpoints,
}


def markdown(results: dict[str, Any]) -> str:
    """One table per benchmark in `results` (what `python -m steer.bench` measured), each followed by a blank line."""
    out: list[str] = []
    for key, table in TABLES.items():
        if results.get(key):  # faults is a list: empty when no storage was asked for
            out += table(results[key]) + [""]
    return "\n".join(out)
