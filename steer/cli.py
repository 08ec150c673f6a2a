"""The `steer` command line. Thin over the library; every user error goes
through `main`'s one funnel: one line on stderr, exit status 2 (`--debug` shows
the traceback)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

import optuna

from steer.errors import UserError

EXIT_USAGE = 2

# ---- steer run ------------------------------------------------------------- #


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steer.objective import Objective, check_runnable, create_study
    from steer.runner import run_study
    from steer.spec import load_spec
    from steer.storage import open_storage

    spec = load_spec(args.spec).with_overrides(
        name=args.study, trials=args.trials, steps=args.steps, timeout=args.timeout, seed=args.seed,
    )
    check_runnable(spec)
    objective = Objective(spec)  # loads the target image: a bad path fails before any database is made
    url = args.storage or spec.default_storage
    study = create_study(spec, open_storage(url))
    console = Console(stderr=True)
    console.print(f"study [bold]{study.study_name}[/] in {url}")
    run_study(study, objective, spec, console=console)
    print_trials(study, console=Console())
    return 0


# ---- steer show ------------------------------------------------------------ #


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steer.storage import load_study

    study = load_study(args.storage, args.study)
    if args.json:
        print(json.dumps([trial_row(t) for t in study.trials], indent=2))
        return 0
    print_trials(study, console=Console())
    return 0


def trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as plain data: what `steer show` prints and `--json` emits."""
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    return {
        "number": t.number,
        "state": t.state.name,
        "psnr": t.value,
        "params": t.params,
        "duration_s": None if duration is None else round(duration, 2),
        "steered": bool(t.user_attrs.get("steer.steered", False)),
        "baseline": bool(t.user_attrs.get("steer.baseline", False)),
        "note": t.user_attrs.get("steer.pruned_reason") or t.user_attrs.get("steer.diverged"),
    }


def _fmt_param(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def print_trials(study: optuna.Study, console: Any) -> None:
    from rich.table import Table

    rows = [trial_row(t) for t in study.trials]
    table = Table(title=f"study {study.study_name}: {len(rows)} trials")
    for col in ("#", "state", "PSNR dB", "params", "duration s", "note"):
        table.add_column(col, justify="right" if col in ("#", "PSNR dB", "duration s") else "left")
    best = _best_number(study)
    for r in rows:
        params = " ".join(f"{k}={_fmt_param(v)}" for k, v in r["params"].items())
        psnr = "" if r["psnr"] is None else f"{r['psnr']:.2f}"
        style = "bold green" if r["number"] == best else None
        note = "; ".join(filter(None, ["baseline" if r["baseline"] else None,
                                       "steered" if r["steered"] else None, r["note"]]))
        table.add_row(str(r["number"]), r["state"], psnr, params,
                      "" if r["duration_s"] is None else f"{r['duration_s']:.1f}", note, style=style)
    console.print(table)
    if best is not None:
        console.print(f"best: trial {best}, PSNR {study.best_value:.2f} dB")


def _best_number(study: optuna.Study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no completed trial yet
        return None


# ---- parser and the one funnel ---------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steer", description="Hyperparameter search with a human in the loop.",
        epilog="examples:\n  steer run studies/quick.toml\n  steer show --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "start or resume a study from a spec file", "steer run studies/quick.toml --trials 20")
    p.add_argument("spec", help="study spec, e.g. studies/quick.toml")
    p.add_argument("--storage", help="storage URL (default: sqlite file beside the spec, named after the study)")
    p.add_argument("--study", help="study name (default: the spec's [study] name)")
    p.add_argument("--trials", type=int, help="trial budget of the study (finished trials, resumed studies count theirs)")
    p.add_argument("--steps", type=int, help="training steps per trial")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--seed", type=int, help="study seed (sampler and per-trial seeds)")

    p = add("show", cmd_show, "list a study's trials", "steer show --storage sqlite:///studies/quick.db")
    p.add_argument("--storage", help="storage URL (default: $STEER_STORAGE or the only studies/*.db)")
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"steer: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("steer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
