"""Samplers for a steered study: the spec's sampler, with the study's pins applied to every new trial."""

from __future__ import annotations

from typing import Any, Callable

import optuna


class PinnedSampler(optuna.samplers.BaseSampler):
    """A sampler that returns the study's pinned values and leaves the rest to `base`.

    Like Optuna's `PartialFixedSampler`, but the pins are read from the control
    plane when each trial starts (so every worker honours pins set after it
    started) instead of living in one process.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, pins: Callable[[], dict[str, Any]]) -> None:
        self.base = base
        self._read_pins = pins
        self._pins: dict[str, Any] = {}

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._pins = self._read_pins()
        self.base.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        space = self.base.infer_relative_search_space(study, trial)
        return {k: v for k, v in space.items() if k not in self._pins}

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self._pins.get(param_name)
        if value is not None and _contains(param_distribution, value):
            return value
        # A pin outside the spec's range cannot be an Optuna param value: the sampler draws as
        # usual and the objective trains with the pin anyway (`steer.pinned` tells the truth).
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    return isinstance(value, (int, float)) and dist.low <= value <= dist.high
