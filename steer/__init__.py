"""steer: hyperparameter search with a human in the loop.

Steer any Optuna objective with a torch optimizer while it trains:

    import optuna, steer
    def objective(trial):
        ...
        with steer.steering(trial, optimizer=opt, model=model) as s:
            for step in range(1, 2001):
                loss = train_one_step(model, opt)
                s.step(step, loss=loss)
        return evaluate(model)

or run steer's own coordinate-MLP search from a spec:

    spec = steer.load_spec("studies/quick.toml")
    study = steer.create_study(spec, storage="sqlite:///studies/quick.db")
    study.optimize(steer.objective(spec), n_trials=12)
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steer.control import Control
    from steer.errors import SpecError, UserError
    from steer.objective import Objective, create_study, objective
    from steer.spec import Spec, load_spec, parse_spec
    from steer.steering import Steering, steering
    from steer.trainer import Trainer

__version__ = "0.1.0"
__all__ = [
    "Control", "Objective", "Spec", "SpecError", "Steering", "Trainer", "UserError",
    "create_study", "load_spec", "objective", "parse_spec", "steering",
]

# Each public name and the module that defines it. They are imported on first use (PEP 562):
# `steer ctl`, `steer show`, `steer dash` and every `--help` never import torch, which
# `objective`, `steering` and `Trainer` need.
_PUBLIC = {
    "Control": "steer.control",
    "SpecError": "steer.errors", "UserError": "steer.errors",
    "Objective": "steer.objective", "create_study": "steer.objective", "objective": "steer.objective",
    "Spec": "steer.spec", "load_spec": "steer.spec", "parse_spec": "steer.spec",
    "Steering": "steer.steering", "steering": "steer.steering",
    "Trainer": "steer.trainer",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once: later lookups don't come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


class _Package(types.ModuleType):
    """`steer.steering` and `steer.objective` are the functions, as the README uses them
    (`steer.steering(trial, optimizer=opt)`), though submodules of the same names exist.

    Importing a submodule binds it on its package (`import steer.steering` sets the
    attribute `steer.steering` to the module); here that binding takes the module's
    function of the same name instead, whichever is imported first.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("objective", "steering") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
