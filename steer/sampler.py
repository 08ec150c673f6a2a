"""The sampler of a steered study: the spec's sampler, with the study's pins applied to every new trial,
its hints to the next few (steer.search_space), and, by default, the steered trials kept out of what
it learns from.

Why steered trials are excluded (`[sampler] steered = "exclude"`, the default):
Optuna cannot change a trial's params once suggested, so a steered trial's
sampled params say what it started with, not what trained (its changes are
added as params of their own, `lr@479`, which no new trial suggests). A trial
sampled at lr 2.5e-3 that a person turned down to 3e-4 and that then did well
would teach TPE that 2.5e-3 is good. Hidden from the sampler, it still counts
in the budget, the pruner's statistics and every display; its promoted clean
run (`promote`), which trains the whole schedule unsteered, is what the sampler
learns from. `steered = "sampled"` is the old behaviour: every trial informs
the sampler.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial

from steer import record, search_space
from steer.spec import STEERED_MODES
from steer.storage import study_view


def is_steered(trial: FrozenTrial) -> bool:
    """Whether a person changed what `trial` trained (from its record)."""
    return record.read(trial).steered


class SteerSampler(optuna.samplers.BaseSampler):
    """A sampler that returns the study's pinned values, draws hinted params near their hints,
    hides steered trials from `base` (unless `steered="sampled"`) and leaves the rest to `base`.

    Pins and hints are read from the control plane when each trial starts (so
    every worker honours those set after it started), like Optuna's
    `PartialFixedSampler` but not living in one process. Pins win over hints.
    Whether a hint fires for a trial is decided then too, so that a fired
    parameter is left out of `base`'s joint (multivariate) draw, as a pin is.
    `space` gives the space edits: a narrowed categorical is drawn only among its
    edited choices (Optuna keeps one list of choices per parameter per study, so
    the objective still suggests the spec's list). `seed` seeds the hints' draws
    (with the trial number and parameter).
    """

    def __init__(self, base: optuna.samplers.BaseSampler, pins: Callable[[], dict[str, Any]] | None = None,
                 steered: str = "exclude", hints: Callable[[], dict[str, dict[str, Any]]] | None = None,
                 space: Callable[[], dict[str, Any]] | None = None, seed: int | None = None) -> None:
        if steered not in STEERED_MODES:
            raise ValueError(f"steered: got {steered!r}; allowed: {' | '.join(STEERED_MODES)}")
        self.base = base
        self.steered = steered
        self.seed = seed
        self._read_pins = pins or dict
        self._read_hints = hints or dict
        self._read_space = space or dict
        self._pins: dict[str, Any] = {}
        self._choices: dict[str, tuple[Any, ...]] = {}  # categoricals narrowed by a space edit
        self._fired: dict[str, tuple[Any, Any]] = {}  # param -> (hinted value, its generator) for this trial
        self._hinted: dict[int, dict[str, Any]] = {}  # trial number -> {param: value drawn near a hint}

    def hinted(self, trial_number: int) -> dict[str, Any]:
        """What hints drew for that trial (in this process), once: the trial records it."""
        return self._hinted.pop(trial_number, {})

    def _seen(self, study: optuna.Study) -> optuna.Study:
        """The study as `base` may see it."""
        return study_view(study, is_steered) if self.steered == "exclude" else study

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._pins = self._read_pins()
        self._choices = {name: dim.choices for name, dim in self._read_space().items() if dim.kind == "categorical"}
        self._fired = {}
        for param, hint in self._read_hints().items():
            p = search_space.hint_probability(hint, trial.number)
            if param in self._pins or p <= 0:
                continue
            rng = search_space.hint_rng(self.seed, trial.number, param)
            if rng.random() < p:
                self._fired[param] = (hint["value"], rng)
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        space = self.base.infer_relative_search_space(self._seen(study), trial)
        mine = self._pins.keys() | self._fired.keys() | self._choices.keys()  # drawn one by one, below
        # A change's param (`lr@479`) is recorded with the value the trial trained with, never drawn.
        return {k: v for k, v in space.items() if k not in mine and not record.is_scheduled(k)}

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(self._seen(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self._pins.get(param_name)
        if value is not None and _contains(param_distribution, value):
            return value
        # A pin outside the spec's range cannot be an Optuna param value: the sampler draws as
        # usual and the objective trains with the pin anyway (`steer.pinned` tells the truth).
        if param_name in self._fired and value is None:
            hinted, rng = self._fired.pop(param_name)
            drawn = search_space.draw_near(param_distribution, hinted, rng)
            self._hinted.setdefault(trial.number, {})[param_name] = drawn
        else:
            drawn = self.base.sample_independent(self._seen(study), trial, param_name, param_distribution)
        allowed = [c for c in self._choices.get(param_name, ()) if c in getattr(param_distribution, "choices", ())]
        if allowed and drawn not in allowed:
            drawn = search_space.hint_rng(self.seed, trial.number, f"space:{param_name}").choice(allowed)
            if param_name in self._hinted.get(trial.number, {}):
                self._hinted[trial.number][param_name] = drawn
        return drawn

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high
