"""The `steer` command line. Thin over the library; every user error goes
through `main`'s one funnel: one line on stderr, exit status 2 (`--debug` shows
the traceback)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import optuna

from steer import record
from steer.errors import UserError

EXIT_USAGE = 2

# ---- steer run ------------------------------------------------------------- #


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steer.objective import Objective, check_runnable, create_study
    from steer.runner import run_study
    from steer.spec import load_spec
    from steer.storage import display_url, open_storage
    from steer.launch import child_argv, draw_independently, parse_gpus, run_workers, worker_gpus

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.gpus is not None and args.workers is None:
        raise UserError("--gpus gives each of --workers N its own GPU: add --workers")
    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    if gpus is not None:
        worker_gpus(args.workers, gpus)  # checked before any database is made
    overrides = {"trials": args.trials, "steps": args.steps, "timeout": args.timeout, "seed": args.seed}
    spec = load_spec(args.spec).with_overrides(name=args.study, **overrides)
    check_runnable(spec)
    _stop_on_signals(args.worker_child)
    objective = Objective(spec)  # loads the target image: a bad path fails before any database is made
    url = args.storage or spec.default_storage
    from steer.control import retry_stale_trial

    study = create_study(spec, open_storage(url, heartbeat_interval=spec.steering["heartbeat_interval"],
                                            grace_period=spec.steering["grace_period"],
                                            failed_trial_callback=retry_stale_trial))
    shared = draw_independently(study, args.worker_child)
    if args.worker_child:  # one of `--workers N`: no display of its own
        run_study(study, objective, spec, show_progress=False)
        return 0
    console = Console(stderr=True)
    console.print(f"study [bold]{study.study_name}[/] in {display_url(url)}")
    app = _start_app(url, study.study_name, args.dash_port, console) if args.dash else None
    status = 0
    try:
        if args.workers is not None:
            argv = child_argv(args.spec, url, study.study_name, overrides)
            status = run_workers(study, spec, argv, args.workers, console, gpus)
        else:
            if shared:
                console.print("other workers are running trials of this study: this one draws its own params")
            run_study(study, objective, spec, console=console)
        print_trials(study, console=Console())
        if app is not None:
            _keep_serving(app, args.dash_port, console)
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            app.wait(10)
    return status


def _start_app(url: str, study_name: str, port: int, console: Any):
    """`steer run --dash`: the steering app in a process of its own, on the same study."""
    import os
    import subprocess

    app = subprocess.Popen([sys.executable, "-m", "steer", "dash", "--storage", url, "--study", study_name,
                            "--port", str(port)], stdout=subprocess.DEVNULL, env=os.environ.copy())
    _wait_until_serving(app, port)  # the app first: the page is there before the first trial starts
    console.print(f"steering app: [bold]http://127.0.0.1:{port}/[/] (click a running trial to steer it)")
    return app


def _wait_until_serving(app: Any, port: int, timeout: float = 30.0) -> None:
    """Return once the app answers on `port` (or has exited, or `timeout` passed: the workers start anyway)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while app.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)


def _keep_serving(app: Any, port: int, console: Any) -> None:
    """After the study, the app stays up to look at the results, until Ctrl-C."""
    import time

    from steer import stopping

    if stopping.requested.is_set() or app.poll() is not None:
        return
    console.print(f"the study is done; the app is still at http://127.0.0.1:{port}/ : Ctrl-C stops it")
    while app.poll() is None and not stopping.requested.is_set():
        time.sleep(0.2)


def _stop_on_signals(worker_child: bool) -> None:
    """Ctrl-C and SIGTERM stop `steer run` at the next step boundary: the running trial ends FAIL
    with its reason, its commands expire. A second one stops at once (a worker child ignores it)."""
    from steer import stopping

    stopping.install(second_signal_stops_at_once=not worker_child)


# ---- steer show ------------------------------------------------------------ #


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from steer.storage import load_study

    study = load_study(args.storage, args.study)
    if args.trial is not None:
        return show_trial(study, args.trial, as_json=args.json)
    if args.compare:
        from steer.comparison import comparison, format_comparison

        data = comparison(study)
        print(json.dumps(data, indent=2) if args.json else format_comparison(data))
        return 0
    if args.json:
        print(json.dumps(record.rows(study.trials), indent=2))
        return 0
    print_trials(study, console=Console())
    return 0


def show_trial(study: optuna.Study, number: int, as_json: bool) -> int:
    """One trial: params, effective params, its interventions and every command sent to it."""
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from steer.control import Control
    from steer.replay import find_trial

    trial = find_trial(study, number)
    commands = Control.open(study).commands(trial=number)
    rec = record.read(trial)
    promoted_as = record.promoted_as(study.trials).get(number, [])
    if as_json:
        print(json.dumps({**record.row(trial, promoted_as), "promotion": rec.promotion, "schedule": rec.schedule,
                          "user_attrs": trial.user_attrs, "record": record.attrs(trial),
                          "intermediate_values": trial.intermediate_values,
                          "commands": [dataclasses.asdict(c) for c in commands]}, indent=2, default=str))
        return 0
    console = Console()
    psnr = "-" if rec.value is None else f"{rec.value:.2f} dB"
    console.print(f"trial {number}: {rec.state}, PSNR {psnr}" + (f" ({rec.note})" if rec.note else ""))
    for line in record.provenance(rec, promoted_as):
        console.print(line, markup=False)
    console.print("params: " + " ".join(f"{k}={_fmt_param(v)}" for k, v in rec.sampled.items()))
    if record.attrs(trial).get(record.EFFECTIVE_PARAMS):
        console.print("effective: " + " ".join(f"{k}={_fmt_param(v)}" for k, v in rec.effective.items()))
    if rec.pinned:
        console.print(f"pinned at start: {rec.pinned}")
    found = record.attrs(trial).get(record.LR_FOUND)
    if found:
        console.print(f"lr = \"find\": started at {_fmt_param(rec.started_with.get('lr'))}, from an LR range test "
                      f"({found['steps']} steps, {found['reason']}; rule: {found['rule']})", markup=False)
    if rec.hinted:
        console.print("drawn near a hint: " + " ".join(f"{k}={_fmt_param(v)}" for k, v in rec.hinted.items()))
    edits = record.attrs(trial).get(record.SPACE_EDITS)
    if edits:
        console.print("drawn from an edited space: " + ", ".join(f"{k} {v}" for k, v in edits.items()), markup=False)
    if rec.schedule:
        console.print("schedule: " + ", ".join(f"step {e['step']} {e['action']} {record.fmt(e['args'])}".rstrip()
                                               for e in rec.schedule), markup=False)
    table = Table(title=f"interventions ({len(rec.interventions)})")
    for col in ("step", "change", "by", "when (UTC)"):
        table.add_column(col)
    for e in rec.interventions:
        table.add_row(str(e["step"]), record.change(e), e["by"], record.when(e["at"]))
    console.print(table)
    if commands:
        console.print("commands:")
        for c in commands:
            console.print("  " + c.describe(), markup=False)
    return 0


def _fmt_param(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def print_trials(study: optuna.Study, console: Any) -> None:
    from rich.table import Table

    rows = record.rows(study.trials)
    table = Table(title=f"study {study.study_name}: {len(rows)} trials")
    for col in ("#", "state", "PSNR dB", "params", "duration s", "note"):
        table.add_column(col, justify="right" if col in ("#", "PSNR dB", "duration s") else "left")
    best = _best_number(study)
    for r in rows:
        params = " ".join(f"{k}={_fmt_param(v)}" for k, v in r["params"].items())
        psnr = "" if r["psnr"] is None else f"{r['psnr']:.2f}"
        style = "bold green" if r["number"] == best else None
        promoted = "promoted as " + ", ".join(f"#{n}" for n in r["promoted_as"]) if r["promoted_as"] else None
        hinted = "hinted " + ", ".join(r["hinted"]) if r["hinted"] else None
        forks = "forks: " + ", ".join(f"#{n}" for n in r["forks"]) if r["forks"] else None
        retried = "died; retried as " + ", ".join(f"#{n}" for n in r["retried_as"]) if r["retried_as"] else None
        note = "; ".join(filter(None, [r["origin"], "steered" if r["steered"] else None, hinted, promoted, r["note"],
                                       forks, retried]))
        table.add_row(str(r["number"]), r["state"], psnr, params,
                      "" if r["duration_s"] is None else f"{r['duration_s']:.1f}", note, style=style)
    console.print(table)
    if best is not None:
        console.print(f"best: trial {best}, PSNR {study.best_value:.2f} dB")
        console.print(record.how_to_get_again(rows, best), markup=False)
    for line in _study_guidance(study):
        console.print(line, markup=False)


def _study_guidance(study: optuna.Study) -> list[str]:
    """What a person set for later trials: pins, hints and search-space edits, one line each."""
    from steer import search_space
    from steer.control import Control, NotSteerable

    try:
        control = Control.open(study)
    except NotSteerable:
        return []
    lines = [f"pinned: {p.param} = {_fmt_param(p.value)} (by {p.pinned_by})" for p in control.pins().values()]
    lines += [f"hint: {h.describe()} (by {h.hinted_by})" for h in control.hints().values()]
    spec = control.spec_space()
    for name, edit in control.space_edits().items():
        was = f" (spec: {search_space.describe(spec[name])})" if name in spec else ""
        lines.append(f"space: {name} {search_space.describe(search_space.from_dict(name, edit.dimension))}{was} "
                     f"(by {edit.edited_by})")
    return lines


def _best_number(study: optuna.Study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:  # no completed trial yet
        return None


# ---- steer dash --------------------------------------------------------------- #


def cmd_dash(args: argparse.Namespace) -> int:
    from steer.dashboards import server

    return server.run(args)


# ---- steer user --------------------------------------------------------------- #


def cmd_user(args: argparse.Namespace) -> int:
    from steer.dashboards.users import add_user

    token = add_user(args.users, args.name, args.role)
    print(f"user {args.name} ({args.role}) in {args.users}; their token, shown once:", file=sys.stderr)
    print(token)
    print(f"they open the app once as http://HOST:PORT/?token={token}", file=sys.stderr)
    return 0


# ---- steer dashboard --------------------------------------------------------- #


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    import optuna_dashboard

    from steer.artifacts import artifact_dir, artifact_store
    from steer.comparison import save_comparison
    from steer.storage import default_storage_url, open_storage

    url = args.storage or default_storage_url()
    storage = open_storage(url, must_exist=True, heartbeat=False)
    studies = [optuna.load_study(study_name=s.study_name, storage=storage) for s in storage.get_all_studies()]
    if not studies:
        raise UserError(f"no study in {url}; run `steer run SPEC` first")
    folder = Path(args.artifacts) if args.artifacts else None
    for study in studies:
        save_comparison(study)  # up to date even for studies run as a library
        if folder is None and study.user_attrs.get(record.ARTIFACTS):
            folder = Path(study.user_attrs[record.ARTIFACTS])
    folder = folder or artifact_dir(url, studies[0].study_name)
    print(f"optuna-dashboard on {url} (artifacts in {folder}): http://{args.host}:{args.port}/dashboard", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("steer: warning: optuna-dashboard has no authentication; anyone who can reach "
              f"{args.host}:{args.port} can read and edit the study", file=sys.stderr)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=artifact_store(folder))
    return 0


# ---- steer ctl --------------------------------------------------------------- #


def cmd_ctl(args: argparse.Namespace) -> int:
    from steer.actions import BY_CLI, PROMOTE_OPTIONS
    from steer.control import Control

    action = BY_CLI[args.action]
    values = list(args.values)
    param = value = None
    if action.takes.startswith("PARAM"):
        if not values:
            raise UserError(f"{action.cli} needs a parameter name: lr, optimizer, loss or weight_decay "
                            f"(e.g. steer ctl {action.cli} {action.example})")
        param = values.pop(0)
    if values and action.takes.endswith(("VALUE", "VALUE]", "SEED]")):
        value = values.pop(0)
    if values:
        raise UserError(f"{action.cli}: unexpected extra arguments: {' '.join(values)}")
    options = [o for o in PROMOTE_OPTIONS if getattr(args, o.replace("-", "_"))]
    if options and action.name != "promote":
        raise UserError(f"--{options[0]} is an option of promote, not of {action.cli}")
    if options:
        value = ",".join(options)
    if args.set_ and action.name != "fork":
        raise UserError(f"--set is an option of fork, not of {action.cli}")
    if action.name == "fork":
        value = list(args.set_ or [])
    own = {"hint": ("strength", "trials"), "space": ("low", "high", "choices", "reset")}
    for name in ("strength", "trials", "low", "high", "choices", "reset"):
        if getattr(args, name) not in (None, False) and name not in own.get(action.name, ()):
            owner = next(a for a, names in own.items() if name in names)
            raise UserError(f"--{name} is an option of {owner}, not of {action.cli}")
    extra = {name: getattr(args, name) for name in own.get(action.name, ()) if getattr(args, name) not in (None, False)}
    if action.takes.endswith("VALUE") and value is None:
        raise UserError(f"{action.cli} needs a VALUE, e.g. steer ctl {action.cli} {action.example}")
    control = Control.open(args.storage, args.study)
    cmd = control.request(action.name, trial=args.trial, value=value, param=param, by=args.by,
                          request_id=args.request_id, reason=args.reason, options=extra or None)
    if args.wait and not cmd.done:
        cmd = control.wait(cmd.id, timeout=args.wait_timeout)
    if args.json:
        import dataclasses
        print(json.dumps(dataclasses.asdict(cmd)))
    else:
        print(cmd.describe())
    return 1 if cmd.state in ("rejected", "expired") else 0


def _ctl_help() -> str:
    """The actions, one line each, from the action table."""
    from steer.actions import ACTIONS

    width = max(len(f"{a.cli} {a.takes}") for a in ACTIONS.values())
    lines = ["actions:"] + [f"  {f'{a.cli} {a.takes}':<{width}}  {a.help}" + (f" {a.options}" if a.options else "")
                            for a in ACTIONS.values()]
    lines += ["", "examples:"] + [f"  steer ctl {a.cli} {a.example}" for a in ACTIONS.values()]
    lines += ["  steer ctl set-lr --trial 3 3e-4 --wait", "  steer ctl pin lr 1e-3"]
    return "\n".join(lines)


# ---- steer delete ------------------------------------------------------------ #


def cmd_delete(args: argparse.Namespace) -> int:
    from steer.control import Control

    control = Control.open(args.storage, args.study)
    trials = control.storage.get_n_trials(control.study_id)
    if not args.yes:
        raise UserError(f"this deletes study {control.study_name!r}, its {trials} trials, its commands and its "
                        f"checkpoints; add --yes to do it")
    removed = control.delete_study()
    print(f"deleted study {control.study_name!r}: {trials} trials, {removed['steer_commands']} commands, "
          f"{removed['checkpoints']} checkpoints")
    return 0


# ---- steer replay ------------------------------------------------------------ #


def cmd_replay(args: argparse.Namespace) -> int:
    from steer.replay import replay_trial
    from steer.storage import load_study

    result = replay_trial(load_study(args.storage, args.study), args.trial, device=args.device)
    if args.json:
        print(json.dumps({k: result[k] for k in ("original", "replay", "identical", "trial", "steps",
                                                  "interventions", "device", "error")}))
    else:
        print(f"trial {result['trial']} ({result['state']}, {result['steps']} steps, "
              f"{result['interventions']} interventions replayed on {result['device']})")
        print(f"original PSNR {result['original']!r}")
        print(f"replay   PSNR {result['replay']!r}")
        print("identical" if result["identical"] else "DIFFERENT")
        if result["error"]:
            print(f"replay stopped: {result['error']}")
    return 0


# ---- steer export ------------------------------------------------------------ #


def cmd_export(args: argparse.Namespace) -> int:
    from steer.replay import export_spec
    from steer.storage import load_study

    text = export_spec(load_study(args.storage, args.study), args.trial)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}: `steer run {args.output}` trains trial {args.trial} again", file=sys.stderr)
    else:
        print(text, end="")
    return 0


# ---- steer bench ------------------------------------------------------------- #


def cmd_bench(args: argparse.Namespace) -> int:
    from steer.kernels import bench

    return bench.run(args)


# ---- parser and the one funnel ---------------------------------------------- #


STORAGE_HELP = "storage URL (default: $STEER_STORAGE or the only *.db in ./studies or here)"  # default_storage_url


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

    p = add("run", cmd_run, "start or resume a study from a spec file",
            "steer run studies/quick.toml --trials 20\n  steer run studies/quick.toml --workers 2")
    p.add_argument("spec", help="study spec, e.g. studies/quick.toml")
    p.add_argument("--storage", help="storage URL (default: sqlite file beside the spec, named after the study)")
    p.add_argument("--study", help="study name (default: the spec's [study] name)")
    p.add_argument("--trials", type=int, help="trial budget of the study (finished trials, resumed studies count theirs)")
    p.add_argument("--steps", type=int, help="training steps per trial")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--seed", type=int, help="study seed (sampler and per-trial seeds)")
    p.add_argument("--dash", action="store_true",
                   help="also start the steering app on the study (and keep it up after the study, until Ctrl-C)")
    p.add_argument("--dash-port", type=int, default=8050, help="port of the app with --dash (default 8050)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run N worker processes on this machine (each with cores/N torch threads) and show "
                        "their progress; default: this process runs the trials itself")
    p.add_argument("--gpus", metavar="LIST",
                   help="with --workers: the GPUs the workers take in turn, e.g. 0,1 (each worker sees only its "
                        "own; default: every GPU, when there are several)")
    p.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)  # set by --workers

    p = add("show", cmd_show, "list a study's trials", "steer show --storage sqlite:///studies/quick.db")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--trial", type=int, help="show one trial: params, interventions, commands")
    p.add_argument("--compare", action="store_true",
                   help="steered vs unsteered trials (count, best, median PSNR) and promoted trials vs their origin")

    from steer.dashboards import server as dash_server

    p = add("dash", cmd_dash, "open the steering app: watch and steer running trials in the browser",
            "steer dash --storage sqlite:///studies/quick.db   # then open http://127.0.0.1:8050")
    dash_server.add_arguments(p)

    p = add("user", cmd_user, "add a named user of the app (or give one a new token) and print their token once",
            "steer user alice --users users.toml && steer dash --users users.toml")
    p.add_argument("name", help="the name recorded with their commands")
    p.add_argument("--users", type=Path, required=True, help="the users file (TOML; made if missing)")
    p.add_argument("--role", default="steer", help="steer (watch and steer, the default) or view (watch only)")

    p = add("dashboard", cmd_dashboard, "open optuna-dashboard on the study, with predictions, notes and comparison",
            "steer dashboard --storage sqlite:///studies/quick.db --port 8080")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--artifacts", help="artifact folder (default: the one the study recorded, "
                                       "or <db folder>/<db name>-artifacts)")

    from steer.actions import BY_CLI

    p = sub.add_parser("ctl", help="steer a running trial or the study (same API as the app)",
                       description="steer a running trial or the study (same API as the app)",
                       epilog=_ctl_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_ctl)
    p.add_argument("action", choices=tuple(BY_CLI), metavar="ACTION", help=" | ".join(BY_CLI))
    p.add_argument("values", nargs="*", metavar="VALUE",
                   help="the new value (set-*), a reset seed, PARAM [VALUE] for pin/unpin/hint, PARAM for space")
    p.add_argument("--trial", type=int, help="trial number (omit for study-level pin/unpin)")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("--by", default=_user(), help="who asks (recorded; default: $USER)")
    p.add_argument("--request-id", help="idempotency key: a repeated id is rejected")
    p.add_argument("--reason", help="a note kept with a prune")
    p.add_argument("--final-values", action="store_true",
                   help="promote: the values the trial ended with, from step 0 (not its schedule)")
    p.add_argument("--new-seed", action="store_true", help="promote: a new seed (a robustness check), not the same")
    p.add_argument("--strength", help="hint: the probability that the first trial after it is drawn near the "
                                      "value, falling to 0 over --trials (default 0.8)")
    p.add_argument("--trials", help="hint: how many later trials it lasts (default 5)")
    p.add_argument("--low", help="space: the new lower bound (a number)")
    p.add_argument("--high", help="space: the new upper bound (a number)")
    p.add_argument("--choices", help="space: the new choices, comma-separated (a categorical)")
    p.add_argument("--reset", action="store_true", help="space: back to the spec's range")
    p.add_argument("--set", action="append", metavar="SETTING=VALUE", dest="set_",
                   help="fork: a change the new trial starts with (lr, optimizer, loss, weight_decay); repeatable")
    p.add_argument("--wait", action="store_true", help="wait until the command is applied, rejected or expired")
    p.add_argument("--wait-timeout", type=float, default=30.0, help="seconds --wait waits (default 30)")
    p.add_argument("--json", action="store_true", help="print the command as JSON")

    p = add("delete", cmd_delete, "delete a study: its trials, steer's records of it and its checkpoints",
            "steer delete --study quick --yes")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("--yes", action="store_true", help="do it (without it, say what would go)")

    p = add("replay", cmd_replay, "re-run a trial with its recorded interventions and compare",
            "steer replay --trial 7 --json")
    p.add_argument("--trial", type=int, required=True, help="trial number")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("--device", help="run the replay here instead of the recorded device (cpu, cuda)")
    p.add_argument("--json", action="store_true", help='print {"original": ..., "replay": ...}')

    p = add("export", cmd_export, "print a spec (TOML) that trains one trial again: its params, seed and schedule",
            "steer export --trial 7 > trial7.toml && steer run trial7.toml")
    p.add_argument("--trial", type=int, required=True, help="trial number")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("--study", help="study name (default: the storage's only study)")
    p.add_argument("-o", "--output", type=Path, help="write the spec here instead of printing it")

    from steer.kernels import bench_args  # not .bench, which imports torch

    p = add("bench", cmd_bench, "time a full training step per MLP backend (fused Triton needs CUDA)",
            "steer bench --json docs/kernels-bench-gpu.json --plot docs/kernels-bench-gpu.png")
    bench_args.add_arguments(p)
    return parser


def _user() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `steer ctl set-lr --trial 3 3e-4`: argparse stops filling VALUE at the first option, so the
    # values after options arrive as extras; they belong to VALUE.
    # `--` ends the options (POSIX): `steer ctl set-lr --trial 3 -- -5` passes -5 as the VALUE.
    args, extra = parser.parse_known_args(argv)
    if extra:
        before, after = (extra[:extra.index("--")], extra[extra.index("--") + 1:]) if "--" in extra else (extra, [])
        if getattr(args, "command", None) != "ctl" or any(x.startswith("--") for x in before):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.values = [*args.values, *before, *after]
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
