"""The record: what steer keeps about a study and its trials, under `steer.*` attributes.

Optuna's own tables are never altered; what a plain Optuna study cannot say
(what a person changed while a trial ran, what really trained, where a trial
came from) is written as user attributes with the keys below, so that plain
Optuna, optuna-dashboard and every steer reader see the same record. This
module owns those keys: the writers (the trial side, the objective, the
control plane) and the readers (`steer show`, the comparison, the app, the
optuna-dashboard note) use these names and `read()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from steer.actions import ACTIONS

PREFIX = "steer."

# ---- study attributes ------------------------------------------------------- #
SPEC = "steer.spec"  # what a replay and the app need of the spec (image, size, steps, ...)
ARTIFACTS = "steer.artifacts"  # the study's artifact folder (images)
HELD = "steer.held"  # {"by", "at"} while the study is held (no new trial starts), else None

# ---- trial attributes: how it started ---------------------------------------- #
PARAMS = "steer.params"  # every param the built-in objective trained with at step 0 (a replay starts here)
SEED = "steer.seed"
BACKEND = "steer.backend"
DEVICE = "steer.device"
TORCH_THREADS = "steer.torch_threads"
PINNED = "steer.pinned"  # the study pins this trial honoured when it started
CHOICES = "steer.choices"  # the optimizer and loss names this trial can switch to
BASELINE = "steer.baseline"  # the spec's hand-picked first trial
PROMOTED_FROM = "steer.promoted_from"  # the trial whose effective params this one re-runs
OVERRIDES = "steer.overrides"  # the values a promoted trial must train with, searched or not

# ---- trial attributes: what happened ----------------------------------------- #
INTERVENTIONS = "steer.interventions"  # every applied command, in order (see `entry`)
STEERED = "steer.steered"  # True once an intervention changed what trains
EFFECTIVE_PARAMS = "steer.effective_params"  # the params as they stood at the end
FINAL_STEP = "steer.final_step"
TRAIN_SECONDS = "steer.train_seconds"
PAUSED = "steer.paused"  # {"since", "step", "by"} while the trial is paused, else None
PAUSED_SECONDS = "steer.paused_seconds"  # how long it was paused in all
SPARED = "steer.spared"  # why the pruner's verdict was overruled (kept, watched), with the step
PRUNED_REASON = "steer.pruned_reason"
DIVERGED = "steer.diverged"
FAIL_REASON = "steer.fail_reason"


def entry(command: int, action: str, args: dict[str, Any], old: Any, new: Any, step: int, by: str,
          at: float | None = None) -> dict[str, Any]:
    """One applied intervention as it is recorded in `steer.interventions` and the command's result."""
    return {"command": command, "action": action, "args": args, "old": old, "new": new, "step": step,
            "at": time.time() if at is None else at, "by": by}


def steers(interventions: list[dict[str, Any]]) -> bool:
    """Whether any of these interventions changed what trains (a pin or a promote does not)."""
    return any(ACTIONS[e["action"]].steers for e in interventions if e.get("action") in ACTIONS)


@dataclass(frozen=True)
class TrialRecord:
    """Everything steer recorded about one trial, read from its attributes."""

    number: int
    state: str
    value: float | None
    sampled: dict[str, Any]  # what Optuna's sampler suggested (`trial.params`)
    started_with: dict[str, Any]  # what trained at step 0
    effective: dict[str, Any]  # what trained at the end (or now, for a running trial's last record)
    interventions: list[dict[str, Any]] = field(default_factory=list)
    pinned: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    promoted_from: int | None = None
    note: str | None = None  # why it was pruned, diverged or failed
    duration_s: float | None = None
    marked_steered: bool = False  # `steer.steered` as written
    paused: dict[str, Any] | None = None  # since when, at which step, by whom; None when not paused
    paused_seconds: float = 0.0
    spared: str | None = None  # "would be pruned at step N (watched)"

    @property
    def kept(self) -> bool:
        """Exempt from automatic pruning by a person (`keep`)."""
        return any(e.get("action") == "keep" for e in self.interventions)

    @property
    def steered(self) -> bool:
        """Whether a person changed what trained. Read from the interventions (a trial from before
        this rule counted a pin as steering); without them, as the trial marked itself."""
        return steers(self.interventions) if self.interventions else self.marked_steered

    @property
    def steering_count(self) -> int:
        """How many interventions changed what trains."""
        return sum(1 for e in self.interventions if e.get("action") in ACTIONS and ACTIONS[e["action"]].steers)

    @property
    def origin(self) -> str | None:
        """Where the trial came from, in words: baseline, promoted from #N, or None (the sampler)."""
        if self.promoted_from is not None:
            return f"promoted from #{self.promoted_from}"
        return "baseline" if self.baseline else None


def read(trial: FrozenTrial) -> TrialRecord:
    """The record of `trial` (any Optuna trial: one steer never touched reads as plain)."""
    attrs = trial.user_attrs
    started = {**trial.params, **(attrs.get(PARAMS) or {})}
    done = trial.datetime_complete and trial.datetime_start
    return TrialRecord(
        number=trial.number, state=trial.state.name, value=trial.value if trial.values else None,
        sampled=dict(trial.params), started_with=started,
        effective={**started, **(attrs.get(EFFECTIVE_PARAMS) or {})},
        interventions=list(attrs.get(INTERVENTIONS) or []), pinned=dict(attrs.get(PINNED) or {}),
        baseline=bool(attrs.get(BASELINE, False)), promoted_from=attrs.get(PROMOTED_FROM),
        note=attrs.get(PRUNED_REASON) or attrs.get(DIVERGED) or attrs.get(FAIL_REASON),
        duration_s=round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2) if done else None,
        marked_steered=bool(attrs.get(STEERED, False)),
        paused=attrs.get(PAUSED), paused_seconds=float(attrs.get(PAUSED_SECONDS) or 0.0), spared=attrs.get(SPARED),
    )


def row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as plain data: what `steer show` prints and `--json` emits, the app's table row."""
    rec = read(trial)
    return {"number": rec.number, "state": rec.state, "psnr": rec.value, "params": rec.sampled,
            "duration_s": rec.duration_s, "steered": rec.steered, "baseline": rec.baseline,
            "promoted_from": rec.promoted_from, "origin": rec.origin, "note": rec.note}


def choices(trial: FrozenTrial, setting: str) -> tuple[str, ...] | None:
    """The names `setting` (optimizer, loss) can take on this trial, or None when it did not say
    (trials from before steer recorded it: the spec's names apply)."""
    recorded = (trial.user_attrs.get(CHOICES) or {}).get(setting)
    return None if recorded is None else tuple(recorded)


# ---- the optuna-dashboard note ------------------------------------------------ #


def note(number: int, interventions: list[dict[str, Any]]) -> str:
    """The optuna-dashboard note of a steered trial: its intervention timeline in markdown."""
    lines = [f"## Trial {number}: steered", "", "| step | action | old | new | by | when (UTC) |",
             "|---:|---|---|---|---|---|"]
    for e in interventions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        new = "enqueued a clean run of these effective params" if e["action"] == "promote" else fmt(e["new"])
        lines.append(f"| {e['step']} | {e['action']} {fmt(e['args'])} | {fmt(e['old'])} | {new} "
                     f"| {e['by']} | {when} |")
    return "\n".join(lines) + "\n"


def fmt(v: Any) -> str:
    """A recorded value in a line of text: floats with 4 significant digits, dicts flat."""
    if v is None or v == {}:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def promotion(effective: dict[str, Any], source: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params and user attrs to enqueue a clean run of `effective` (a trial's effective params).

    Every effective value goes in as a fixed param (Optuna ignores those never
    suggested) and as `steer.overrides`, which the objective applies to params
    the spec does not search (e.g. a loss changed by hand while the spec fixes it).
    """
    return dict(effective), {PROMOTED_FROM: source, OVERRIDES: dict(effective)}
