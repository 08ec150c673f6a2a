"""The sampler of a steered study: the spec's sampler, with the study's pins applied to every new trial
and, by default, the steered trials kept out of what it learns from.

Why steered trials are excluded (`[sampler] steered = "exclude"`, the default):
Optuna cannot change a trial's params once suggested, so a steered trial's
params say what it started with, not what trained. A trial sampled at lr 2.5e-3
that a person turned down to 3e-4 and that then did well teaches TPE that
2.5e-3 is good. Hidden from the sampler, it still counts in the budget, the
pruner's statistics and every display; its promoted clean run (`promote`),
whose params carry the whole schedule, is what the sampler learns from.
`steered = "sampled"` is the old behaviour: every trial informs the sampler.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial

from steer import record
from steer.spec import STEERED_MODES
from steer.storage import study_view


def is_steered(trial: FrozenTrial) -> bool:
    """Whether a person changed what `trial` trained (from its record)."""
    return record.read(trial).steered


class SteerSampler(optuna.samplers.BaseSampler):
    """A sampler that returns the study's pinned values, hides steered trials from `base` (unless
    `steered="sampled"`) and leaves the rest to `base`.

    The pins are read from the control plane when each trial starts (so every
    worker honours pins set after it started), like Optuna's
    `PartialFixedSampler` but not living in one process.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, pins: Callable[[], dict[str, Any]] | None = None,
                 steered: str = "exclude") -> None:
        if steered not in STEERED_MODES:
            raise ValueError(f"steered: got {steered!r}; allowed: {' | '.join(STEERED_MODES)}")
        self.base = base
        self.steered = steered
        self._read_pins = pins or dict
        self._pins: dict[str, Any] = {}

    def _seen(self, study: optuna.Study) -> optuna.Study:
        """The study as `base` may see it."""
        return study_view(study, is_steered) if self.steered == "exclude" else study

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._pins = self._read_pins()
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        space = self.base.infer_relative_search_space(self._seen(study), trial)
        return {k: v for k, v in space.items() if k not in self._pins}

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(self._seen(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if record.is_scheduled(param_name):  # a change the trial was given (`lr@479`): its value, never a draw
            return _scheduled(trial, param_name)
        value = self._pins.get(param_name)
        if value is not None and _contains(param_distribution, value):
            return value
        # A pin outside the spec's range cannot be an Optuna param value: the sampler draws as
        # usual and the objective trains with the pin anyway (`steer.pinned` tells the truth).
        return self.base.sample_independent(self._seen(study), trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)


def _scheduled(trial: FrozenTrial, param_name: str) -> Any:
    """The value of the scheduled change `param_name` (`lr@479`) that `trial` was given."""
    events = record.attrs(trial).get(record.SCHEDULE) or []
    values = [value for name, value in map(record.scheduled_param, events) if name == param_name]
    if not values:
        raise ValueError(f"trial {trial.number} was given no scheduled change {param_name!r}")
    return values[-1]  # two changes of one setting at one step: the last one stands


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high
