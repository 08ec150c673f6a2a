"""Steer any PyTorch training loop: an Optuna search over a small regressor, steerable while it trains.

The data is made here (a noisy function of three inputs): nothing is downloaded.

    python docs/examples/regression.py --storage sqlite:///regression.db --trials 6
    steer dash --storage sqlite:///regression.db           # watch the trials, steer them
    steer ctl set-lr --trial 0 3e-3 --storage sqlite:///regression.db --wait

The only steer lines are the `with steer.steering(...)` block and `s.step(...)`:
set_lr and set_weight_decay change the optimizer's param_groups, set_optimizer
switches it in place (the `opt` the loop holds stays valid), set_loss switches
the loss the loop reads as `s.loss_fn`, reset re-initialises the model, and
prune, pin and promote work as for steer's own studies.
"""

from __future__ import annotations

import argparse

import optuna
import torch
import torch.nn.functional as F

import steer

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.smooth_l1_loss}


def make_data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3) inputs in [-2, 2] and (n, 1) targets: sin(2 x0) + x1 * x2, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3] + 0.05 * torch.randn(n, 1, generator=g)
    return x, y


def make_model(hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                               torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


def objective(trial: optuna.Trial, steps: int) -> float:
    x, y = make_data()
    model = make_model(trial.suggest_categorical("hidden", [16, 32, 64]))
    opt = torch.optim.AdamW(model.parameters(), lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))

    def train_one_step() -> torch.Tensor:
        opt.zero_grad()
        loss = s.loss_fn(model(x), y)  # the loss a person may switch (set_loss)
        loss.backward()
        opt.step()
        return loss.detach()

    def evaluate() -> float:
        with torch.no_grad():
            return F.mse_loss(model(x), y).item()

    with steer.steering(trial, optimizer=opt, model=model, losses=LOSSES, loss="mse") as s:
        for step in range(1, steps + 1):
            loss = train_one_step()
            s.step(step, loss=loss)  # applies pending commands here; publishes at its cadence
            if step % 100 == 0:
                trial.report(evaluate(), step)
                if s.should_prune():  # the pruner's verdict, except for a trial a person steered
                    raise optuna.TrialPruned()
    return evaluate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///regression.db", help="an Optuna RDB storage URL")
    parser.add_argument("--study", default="regression")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    study = optuna.create_study(study_name=args.study, storage=args.storage, direction="minimize",
                                load_if_exists=True)
    study.optimize(lambda trial: objective(trial, args.steps), n_trials=args.trials)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if done:
        print(f"best MSE {study.best_value:.4g} with {study.best_params}")
    else:
        print("no trial completed (pruned or failed)")


if __name__ == "__main__":
    main()
