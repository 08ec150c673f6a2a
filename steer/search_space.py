"""What later trials draw from: the spec's search space, a person's edits to it, and their hints.

A space edit (`steer ctl space lr --low 1e-4 --high 1e-2`) replaces one dimension
for every trial that starts after it. A float or int range may narrow or widen,
inside what the parameter allows at all (`steer.spec.PARAMS`): Optuna allows a
different range per trial and records each trial's own. A categorical keeps the
spec's list of choices as its distribution, because Optuna keeps one list per
parameter for a whole study; an edit can only narrow it to some of them, and the
sampler then draws only those (a draw of the study's sampler outside them is
replaced by one of them at random). An edit keeps the spec's kind and log scale.

A hint (`steer ctl hint lr 1e-3 --strength 0.8 --trials 5`) is a soft pin: for the
next K trials the parameter is drawn near the hinted value with a probability that
starts at the strength S and falls linearly to 0 over those K trials,
p_i = S (K - i) / K for the i-th trial after the hint (i = 0 .. K-1); otherwise the
study's own sampler draws it. Near means:
- a log-scaled float: log-normal around the value, sigma = ln 2 / 2.5, so 98.8 % of
  hinted draws lie within a factor of 2 of it;
- a linear float or an int: normal around it, sigma = 1/20 of the range;
- a categorical: the hinted choice with probability 3/4, else another one at random
  (a hint is not a pin).
Draws outside the range are drawn again, and clipped after 20 tries. Whether a hint
fires and what it draws come from a generator seeded by the study seed, the trial
number and the parameter, so a study run again hints the same trials alike.

Research on user priors in Bayesian optimisation (piBO, PriorBand, DynaBO) reports
that a good prior saves trials; the decay bounds what a bad one costs: at most its K
trials draw near it, and fewer the weaker it is.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from steer.spec import PARAMS, Dimension

LOG_SIGMA = math.log(2) / 2.5  # P(within a factor of 2) = P(|Z| < 2.5) = 98.8 %
LINEAR_SIGMA = 1 / 20  # of the range
CHOICE_WEIGHT = 0.75  # the hinted choice's probability when the hint fires
MAX_HINT_TRIALS = 10_000


# ---- dimensions as JSON (the study records the spec's space; edits are stored alike) ------- #


def to_dict(dim: Dimension) -> dict[str, Any]:
    if dim.kind == "categorical":
        return {"kind": "categorical", "choices": list(dim.choices)}
    return {"kind": dim.kind, "low": dim.low, "high": dim.high, "log": dim.log, "step": dim.step}


def from_dict(name: str, d: dict[str, Any]) -> Dimension:
    if d["kind"] == "categorical":
        return Dimension(name, "categorical", choices=tuple(d["choices"]))
    return Dimension(name, d["kind"], low=d["low"], high=d["high"], log=bool(d.get("log")), step=d.get("step"))


def from_distribution(name: str, dist: BaseDistribution) -> Dimension:
    """A trial's recorded distribution as a dimension (a study steered from a user's own objective)."""
    if isinstance(dist, CategoricalDistribution):
        return Dimension(name, "categorical", choices=tuple(dist.choices))
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    step = dist.step if (kind == "float" and dist.step is not None) or (kind == "int" and dist.step != 1) else None
    return Dimension(name, kind, low=dist.low, high=dist.high, log=dist.log, step=step)


def describe(dim: Dimension) -> str:
    if dim.kind == "categorical":
        return " | ".join(map(str, dim.choices))
    return f"[{dim.low:g}, {dim.high:g}]" + (" log" if dim.log else "") + (f" step {dim.step:g}" if dim.step else "")


def contains(dim: Dimension, value: Any) -> bool:
    if dim.kind == "categorical":
        return value in dim.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and dim.low <= value <= dim.high


# ---- checking a request (the same rules and messages for the CLI and the app) ----------- #


def _number(where: str, key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} --{key}: got {value!r}; expected a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} --{key}: got {value!r}; expected a finite number")
    return number


def _choice(name: str, raw: Any) -> Any:
    """One categorical value: a name, or a number for a numeric parameter searched as choices
    (`fourier_features = [16, 32, 64]`), from text too."""
    pdef = PARAMS[name]
    if pdef.kind != "choice" and isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise ValueError(f"got {raw!r}; expected a number, {pdef.allowed()}") from None
    if pdef.kind == "int" and isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return pdef.check(raw)


def check_edit(spec_dim: Dimension, options: dict[str, Any]) -> Dimension | None:
    """The dimension a space edit asks for (None: back to the spec's), or ValueError saying what is wrong.

    `options`: {"low", "high"} for floats and ints (either may be left out: it stays as it
    is in the spec), {"choices": [...] or "a,b,c"} for categoricals, {"reset": True}.
    """
    name = spec_dim.name
    given = {k for k, v in options.items() if v is not None and v is not False and v != ""}  # 0 is a value
    if given - {"low", "high", "choices", "reset"}:
        raise ValueError(f"space {name}: unknown option(s) {', '.join(sorted(given - {'low', 'high', 'choices', 'reset'}))}")
    if "reset" in given:
        if given != {"reset"}:
            raise ValueError(f"space {name}: --reset takes no other option")
        return None
    if not given:
        raise ValueError(f"space {name}: give --low/--high (a number range), --choices a,b,c or --reset")
    pdef = PARAMS[name]
    if spec_dim.kind == "categorical":
        if given != {"choices"}:
            raise ValueError(f"space {name}: a categorical parameter takes --choices (now "
                             f"{describe(spec_dim)}), not --low/--high")
        raw = options["choices"]
        names = [c.strip() for c in raw.split(",")] if isinstance(raw, str) else list(raw)
        names = [c for c in names if c != ""]
        if not names:
            raise ValueError(f"space {name}: --choices is empty; give at least one of {pdef.allowed()}")
        try:
            checked = tuple(_choice(name, c) for c in names)
        except ValueError as exc:
            raise ValueError(f"space {name} --choices: {exc}") from None
        if len(set(checked)) != len(checked):
            raise ValueError(f"space {name} --choices: has duplicates: {', '.join(names)}")
        outside = [c for c in checked if c not in spec_dim.choices]
        if outside:
            raise ValueError(f"space {name} --choices: {', '.join(map(str, outside))} not among the spec's choices "
                             f"({describe(spec_dim)}); Optuna keeps one list of choices per parameter for a whole "
                             f"study, so an edit can only narrow it")
        return replace(spec_dim, choices=checked)
    if "choices" in given:
        raise ValueError(f"space {name}: a {spec_dim.kind} parameter takes --low/--high (now "
                         f"{describe(spec_dim)}), not --choices")
    low = _number(f"space {name}", "low", options["low"]) if "low" in given else spec_dim.low
    high = _number(f"space {name}", "high", options["high"]) if "high" in given else spec_dim.high
    for key, value in (("low", low), ("high", high)):
        if spec_dim.kind == "int" and not float(value).is_integer():
            raise ValueError(f"space {name} --{key}: got {value:g}; {name} is an integer parameter")
        try:
            pdef.check(int(value) if spec_dim.kind == "int" else value)
        except ValueError as exc:
            raise ValueError(f"space {name} --{key}: {exc}") from None
    if not low < high:
        raise ValueError(f"space {name}: --low must be below --high; got [{low:g}, {high:g}] (an empty or "
                         f"inverted range)")
    if spec_dim.log and low <= 0:
        raise ValueError(f"space {name} --low: got {low:g}; {name} is searched on a log scale, so the range "
                         f"must stay above 0")
    if spec_dim.kind == "int":
        low, high = int(low), int(high)
    return replace(spec_dim, low=low, high=high)


def check_hint(dim: Dimension, value: Any, strength: Any, trials: Any) -> dict[str, Any]:
    """A hint's checked value, strength and number of trials, or ValueError saying what is wrong."""
    name = dim.name
    if dim.kind == "categorical":
        try:
            value = _choice(name, value)
        except ValueError as exc:
            raise ValueError(f"hint {name}: {exc}") from None
    else:
        value = _number(f"hint {name}", "value", value) if isinstance(value, str) or value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"hint {name}: got {value!r}; expected a number")
        if dim.kind == "int":
            if not float(value).is_integer():
                raise ValueError(f"hint {name}: got {value:g}; {name} is an integer parameter")
            value = int(value)
        else:
            value = float(value)
    if not contains(dim, value):
        raise ValueError(f"hint {name}: {value!r} is outside the space later trials draw from "
                         f"({describe(dim)}); widen it first (`steer ctl space {name}`, or the study page's search "
                         f"space panel)")
    strength = _number(f"hint {name}", "strength", strength)
    if not 0 <= strength <= 1:
        raise ValueError(f"hint {name} --strength: got {strength:g}; allowed: [0, 1]")
    if isinstance(trials, str) and trials.strip().isdigit():
        trials = int(trials)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_HINT_TRIALS:
        raise ValueError(f"hint {name} --trials: got {trials!r}; allowed: a whole number in [1, {MAX_HINT_TRIALS}]")
    return {"value": value, "strength": strength, "trials": trials}


# ---- the hint at work (the sampler's side) ------------------------------------------------ #


def hint_probability(hint: dict[str, Any], trial_number: int) -> float:
    """How likely trial `trial_number` is drawn near the hint: S (K - i) / K for the i-th trial after it."""
    i = trial_number - hint["first_trial"]
    if not 0 <= i < hint["trials"]:
        return 0.0
    return hint["strength"] * (hint["trials"] - i) / hint["trials"]


def hint_rng(seed: int | None, trial_number: int, param: str) -> random.Random:
    return random.Random(f"steer-hint:{seed}:{trial_number}:{param}")  # str seeds hash the same in every process


def draw_near(dist: BaseDistribution, value: Any, rng: random.Random) -> Any:
    """A value of `dist` near `value` (see the module docstring for what near means)."""
    if isinstance(dist, CategoricalDistribution):
        others = [c for c in dist.choices if c != value]
        if value in dist.choices and (not others or rng.random() < CHOICE_WEIGHT):
            return value
        return rng.choice(others or list(dist.choices))
    low, high = dist.low, dist.high
    for _ in range(20):
        if dist.log:
            x = math.exp(rng.gauss(math.log(value), LOG_SIGMA))
        else:
            x = rng.gauss(value, LINEAR_SIGMA * (high - low))
        if low <= x <= high:
            break
    x = min(max(x, low), high)
    step = getattr(dist, "step", None)
    if isinstance(dist, IntDistribution):
        step = step or 1
        x = low + round((x - low) / step) * step
        return int(min(max(x, low), high))
    if step is not None:
        x = min(max(low + round((x - low) / step) * step, low), high)
    return float(x)


def distribution(dim: Dimension) -> BaseDistribution:
    """The Optuna distribution a trial suggests `dim` with."""
    if dim.kind == "categorical":
        return CategoricalDistribution(list(dim.choices))
    if dim.kind == "int":
        return IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step or 1)
    return FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)


__all__ = ["check_edit", "check_hint", "contains", "describe", "distribution", "draw_near", "from_dict",
           "from_distribution", "hint_probability", "hint_rng", "to_dict"]
