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
from optuna.trial import FrozenTrial, TrialState

from steer import record
from steer.actions import ACTIONS, PINNABLE, SETTINGS
from steer.control import Command, Control, LiveState, Metric, Pin
from steer.spec import PARAMS

LR_MIN_LOG10 = round(math.log10(PARAMS["lr"].low))  # -7: the slider's range is the allowed range
LR_MAX_LOG10 = round(math.log10(PARAMS["lr"].high))  # 0
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


def lr_to_slider(lr: float) -> float:
    """The slider position (log10 of the learning rate, clamped to the slider's range)."""
    if not lr or lr <= 0 or not math.isfinite(lr):
        return float(LR_MIN_LOG10)
    return round(min(max(math.log10(lr), LR_MIN_LOG10), LR_MAX_LOG10), 2)


def slider_to_lr(position: float) -> float:
    """The learning rate a slider position asks for, rounded to 3 significant digits."""
    return float(f"{10.0 ** position:.3g}")


def same_value(param: str, a: Any, b: Any) -> bool:
    """Whether two values of a controlled param are the same setting (LR within slider resolution)."""
    if a is None or b is None:
        return a is b
    if param == "lr":
        return abs(math.log10(float(a)) - math.log10(float(b))) < 0.006
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
    for t in sorted(trials, key=lambda t: t.number):
        rec = record.read(t)
        row = record.row(t)  # number, state, psnr, steered, baseline, note, duration_s of a finished trial
        row["searched"] = row.pop("params")  # what Optuna sampled
        params = rec.effective
        latest = live.get(t.number) if t.state == TrialState.RUNNING else None
        if latest is not None:
            params = current_settings(t, latest)
        if t.state == TrialState.RUNNING and t.datetime_start is not None:
            row["duration_s"] = max(0.0, now - t.datetime_start.timestamp())
        row.update({
            "live_psnr": latest.psnr if latest is not None else None,
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
    return [{"param": p.param, "value": p.value, "by": p.pinned_by, "at": p.pinned_at,
             "source_trial": p.source_trial}
            for p in sorted(pins.values(), key=lambda p: order.get(p.param, len(order)))]


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


def current_settings(trial: FrozenTrial, latest: Metric | None) -> dict[str, Any]:
    """The trial's lr / optimizer / loss / weight decay now: its latest metric, else what it recorded."""
    if latest is not None:
        return {"lr": latest.lr, "optimizer": latest.optimizer, "loss": latest.loss_name,
                "weight_decay": latest.weight_decay}
    params = {**{k: PARAMS[k].default for k in CONTROLLED}, **record.read(trial).effective}
    return {k: params[k] for k in CONTROLLED}


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
        elif action == "pin":
            param = (e.get("args") or {}).get("param", "")
            change = f"{param}: {fmt(e.get('old'))} -> {fmt(e.get('new'))}"
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
    what = cmd.action + (f" {fmt(args.get('param'))}" if "param" in args else "") + \
        (f" {fmt(args['value'])}" if "value" in args else "") + \
        (f" seed {args['seed']}" if "seed" in args else "")
    return {"id": cmd.id, "trial": cmd.trial, "action": cmd.action, "what": what, "state": cmd.state,
            "status": status, "by": cmd.requested_by, "at": cmd.requested_at}


def request_statuses(commands: Sequence[Command], mine: Sequence[int]) -> list[dict[str, Any]]:
    """Every command's status, newest first; `mine` marks those whose ids this browser keeps."""
    kept = set(mine)
    return [{**command_status(c), "mine": c.id in kept} for c in sorted(commands, key=lambda c: -c.id)]


def synced_controls(current: dict[str, Any], applied: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the controls should show: the values last set by hand, else the trial's current ones.

    `applied` is the trial's `steer.interventions`. An LR set by hand wins over
    the current one, which may follow a schedule.
    """
    values = dict(current)
    for e in applied:
        param = ACTIONS[e["action"]].setting if e.get("action") in ACTIONS else None
        if param:
            values[param] = e.get("new")
    return values


def fmt_lr(lr: float | None) -> str:
    """A learning rate as the slider shows it: 3.16e-4."""
    return "-" if lr is None else _compact_exponent(f"{lr:.2e}")


def _compact_exponent(text: str) -> str:
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


# ---- the wall ----------------------------------------------------------------- #


def wall_cards(lives: Sequence[LiveState], latest: dict[int, Metric | None]) -> list[dict[str, Any]]:
    """One card per running trial: its step and the settings and PSNR of its latest metric row."""
    cards = []
    for live in sorted(lives, key=lambda s: s.trial):
        m = latest.get(live.trial)
        cards.append({
            "trial": live.trial, "step": live.step, "wall_time": live.wall_time, "has_image": live.png is not None,
            "psnr": m.psnr if m else None, "lr": m.lr if m else None, "optimizer": m.optimizer if m else None,
            "loss": m.loss_name if m else None, "weight_decay": m.weight_decay if m else None,
        })
    return cards
