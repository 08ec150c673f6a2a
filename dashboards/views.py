"""What the pages show, as plain data: read from the record (`steer.record`) and the control plane.

Nothing here builds a figure or a component, so every function is tested
without a browser. The pages turn these dicts and lists into Dash components
(`*_page.py`) and Plotly figures (`figures.py`).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from steer import record, search_space
from steer.actions import ACTIONS, PINNABLE, SETTINGS, SPACE_ACTIONS, check_setting
from steer.control import Command, Control, Hint, LiveState, Metric, Pin, SpaceEdit
from steer.spec import PARAMS, Dimension

LR_LOW, LR_HIGH = PARAMS["lr"].low, PARAMS["lr"].high  # what the action table allows: 1e-7..1
LR_MIN_LOG10 = round(math.log10(LR_LOW))  # -7: no slider goes beyond the allowed range
LR_MAX_LOG10 = round(math.log10(LR_HIGH))  # 0
LR_SPAN = 1.0  # the slider spans the LR shown x/÷ 10^LR_SPAN: two decades, about 190 px each on the trial page
LR_GRID = 3  # the slider moves in steps of 10^-3 decades (0.23 %)
# The LR steppers: id suffix -> (label, factor).
LR_STEPS = {"div10": ("÷10", 0.1), "div2": ("÷2", 0.5), "div125": ("÷1.25", 0.8), "mul125": ("×1.25", 1.25),
            "mul2": ("×2", 2.0), "mul10": ("×10", 10.0)}
CONFIRM_RATIO = 10.0  # an LR change of more than this factor asks to confirm
MAX_CURVE_POINTS = 2000  # a full reload of a long trial's curves is thinned to about this many points
CONTROLLED = SETTINGS  # what the trial page's controls set


@dataclass(frozen=True)
class ValueName:
    """What a study's objective value is called: PSNR in dB for steer's image studies, a plain value
    for a training loop's own objective (`steer.steering`), which may be any metric."""

    name: str
    unit: str
    spec: str  # format spec of a value

    @property
    def axis(self) -> str:
        return f"{self.name} ({self.unit.strip()})" if self.unit else self.name

    def show(self, value: float) -> str:
        return f"{value:{self.spec}}{self.unit}"


PSNR = ValueName("PSNR", " dB", ".2f")
VALUE = ValueName("value", "", ".4g")


def value_name(images: bool) -> ValueName:
    return PSNR if images else VALUE


def fmt(value: Any) -> str:
    """A parameter value for people: floats with 3 significant digits, lists and dicts flat."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.3g}" if 1e-2 <= abs(value) < 1e4 else _compact_exponent(f"{value:.2e}")
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


def fmt_param(param: str, value: Any) -> str:
    """A value of a named param: an LR as every LR is shown (`fmt_lr`), anything else as `fmt`."""
    if param == "lr" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_lr(float(value))
    return fmt(value)


# ---- the LR control: one number format, the page's checks are the server's ----------- #


def round_lr(lr: float) -> float:
    """An LR as it is shown and sent: 3 significant digits, exactly the number `fmt_lr` prints."""
    return float(f"{lr:.3g}")


def lr_to_slider(lr: float) -> float:
    """The slider position (log10 of the learning rate on the slider's grid, clamped to the allowed range)."""
    if not lr or lr <= 0 or not math.isfinite(lr):
        return float(LR_MIN_LOG10)
    return round(min(max(math.log10(lr), LR_MIN_LOG10), LR_MAX_LOG10), LR_GRID)


def slider_to_lr(position: float) -> float:
    """The learning rate a slider position asks for, rounded to 3 significant digits.

    The slider cannot leave the allowed range; a position from elsewhere (a forged request, NaN)
    is clamped to it, like `lr_to_slider`."""
    if not math.isfinite(position):
        position = LR_MIN_LOG10
    return round_lr(10.0 ** min(max(position, LR_MIN_LOG10), LR_MAX_LOG10))


def lr_window(lr: float) -> tuple[float, float]:
    """The slider's range (log10) around `lr`: x/÷ 10^LR_SPAN, moved to stay inside the allowed range."""
    centre = min(max(lr_to_slider(lr), LR_MIN_LOG10 + LR_SPAN), LR_MAX_LOG10 - LR_SPAN)
    low = round(centre - LR_SPAN, LR_GRID)
    return low, round(low + 2 * LR_SPAN, LR_GRID)


def lr_marks(low: float, high: float) -> dict[float, str]:
    """Slider marks at 1 and 3 times a power of ten between two positions, labelled as every LR is."""
    marks = {}
    for exponent in range(math.floor(low) - 1, math.ceil(high) + 1):
        for mantissa in (1, 3):
            position = round(math.log10(mantissa) + exponent, 4)
            if low - 1e-9 <= position <= high + 1e-9:
                marks[position] = fmt_lr(mantissa * 10.0 ** exponent)
    return marks


def lr_off_centre(lr: float, window: tuple[float, float] | list[float] | None) -> bool:
    """Whether `lr` lies outside the middle half of the slider's range (the slider should move to it)."""
    if not window:
        return True
    low, high = window
    quarter = (high - low) / 4
    return not low + quarter <= lr_to_slider(lr) <= high - quarter


def slider_to(lr: float, window: tuple[float, float] | list[float] | None) -> dict[str, Any]:
    """Where an LR slider goes to show `lr`: its `position`, and a new `window` when `lr` is off centre
    (else None: the range stays)."""
    return {"position": lr_to_slider(lr), "window": lr_window(lr) if lr_off_centre(lr, window) else None}


def lr_search(trial: FrozenTrial) -> tuple[float, float] | None:
    """The LR range the trial's sampler searched, or None when it did not search the LR."""
    dist = trial.distributions.get("lr")
    return (float(dist.low), float(dist.high)) if isinstance(dist, FloatDistribution) else None


@dataclass(frozen=True)
class LrCheck:
    """An LR asked for in the page: checked by the action table's rules, as the server checks it."""

    value: float | None  # what is sent (3 significant digits); None when refused
    error: str | None = None  # why it is refused, in the server's words
    confirm: tuple[str, ...] = ()  # why sending it asks to confirm first

    def question(self, trial: int | None, now: float | None) -> str:
        """What the page asks before sending it."""
        whose = f"trial {trial}'s" if trial is not None else "the trial's"
        shown = f" from {fmt_lr(round_lr(now))}" if now else ""
        return f"Set {whose} learning rate{shown} to {fmt_lr(self.value)}? It is {' and '.join(self.confirm)}."


def check_lr(asked: Any, now: float | None, searched: Sequence[float] | None) -> LrCheck:
    """`asked` (typed text or a number) checked with `steer.actions.check_setting`, the server's one rule,
    then rounded as it is shown; a change of more than 10x from `now`, or outside the range the trial
    searched (`searched`, else the allowed one), asks to confirm."""
    if isinstance(asked, str):
        asked = asked.strip()
    try:
        value = round_lr(check_setting("lr", asked))
        check_setting("lr", value)
    except ValueError as exc:
        return LrCheck(None, str(exc))
    reasons = []
    if now and now > 0:
        base = round_lr(now)
        ratio = max(value / base, base / value)
        if ratio > CONFIRM_RATIO * (1 + 1e-9):
            reasons.append(f"{ratio:.3g}x {'above' if value > base else 'below'} the current {fmt_lr(base)}")
    low, high = searched or (LR_LOW, LR_HIGH)
    if not low * (1 - 1e-9) <= value <= high * (1 + 1e-9):
        reasons.append(f"outside the range this trial's sampler searched ({fmt_lr(low)} to {fmt_lr(high)})")
    return LrCheck(value, None, tuple(reasons))


def lr_change(value: float, now: float | None, named: bool = True) -> str:
    """How an LR compares with the trial's: "2x above the current 1.00e-3" (`named`), else "2x above now"."""
    if not now or now <= 0:
        return ""
    base = round_lr(now)
    if math.isclose(value, base, rel_tol=1e-9):
        return f"the current {fmt_lr(base)}" if named else "the LR now"
    ratio = max(value / base, base / value)
    return f"{ratio:.3g}x {'above' if value > base else 'below'} " + (f"the current {fmt_lr(base)}" if named else "now")


def same_value(param: str, a: Any, b: Any) -> bool:
    """Whether two values of a controlled param are the same setting (LR within slider resolution)."""
    if a is None or b is None:
        return a is b
    if param == "lr":
        return abs(math.log10(float(a)) - math.log10(float(b))) < 0.003
    if param == "weight_decay":
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    return a == b


# ---- the study page --------------------------------------------------------- #


def trial_rows(trials: Sequence[FrozenTrial], now: float | None = None,
               live: dict[int, Metric | None] | None = None) -> list[dict[str, Any]]:
    """One row per trial for the study table, in trial-number order: `steer show`'s row, and more.

    `params` are the lr / optimizer / loss / weight decay a trial ended with; for
    a running trial with a row in `live` (its latest metric), those it trains
    with now, and `live_psnr` its latest PSNR. A running trial's duration is so far.
    """
    rows = []
    live = live or {}
    now = time.time() if now is None else now
    shown = {r["number"]: r for r in record.rows(list(trials))}
    for t in sorted(trials, key=lambda t: t.number):
        rec = record.read(t)
        row = shown[t.number]  # steer show's row: state, psnr, origin, family, note, ...
        optuna_params = row.pop("params")
        # What Optuna sampled, apart from the changes that trained, which are params too (`lr@479`: set
        # when a steered trial ends, given to a promoted, forked or retried one): the steered column's.
        row["searched"] = {k: v for k, v in optuna_params.items() if not record.is_scheduled(k)}
        row["changes"] = {k: v for k, v in optuna_params.items() if record.is_scheduled(k)}
        params = rec.effective
        latest = live.get(t.number) if t.state == TrialState.RUNNING else None
        if latest is not None:
            params = current_settings(t, latest)
        if t.state == TrialState.RUNNING and t.datetime_start is not None:
            row["duration_s"] = max(0.0, now - t.datetime_start.timestamp())
        row.update({
            "live_psnr": latest.psnr if latest is not None else None,
            "paused": rec.paused.get("step") if rec.paused and t.state == TrialState.RUNNING else None,
            "kept": rec.kept,
            "interventions": rec.steering_count,
            "pinned": rec.pinned,
            "params": {k: params[k] for k in CONTROLLED if k in params},
        })
        rows.append(row)
    return rows


def best_so_far(trials: Sequence[FrozenTrial], direction: optuna.study.StudyDirection
                = optuna.study.StudyDirection.MAXIMIZE) -> dict[str, list[Any]]:
    """Completed trials' values by trial number, the best value up to each, and the best trial's number."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.values and
                   math.isfinite(t.value)), key=lambda t: t.number)
    maximize = direction == optuna.study.StudyDirection.MAXIMIZE
    numbers, values, best, steered, best_number = [], [], [], [], None
    for t in done:
        if not best or (t.value > best[-1] if maximize else t.value < best[-1]):
            best_number = t.number
        numbers.append(t.number)
        values.append(t.value)
        best.append(t.value if best_number == t.number else best[-1])
        steered.append(record.read(t).steered)
    return {"number": numbers, "value": values, "best": best, "steered": steered, "best_number": best_number}


def summary_stats(rows: Sequence[dict[str, Any]], best: dict[str, list[Any]],
                  value: ValueName = PSNR) -> list[tuple[str, str]]:
    """(label, value) pairs for the study's headline: trials by state, steered, best PSNR (or value)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    stats = [("trials", str(len(rows)))]
    stats += [(state.lower(), str(counts[state])) for state in ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")
              if counts.get(state)]
    stats.append(("steered", str(sum(r["steered"] for r in rows))))
    stats.append((f"best {value.name}", value.show(best["best"][-1]) if best["best"] else "-"))
    return stats


def pin_rows(pins: dict[str, Pin]) -> list[dict[str, Any]]:
    """The study's pins in the order of the controls."""
    order = {p: i for i, p in enumerate(PINNABLE)}
    return [{"param": p.param, "value": p.value, "shown": fmt_param(p.param, p.value), "by": p.pinned_by,
             "at": p.pinned_at,
             "source_trial": p.source_trial}
            for p in sorted(pins.values(), key=lambda p: order.get(p.param, len(order)))]


# ---- hints and the search space (the study page) ---------------------------------- #

SHOWN_HISTORY = 15  # the newest hint, unhint and space requests the study page lists


def hint_rows(hints: dict[str, Hint], n_trials: int) -> list[dict[str, Any]]:
    """The study's hints by parameter: what each says (`Hint.describe`), how many of its trials have not
    started yet (`n_trials`: the study's trials so far, so the next trial's number), who set it."""
    rows = []
    for h in sorted(hints.values(), key=lambda h: h.param):
        left = h.left(n_trials)
        rows.append({"param": h.param, "shown": h.describe(), "left": left,
                     "left_words": f"{left} left" if left else "used up", "by": h.hinted_by, "at": h.hinted_at})
    return rows


def space_rows(spec: dict[str, Dimension], space: dict[str, Dimension],
               edits: dict[str, SpaceEdit]) -> list[dict[str, Any]]:
    """One row per searched parameter: the range (or choices) later trials draw from, and, where a person
    edited it, the spec's and who edited it."""
    rows = []
    for name, dim in space.items():
        edit = edits.get(name)
        rows.append({"param": name, "kind": dim.kind, "now": search_space.describe(dim),
                     "spec": search_space.describe(spec[name]) if edit is not None and name in spec else None,
                     "by": edit.edited_by if edit else None, "at": edit.edited_at if edit else None})
    return rows


def dimension_hint(dim: Dimension | None) -> str:
    """What a form's value box takes for a parameter: "in [0.001, 0.01] log", "one of adam | sgd"."""
    if dim is None:
        return ""
    return ("one of " if dim.kind == "categorical" else "in ") + search_space.describe(dim)


def _hint_words(param: str, hint: Any) -> str:
    if not isinstance(hint, dict):
        return "none"
    try:
        shown = Hint(param, hint["value"], hint["strength"], hint["trials"], hint["first_trial"], "", 0.0).describe()
    except (KeyError, TypeError, ValueError):
        return fmt(hint)
    return shown[len(param) + 1:]  # "near 0.001, strength 0.8, trials 3-7"


def _space_words(param: str, dim: Any) -> str:
    try:
        return search_space.describe(search_space.from_dict(param, dim))
    except (KeyError, TypeError, ValueError):
        return fmt(dim)


def space_history(commands: Sequence[Command], limit: int | None = SHOWN_HISTORY) -> list[dict[str, Any]]:
    """The study's hint, unhint and space requests, newest first: when, who, what changed (`change`: old -> new)
    or, for a rejected one, what was asked (`what`) and why it was refused (`change`: the server's words)."""
    out = []
    for c in sorted((c for c in commands if c.action in SPACE_ACTIONS), key=lambda c: -c.id):
        param = str(c.args.get("param", "?"))
        result = c.result or {}
        if c.state == "applied":
            words = _hint_words if c.action in ("hint", "unhint") else _space_words
            change = f"{words(param, result.get('old'))} -> {words(param, result.get('new'))}"
            if c.action == "space" and c.args.get("space") is None:
                change += " (the spec's)"
            what = f"{c.action} {param}"
        else:
            asked = " ".join([fmt(c.args["value"])] if "value" in c.args else []) + "".join(
                f" {k}={fmt(v)}" for k, v in c.args.items() if k not in ("param", "value", "space"))
            what = f"{c.action} {param} {asked.strip()}".strip()
            change = c.reason or ""
        out.append({"id": c.id, "action": c.action, "param": param, "state": c.state, "what": what,
                    "change": change, "by": c.requested_by, "at": c.requested_at})
    return out[:limit] if limit else out


# ---- the trial page --------------------------------------------------------- #


def load_trial(control: Control, number: int) -> FrozenTrial | None:
    """One trial of the control's study by number (one trial's rows, not the whole study), or None."""
    return control.trial(number)


def latest_metric(control: Control, live: LiveState | None) -> Metric | None:
    """The metric row published with the trial's live preview (its latest)."""
    if live is None:
        return None
    rows = control.metrics(live.trial, after_step=live.step - 1)
    return rows[-1] if rows else None


def total_steps(control: Control) -> int | None:
    """The spec's steps per trial, as the study recorded it."""
    spec = control.storage.get_study_user_attrs(control.study_id).get(record.SPEC) or {}
    return spec.get("steps")


def metric_settings(latest: Metric) -> dict[str, Any]:
    """The settings a metrics row was published with, and when (`at`)."""
    return {"lr": latest.lr, "optimizer": latest.optimizer, "loss": latest.loss_name,
            "weight_decay": latest.weight_decay, "at": latest.wall_time}


def current_settings(trial: FrozenTrial, latest: Metric | dict[str, Any] | None) -> dict[str, Any]:
    """The trial's lr / optimizer / loss / weight decay now: its latest metric row (or `metric_settings`
    of it), else what it recorded; a change applied after that row was published shows at once, before
    the next row does."""
    if isinstance(latest, Metric):
        latest = metric_settings(latest)
    if latest is not None:
        values, since = {k: latest[k] for k in CONTROLLED}, latest.get("at")
    else:
        params = {**{k: PARAMS[k].default for k in CONTROLLED}, **record.read(trial).effective}
        values, since = {k: params[k] for k in CONTROLLED}, None
    base = dict(values)
    for e in record.read(trial).interventions:
        if since is not None and (e.get("at") or 0) <= since:
            continue
        if e.get("action") == "undo":  # back to the state before a change: what the row says (the next row
            values = dict(base)  # tells the settings it went back to)
            continue
        param = ACTIONS[e["action"]].setting if e.get("action") in ACTIONS else None
        if param in values:
            values[param] = e.get("new")
    return values


def curve_points(metrics: Sequence[Metric], cap: int | None = MAX_CURVE_POINTS) -> dict[str, list[Any]]:
    """Step, loss and PSNR columns of a trial's metric rows, thinned to about `cap` points.

    The last row is always kept, so the curve ends where the trial is.
    """
    rows = list(metrics)
    if cap and len(rows) > cap:
        stride = math.ceil(len(rows) / cap)
        rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
    return {"step": [m.step for m in rows], "loss": [m.loss for m in rows], "psnr": [m.psnr for m in rows]}


def interventions(trial: FrozenTrial) -> list[dict[str, Any]]:
    """The trial's applied interventions (the `steer.interventions` user attribute), each with a label."""
    out = []
    for e in record.read(trial).interventions:
        action = e.get("action", "?")
        if action == "reset":
            change = f"seed {fmt(e.get('new'))}"
        elif action == "promote":
            change = "enqueued a clean run"
        elif action == "prune":
            change = "stopped"
        elif action == "find_lr":
            found = e.get("new", {}).get("suggestion") if isinstance(e.get("new"), dict) else None
            change = "LR range test: " + (f"suggested {fmt_lr(found)}" if found is not None else "no suggestion")
        elif action == "pin":
            param = (e.get("args") or {}).get("param", "")
            change = f"{param}: {fmt_param(param, e.get('old'))} -> {fmt_param(param, e.get('new'))}"
        elif action in ACTIONS and ACTIONS[action].setting:
            param = ACTIONS[action].setting
            change = f"{fmt_param(param, e.get('old'))} -> {fmt_param(param, e.get('new'))}"
        elif action == "undo":  # the record's words, as in the optuna-dashboard note
            change = record.change(e)
        elif action == "fork":
            new = e.get("new") if isinstance(e.get("new"), dict) else {}
            change = (f"forked as #{new['trial']}" if "trial" in new else "forked") + " " + \
                fork_changes_words(new.get("changes"))
        elif action in ("pause", "resume", "keep"):
            change = {"pause": "held at this step", "resume": "trains on", "keep": "never pruned automatically"}[action]
        else:
            change = f"{fmt(e.get('old'))} -> {fmt(e.get('new'))}"
        out.append({"command": e.get("command"), "step": e.get("step"), "action": action, "change": change,
                    "by": e.get("by", ""), "at": e.get("at"), "label": f"{action} {change}"})
    return out


def command_status(cmd: Command) -> dict[str, Any]:
    """One request and what became of it, in words."""
    if cmd.state == "applied":
        status = f"applied at step {cmd.applied_step}" if cmd.applied_step is not None else "applied"
    elif cmd.state == "pending":
        status = "pending: waiting for the trial's next poll"
    else:
        status = f"{cmd.state}: {cmd.reason}" if cmd.reason else cmd.state
    args = cmd.args
    setting = args.get("param") or (ACTIONS[cmd.action].setting if cmd.action in ACTIONS else None)
    value = args.get("value")
    shown = fmt_param(setting, value) if isinstance(value, (int, float)) else fmt(value)  # as it was asked
    what = cmd.action + (f" {fmt(args.get('param'))}" if "param" in args else "") + \
        (f" {shown}" if "value" in args else "") + \
        (f" seed {args['seed']}" if "seed" in args else "")
    if cmd.action == "fork" and isinstance(args.get("changes"), dict):  # what the fork starts with, what it made
        what += " " + fork_changes_words(args["changes"])
        made = forks([cmd])
        if made:
            status += f": trial {made[0]['trial']}"
    return {"id": cmd.id, "trial": cmd.trial, "action": cmd.action, "what": what, "state": cmd.state,
            "status": status, "by": cmd.requested_by, "at": cmd.requested_at}


def request_statuses(commands: Sequence[Command], mine: Sequence[int]) -> list[dict[str, Any]]:
    """Every command's status, newest first; `mine` marks those whose ids this browser keeps."""
    kept = set(mine)
    return [{**command_status(c), "mine": c.id in kept} for c in sorted(commands, key=lambda c: -c.id)]


def find_lr(commands: Sequence[Command]) -> dict[str, Any] | None:
    """The trial's latest find_lr request in words (`status`), and the newest range test applied (`test`:
    the curve, the suggestion, the rule and the reason, and the LR the trial had then); None without any.

    The test stays shown while a newer request waits, or when the newer one was refused."""
    finds = [c for c in commands if c.action == "find_lr"]
    if not finds:
        return None
    latest = finds[-1]
    if latest.state == "pending":
        status = "range test running…"
    elif latest.state == "applied":
        found = ((latest.result or {}).get("range_test") or {}).get("suggestion")
        status = f"suggested {fmt_lr(found)}" if found is not None else "no suggestion"
    else:
        status = f"{latest.state}: {latest.reason}" if latest.reason else latest.state
    shown = next((c for c in reversed(finds) if c.state == "applied" and (c.result or {}).get("range_test")), None)
    test = None
    if shown is not None:
        raw = shown.result["range_test"]
        lrs, losses = list(raw.get("lrs") or []), list(raw.get("losses") or [])
        suggestion = raw.get("suggestion")
        at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / suggestion)), default=None) \
            if suggestion and lrs else None
        then = shown.result.get("old")
        test = {"command": shown.id, "lrs": lrs, "losses": losses, "suggestion": suggestion,
                "suggested_loss": losses[at] if at is not None else None, "rule": raw.get("rule", ""),
                "reason": raw.get("reason", ""), "steps": raw.get("steps"),
                "lr_then": then if isinstance(then, (int, float)) and then > 0 else None,
                "step": shown.applied_step, "by": shown.requested_by, "at": shown.requested_at}
    return {"id": latest.id, "state": latest.state, "status": status, "test": test}


# ---- forks and undo (steer.checkpoints) ------------------------------------------ #

MAX_FAMILY = 6  # the trial page overlays at most this many relatives' curves: the parent, the newest forks


def fork_changes_words(changes: Any) -> str:
    """A fork's changes as the page says them: "with lr 3.00e-4, optimizer sgd", or "with no change"."""
    if not isinstance(changes, dict) or not changes:
        return "with no change"
    return "with " + ", ".join(f"{k.replace('_', ' ')} {fmt_param(k, v)}" for k, v in changes.items())


def forks(commands: Sequence[Command]) -> list[dict[str, Any]]:
    """The trial's forks, oldest first, from its applied fork commands (their result names the new trial):
    no read of the study's other trials."""
    out = []
    for c in commands:
        new = (c.result or {}).get("new") if c.action == "fork" and c.state == "applied" else None
        if isinstance(new, dict) and isinstance(new.get("trial"), int):
            out.append({"trial": new["trial"], "step": new.get("step"), "changes": new.get("changes") or {},
                        "by": c.requested_by, "command": c.id})
    return out


def fork_status(commands: Sequence[Command], mine: Sequence[int] | None) -> dict[str, Any] | None:
    """What became of this browser's latest fork request: `state`, and `trial` / `step` / `changes` once
    applied or `reason` once refused; None when this browser sent none."""
    ours = set(mine or [])
    latest = next((c for c in reversed(list(commands)) if c.action == "fork" and c.id in ours), None)
    if latest is None:
        return None
    out = {"id": latest.id, "state": latest.state, "reason": latest.reason, "trial": None}
    made = forks([latest])
    if made:
        out.update(trial=made[0]["trial"], step=made[0]["step"], changes=made[0]["changes"])
    return out


def undo_status(commands: Sequence[Command]) -> dict[str, Any] | None:
    """What became of the trial's latest undo (by anyone): its `state` and `text`; None without any."""
    latest = next((c for c in reversed(list(commands)) if c.action == "undo"), None)
    if latest is None:
        return None
    if latest.state == "pending":
        text = "undo sent: waiting for the trial's next step boundary"
    elif latest.state == "applied":
        took = (latest.result or {}).get("old")
        text = f"undone at step {latest.applied_step}" + (f": took back {took}" if took else "")
    else:
        text = f"undo {latest.state}: {latest.reason}" if latest.reason else f"undo {latest.state}"
    return {"id": latest.id, "state": latest.state, "text": text}


def relatives(rec: record.TrialRecord, commands: Sequence[Command]) -> list[dict[str, Any]]:
    """The trials whose curves the trial page overlays on its own: a fork's parent (from its record), then
    its newest forks (from its commands), `MAX_FAMILY` in all; each with its `trial`, the `step` it parts
    from this one at, its `role` and its legend `name`."""
    out = []
    if rec.fork_of is not None:
        step = (rec.resume or {}).get("step")
        out.append({"trial": rec.fork_of, "step": step, "role": "parent",
                    "name": f"trial {rec.fork_of} (parent, forked at step {step})"})
    for f in forks(commands)[-(MAX_FAMILY - len(out)):]:
        out.append({"trial": f["trial"], "step": f["step"], "role": "fork",
                    "name": f"trial {f['trial']} (fork at step {f['step']})"})
    return out


@dataclass(frozen=True)
class ForkForm:
    """The fork card's fields checked by the action table's rules: the changes to send (only the fields
    filled in), or why one is refused (`error`, the server's words)."""

    changes: dict[str, Any]
    error: str | None = None


def fork_form(lr: Any, optimizer: Any, loss: Any, weight_decay: Any) -> ForkForm:
    """The fork card's fields as `fork` changes: an empty field keeps the parent's value. The LR is checked
    and rounded as the LR control does it (`check_lr`), the weight decay by `check_setting`; the optimizer
    and the loss are the trial's own choices (the server checks them, as for the steering controls)."""
    changes: dict[str, Any] = {}
    text = lr.strip() if isinstance(lr, str) else lr
    if text not in (None, ""):
        check = check_lr(text, None, None)
        if check.value is None:
            return ForkForm({}, check.error)
        changes["lr"] = check.value
    for setting, value in (("optimizer", optimizer), ("loss", loss)):
        if value not in (None, ""):
            changes[setting] = value
    text = weight_decay.strip() if isinstance(weight_decay, str) else weight_decay
    if text not in (None, ""):
        try:
            changes["weight_decay"] = check_setting("weight_decay", text)
        except ValueError as exc:
            return ForkForm({}, str(exc))
    return ForkForm({k: changes[k] for k in SETTINGS if k in changes})


def synced_controls(current: dict[str, Any], applied: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the controls should show: the values last set by hand, else the trial's current ones.

    `applied` is the trial's `steer.interventions`. An LR set by hand wins over
    the current one, which may follow a schedule.
    """
    values = dict(current)
    for e in applied:
        if e.get("action") == "undo":  # the trial went back to its settings before a change: show the trial's
            values = dict(current)
            continue
        param = ACTIONS[e["action"]].setting if e.get("action") in ACTIONS else None
        if param:
            values[param] = e.get("new")
    return values


def fmt_lr(lr: float | None) -> str:
    """A learning rate as every LR is shown, on every page: 3.16e-4 (3 significant digits)."""
    return "-" if lr is None else _compact_exponent(f"{lr:.2e}")


def _compact_exponent(text: str) -> str:
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


# ---- the person's pace -------------------------------------------------------- #


def clock(at: float | None) -> str:
    """A time of day as the pages show it: 14:03:27 (the app's local time)."""
    return time.strftime("%H:%M:%S", time.localtime(at)) if at else "?"


def paused_words(paused: dict[str, Any] | None) -> str | None:
    """A paused trial in words: "paused since 14:03:27 at step 1200 (by alice)"; None when it is not."""
    if not paused:
        return None
    return f"paused since {clock(paused.get('since'))} at step {paused.get('step', '?')} (by {paused.get('by', '?')})"


def held_words(held: dict[str, Any] | None) -> str | None:
    """A held study in words, for the banner every page shows; None when it is not held."""
    if not held:
        return None
    return f"Study held by {held.get('by', '?')} since {clock(held.get('at'))}: no new trial starts"


# ---- the wall ----------------------------------------------------------------- #


def wall_cards(lives: Sequence[LiveState], latest: dict[int, Metric | None],
               paused: dict[int, dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:
    """One card per running trial: its step, the settings and PSNR of its latest metric row, and
    whether it is paused (`paused`: the trials' `steer.paused`)."""
    cards = []
    paused = paused or {}
    for live in sorted(lives, key=lambda s: s.trial):
        m = latest.get(live.trial)
        held = paused.get(live.trial)
        cards.append({
            "trial": live.trial, "step": live.step, "wall_time": live.wall_time, "has_image": live.png is not None,
            "psnr": m.psnr if m else None, "lr": m.lr if m else None, "optimizer": m.optimizer if m else None,
            "loss": m.loss_name if m else None, "weight_decay": m.weight_decay if m else None,
            "paused": held.get("step", live.step) if held else None,
        })
    return cards
