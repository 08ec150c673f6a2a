"""Running a study to its trial budget with a progress display.

The spec's `trials` is the study's budget of finished trials: a resumed study
only runs what is missing, and several workers on one storage stop together
(Optuna's `MaxTrialsCallback`).
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from steer.compare import save_comparison
from steer.control import Control
from steer.spec import Spec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(study: optuna.Study, objective: Callable[[optuna.Trial], float], spec: Spec,
              console: Any = None) -> None:
    """Run trials until the study holds `spec.trials` finished ones (or `spec.timeout` passes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    done = finished_count(study)
    budget = spec.trials
    if budget is not None and done >= budget:
        if console is not None:
            console.print(f"study already has {done} finished trials (budget {budget}); "
                          "raise the budget with --trials N to run more")
        return
    remaining = None if budget is None else budget - done
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = []
    if budget is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(budget, states=FINISHED))

    progress = Progress(
        TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(), console=console, transient=False,
    )
    task = progress.add_task("trials", total=budget, completed=done, best=_best_text(study))

    control = Control.for_study(study)

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if control is not None:  # the trial is finished now: nothing sent to it can still apply
            control.expire_pending(trial.number, "the trial ended before the command was applied")
            save_comparison(study)
        progress.update(task, completed=finished_count(study), best=_best_text(study))

    callbacks.append(on_trial)
    with progress:
        study.optimize(objective, n_trials=remaining, timeout=spec.timeout, callbacks=callbacks,
                       gc_after_trial=False)


def _best_text(study: optuna.Study) -> str:
    try:
        return f"best PSNR {study.best_value:.2f} dB (trial {study.best_trial.number})"
    except ValueError:
        return "best PSNR -"
