"""steer: hyperparameter search with a human in the loop.

    import optuna, steer
    spec = steer.load_spec("studies/quick.toml")
    study = steer.create_study(spec, storage="sqlite:///studies/quick.db")
    study.optimize(steer.objective(spec), n_trials=12)
"""

from steer.errors import SpecError, UserError
from steer.objective import Objective, create_study, objective
from steer.spec import Spec, load_spec, parse_spec
from steer.trainer import Change, Event, Trainer

__version__ = "0.1.0"
__all__ = [
    "Change", "Event", "Objective", "Spec", "SpecError", "Trainer", "UserError",
    "create_study", "load_spec", "objective", "parse_spec",
]
