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
