"""The steering actions: one row each, read by the control plane, the trial side, the CLI, replay and the app.

A row says what an action is called (in the record, on the command line, in
the app), what it acts on, who applies it, whether it changes what trains and
whether replay repeats it. `arguments()` checks a request's value once, with
the same rules and the same message for every entry point. What an action
*does* is its handler: on the trial side in `steer.steering` (`@handles`), for
actions the control plane applies itself in `steer.control` (`@applies_now`).

Adding an action is one row here plus one handler; `docs/architecture.md`
shows an example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from steer.spec import PARAMS

# The training settings a running trial can change, and a person can pin for later trials.
SETTINGS = ("lr", "optimizer", "loss", "weight_decay")
PINNABLE = SETTINGS


@dataclass(frozen=True)
class Action:
    name: str  # as recorded: the commands table, `steer.interventions`
    cli: str  # `steer ctl CLI`
    label: str  # what the app calls it
    help: str  # one line for `steer ctl --help`
    scope: str  # "trial": needs a trial; "study": takes none; "either"
    applied_by: str  # "trial": its worker, at a step boundary; "control": at once; "trial or control": the
    #                  worker while the trial runs, the control plane once it has finished
    setting: str | None = None  # the setting it changes (set_*)
    takes: str = ""  # what VALUE is on the command line: "VALUE", "[SEED]", "PARAM [VALUE]", "PARAM", ""
    options: str = ""  # its own --options, for the help line
    steers: bool = False  # applying it changes what trains (it counts as steering, and stops automatic pruning)
    replayed: bool = False  # `steer replay` repeats it at its step
    example: str = ""  # what follows `steer ctl CLI` in an example

    @property
    def by_trial(self) -> bool:
        return self.applied_by.startswith("trial")

    @property
    def by_control(self) -> bool:
        return self.applied_by.endswith("control")


_ROWS = (
    Action("set_lr", "set-lr", "LR", "set a running trial's learning rate (a schedule yields to it)",
           "trial", "trial", setting="lr", takes="VALUE", steers=True, replayed=True, example="--trial 3 3e-4"),
    Action("set_optimizer", "set-optimizer", "optimizer", "switch a running trial's optimizer (weights kept, "
           "optimizer state reset)", "trial", "trial", setting="optimizer", takes="VALUE", steers=True,
           replayed=True, example="--trial 3 sgd"),
    Action("set_loss", "set-loss", "loss", "switch a running trial's training loss", "trial", "trial",
           setting="loss", takes="VALUE", steers=True, replayed=True, example="--trial 3 l1"),
    Action("set_weight_decay", "set-weight-decay", "weight decay", "set a running trial's weight decay", "trial",
           "trial", setting="weight_decay", takes="VALUE", steers=True, replayed=True, example="--trial 3 1e-4"),
    Action("reset", "reset", "reset weights", "re-initialise a running trial's weights and optimizer state "
           "(random seed unless given)", "trial", "trial", takes="[SEED]", steers=True, replayed=True,
           example="--trial 3"),
    Action("prune", "prune", "prune", "stop a running trial at its next step; it ends PRUNED", "trial", "trial",
           example="--trial 3 --reason 'diverging'"),
    Action("pin", "pin", "pin", "pin a value for every later trial: a trial's current value, or PARAM VALUE",
           "either", "trial or control", takes="PARAM [VALUE]", example="--trial 3 optimizer"),
    Action("unpin", "unpin", "unpin", "remove a pin: later trials are sampled again", "study", "control",
           takes="PARAM", example="lr"),
    Action("find_lr", "find-lr", "find LR", "LR range test on a copy of a running trial's weights and optimizer "
           "(it waits, then goes on unchanged): the loss-LR curve and a suggested LR", "trial", "trial",
           example="--trial 3 --wait --json"),
    # A person's hunch for later trials (steer.search_space): applied at once, none steers a running trial.
    Action("hint", "hint", "hint", "draw PARAM near VALUE in the next K trials, with a probability from S falling "
           "to 0 (a soft pin)", "study", "control", takes="PARAM VALUE", options="[--strength S] [--trials K]",
           example="lr 1e-3 --strength 0.8 --trials 5"),
    Action("unhint", "unhint", "unhint", "remove a hint: later trials are sampled as usual", "study", "control",
           takes="PARAM", example="lr"),
    Action("space", "space", "search space", "change the range (or choices) later trials draw PARAM from; "
           "--reset goes back to the spec's", "study", "control",
           takes="PARAM", options="[--low L] [--high H] [--choices a,b] [--reset]",
           example="lr --low 1e-4 --high 1e-2"),
    Action("promote", "promote", "promote", "enqueue a clean run of what this trial did (its schedule from step 0, "
           "same seed), which the sampler learns from", "trial", "trial or control",
           takes="[--final-values] [--new-seed]", example="--trial 3"),
    # Checkpoints (steer.checkpoints): a new trial from a running one's state, and a change taken back.
    Action("fork", "fork", "fork", "start a new trial from a running trial's current state (weights, optimizer, "
           "RNG, step) with changes; the trial itself goes on untouched", "trial", "trial",
           options="[--set SETTING=VALUE ...]", example="--trial 3 --set lr=3e-4 --wait"),
    Action("undo", "undo", "undo", "take back a running trial's last change: weights, optimizer state and settings "
           "go back to just before it (its step count goes on)", "trial", "trial", steers=True, replayed=True,
           example="--trial 3 --wait"),
    # The person's pace: none of these changes a number, so none steers and replay skips them.
    Action("pause", "pause", "pause", "hold a running trial at its next step boundary (heartbeat alive, never "
           "pruned while paused)", "trial", "trial", example="--trial 3 --wait"),
    Action("resume", "resume", "resume", "let a paused trial train on", "trial", "trial", example="--trial 3"),
    Action("keep", "keep", "keep", "exempt a running trial from automatic pruning for the rest of its run",
           "trial", "trial", example="--trial 3"),
    Action("hold", "hold", "hold the study", "start no new trial until released (running ones go on)", "study",
           "control", example="--by alice"),
    Action("release", "release", "release the study", "let workers start new trials again", "study", "control",
           example="--wait"),
)
ACTIONS: dict[str, Action] = {a.name: a for a in _ROWS}
BY_CLI: dict[str, Action] = {a.cli: a for a in _ROWS}
SETTING_ACTIONS: dict[str, Action] = {a.setting: a for a in _ROWS if a.setting}  # "lr" -> set_lr


def get(name: str) -> Action:
    """The action called `name` (as recorded, or as the CLI spells it), or ValueError listing them."""
    action = ACTIONS.get(name) or BY_CLI.get(name)
    if action is None:
        raise ValueError(f"unknown action {name!r}; allowed: {', '.join(ACTIONS)}")
    return action


# ---- checking values: the same rules and messages everywhere ------------------------------ #


def check_setting(setting: str, value: Any, choices: tuple[str, ...] | None = None) -> Any:
    """`value` checked and normalised for `setting`, or ValueError naming what is allowed.

    Strings that read as numbers are numbers (they come from the CLI and forms).
    `choices` are the names a trial can switch to (recorded by its steering
    object); without them the spec's names apply.
    """
    pdef = PARAMS[setting]
    if pdef.kind == "choice":
        allowed = tuple(choices) if choices is not None else pdef.choices
        if not allowed:
            raise ValueError(f"{setting}: this trial has no named {setting} to switch to "
                             f"(pass {setting}s= to steer.steering)")
        by_lower = {n.lower(): n for n in allowed}  # names match whatever their case: AdamW is adamw
        name = by_lower.get(value.lower()) if isinstance(value, str) else None
        if name is None:
            raise ValueError(f"{setting}: got {value!r}; allowed: {' | '.join(allowed)}")
        return name
    try:  # 10 from a number field reads like "10" from the command line: "got 10.0" either way
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            value = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{setting}: got {value!r}; expected a number, {pdef.allowed()}") from None
    try:
        return pdef.check(value)
    except ValueError as exc:
        raise ValueError(f"{setting}: {exc}") from None


def check_seed(value: Any) -> int:
    """A reset seed: a non-negative 63-bit integer (digits as text too); None draws one."""
    if value is None:
        return random.randrange(2**31)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"reset seed must be a non-negative integer, got {value!r}")
    return value


PROMOTE_OPTIONS = ("final-values", "new-seed")  # a promote's options: its value, as words


def check_promote(value: Any) -> dict[str, bool]:
    """A promote's options: None, or "final-values" and/or "new-seed" (commas or spaces between)."""
    words = [] if value is None else value.replace(",", " ").split() if isinstance(value, str) else None
    if words is None or any(w.replace("_", "-") not in PROMOTE_OPTIONS for w in words):
        raise ValueError(f"promote: got {value!r}; allowed options: {', '.join(PROMOTE_OPTIONS)}")
    return {w.replace("-", "_"): True for w in words}


def check_fork(value: Any, choices: dict[str, tuple[str, ...] | None] | None = None) -> dict[str, Any]:
    """A fork's changes: None (none), {setting: value}, or "lr=3e-4" texts (a list, or commas between),
    each value checked as its `set_*` action checks it."""
    if value is None:
        pairs: list[tuple[Any, Any]] = []
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        texts = value.split(",") if isinstance(value, str) else value
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) and "=" in t for t in texts):
            raise ValueError(f"fork: got {value!r}; give changes as SETTING=VALUE (e.g. lr=3e-4), "
                             f"SETTING one of {', '.join(SETTINGS)}")
        pairs = [tuple(t.split("=", 1)) for t in texts]
    changes: dict[str, Any] = {}
    for key, v in pairs:
        setting = key.strip().replace("-", "_") if isinstance(key, str) else key
        if setting not in SETTINGS:
            raise ValueError(f"fork: cannot set {key!r}; allowed: {', '.join(SETTINGS)}")
        if setting in changes:
            raise ValueError(f"fork: {setting} is set twice")
        changes[setting] = check_setting(setting, v.strip() if isinstance(v, str) else v, (choices or {}).get(setting))
    return {"changes": {k: changes[k] for k in SETTINGS if k in changes}}  # applied in this order


def check_pinnable(action: str, param: Any) -> str:
    if isinstance(param, str):
        param = param.replace("-", "_")
    if param not in PINNABLE:
        raise ValueError(f"{action} needs a parameter: one of {', '.join(PINNABLE)}; got {param!r}")
    return param


HINT_DEFAULTS = {"strength": 0.8, "trials": 5}
SPACE_ACTIONS = ("hint", "unhint", "space")  # act on a searched parameter of the study's space


def check_searched(action: str, param: Any, space: dict[str, Any] | None) -> str:
    """`param` as a parameter later trials draw, or ValueError naming those there are."""
    if isinstance(param, str):
        param = param.replace("-", "_")
    if not space:
        raise ValueError(f"{action}: this study records no search space yet (a trial must have drawn a parameter, "
                         f"or `steer run` record its spec)")
    if not isinstance(param, str) or param not in space:  # (a list from the Python API is no key: found by fuzzing)
        raise ValueError(f"{action} needs a searched parameter: one of {', '.join(space)}; got {param!r}")
    return param


def arguments(action: Action, *, value: Any = None, param: Any = None, reason: Any = None,
              trial: int | None = None, choices: dict[str, tuple[str, ...] | None] | None = None,
              options: dict[str, Any] | None = None, space: dict[str, Any] | None = None,
              spec_space: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked arguments of a request, as recorded with the command; ValueError says what is wrong.

    Only what the value itself decides is checked here; whether the trial
    exists and runs is the control plane's to check. `options` are a hint's
    strength and trials, a space edit's low, high, choices or reset; `space`
    the dimensions later trials draw from, `spec_space` the spec's own (an
    edit keeps their kinds).
    """
    if action.scope == "trial" and trial is None:
        raise ValueError(f"{action.name} needs a trial number")
    if action.scope == "study" and trial is not None:
        raise ValueError(f"{action.name} acts on the study: give no trial")
    if action.setting is not None:
        if value is None:
            raise ValueError(f"{action.name} needs a value")
        return {"value": check_setting(action.setting, value, (choices or {}).get(action.setting))}
    if action.name == "reset":
        return {"seed": check_seed(value)}
    if action.name == "prune":
        return {"reason": str(reason)} if reason else {}
    if action.name == "promote":
        return check_promote(value)
    if action.name == "fork":
        return check_fork(value, choices)
    if action.name in SPACE_ACTIONS:
        from steer import search_space

        param = check_searched(action.name, param, space)
        options = {k: v for k, v in (options or {}).items() if v is not None}
        if action.name == "hint":
            if value is None:
                raise ValueError(f"hint {param} needs a value, e.g. steer ctl hint {action.example}")
            extra = set(options) - set(HINT_DEFAULTS)
            if extra:
                raise ValueError(f"hint: unknown option(s) {', '.join(sorted(extra))}; allowed: strength, trials")
            return {"param": param, **search_space.check_hint(space[param], value, **{**HINT_DEFAULTS, **options})}
        if value is not None:
            raise ValueError(f"{action.name} {param} takes no value" + (" (use --low/--high or --choices)"
                                                                        if action.name == "space" else ""))
        if action.name == "space":
            if spec_space is None or param not in spec_space:
                raise ValueError("space edits apply to studies run by `steer run` (the spec's space); in your own "
                                 "objective the search space is your code's")
            dim = search_space.check_edit(spec_space[param], options)
            return {"param": param, "space": None if dim is None else search_space.to_dict(dim)}
        return {"param": param}
    if action.name in ("pin", "unpin"):
        param = check_pinnable(action.name, param)
        if action.name == "pin" and value is not None and trial is not None:
            raise ValueError("pin takes a trial (to pin its current value) or a value, not both")
        if action.name == "pin" and value is not None:
            return {"param": param, "value": check_setting(param, value, (choices or {}).get(param))}
        if action.name == "pin" and trial is None:
            raise ValueError(f"pin {param} needs a value, or a trial to take the value from")
        return {"param": param}
    return {}
