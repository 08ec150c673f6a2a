"""Running a study to its trial budget with a progress display.

The spec's `trials` is the study's budget of finished trials: a resumed study
only runs what is missing, and several workers on one storage stop together
(a callback like Optuna's `MaxTrialsCallback`, which counts a crashed trial that
a retry carried on once). A trial that fails, or that Ctrl-C / SIGTERM
stops, ends FAIL with the reason in its `steer.fail_reason` user attribute.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import TrialState

from steer import record, stopping
from steer.comparison import save_comparison
from steer.control import Control, NotSteerable
from steer.spec import Spec

log = logging.getLogger("steer.runner")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def finished_count(study: optuna.Study) -> int:
    """The finished trials the budget counts: a trial whose worker died and that a retry carries on
    (`steer.retry_of`) counts once, as its retry."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(record.RETRY_OF) for t in trials}
    return sum(1 for t in trials if t.state in FINISHED and t.number not in retried)


def remaining_trials(study: optuna.Study, spec: Spec) -> int | None:
    """How many more trials the budget allows (None: no budget)."""
    return None if spec.trials is None else max(0, spec.trials - finished_count(study))


def run_study(study: optuna.Study, objective: Callable[[optuna.Trial], float], spec: Spec,
              console: Any = None, show_progress: bool = True) -> None:
    """Run trials until the study holds `spec.trials` finished ones (or `spec.timeout` passes)."""
    stopping.check()
    done = finished_count(study)
    budget = spec.trials
    if budget is not None and done >= budget:
        if console is not None:
            console.print(f"study already has {done} finished trials (budget {budget}); "
                          "raise the budget with --trials N to run more")
        return
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = []
    if budget is not None:
        callbacks.append(lambda study, trial: study.stop() if finished_count(study) >= budget else None)

    progress = make_progress(console, disable=not show_progress)
    task = progress.add_task("trials", total=budget, completed=done, best=best_text(study))

    try:
        control: Control | None = Control.open(study)
    except NotSteerable:  # an in-memory study: nothing to expire, no comparison to save
        control = None

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if control is not None:  # the trial is finished now: nothing sent to it can still apply
            control.expire_pending(trial.number, "the trial ended before the command was applied")
            save_comparison(study)
        progress.update(task, completed=finished_count(study), best=best_text(study))

    def stop_if_asked(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if stopping.requested.is_set():
            study.stop()  # start no further trial; `check()` below reports the stop

    def wait_if_held(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if control is not None and (budget is None or finished_count(study) < budget):
            wait_while_held(control)

    callbacks += [on_trial, stop_if_asked, wait_if_held]
    if control is not None:
        wait_while_held(control)  # a held study starts no trial, the first one included
    with progress, _short_interrupt_logs():
        # No n_trials: the budget callback stops it (a retry may run in any worker, beyond a count planned here).
        study.optimize(_with_fail_reason(objective), timeout=spec.timeout,
                       callbacks=callbacks, gc_after_trial=False)
    stopping.check()


HOLD_POLL = 0.5  # seconds between two looks at a held study


def wait_while_held(control: Control) -> None:
    """Return once the study is not held (`steer ctl hold`); a stop request ends the wait."""
    said = False
    while (held := control.held()) is not None:
        if not said:
            log.warning("the study is held by %s: no new trial starts until `steer ctl release`", held.get("by"))
            said = True
        stopping.check()
        time.sleep(HOLD_POLL)
    stopping.check()


STOPPED = "stopped by Ctrl-C or SIGTERM before it finished"


def _with_fail_reason(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """`objective`, recording why a trial fails while Optuna still accepts attribute writes."""

    def run(trial: optuna.Trial) -> float:
        try:
            stopping.check()  # asked to stop while Optuna started this trial
            return objective(trial)
        except KeyboardInterrupt:
            _note_failure(trial, STOPPED)
            raise
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised as it was
            _note_failure(trial, f"{type(exc).__name__}: {exc}"[:500])
            raise

    return run


def _note_failure(trial: optuna.Trial, reason: str) -> None:
    try:
        record.write(trial, record.FAIL_REASON, reason)
    except (optuna.exceptions.StorageInternalError, optuna.exceptions.UpdateFinishedTrialError) as exc:
        log.warning("trial %d: cannot record why it failed (%s): %s", trial.number, reason, exc)


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a stopped trial with the traceback of the KeyboardInterrupt: one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _short_interrupt_logs() -> Iterator[None]:
    handlers = logging.getLogger("optuna").handlers  # a logger's own filters miss its children's records
    quiet = _NoInterruptTraceback()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def make_progress(console: Any = None, disable: bool = False, extra: str = ""):
    """The one progress display: trials done of the budget, best PSNR, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}")]
    if extra:
        columns.append(TextColumn(extra))
    return Progress(*columns, TimeElapsedColumn(), console=console, transient=False, disable=disable)


def best_text(study: optuna.Study) -> str:
    try:
        return f"best PSNR {study.best_value:.2f} dB (trial {study.best_trial.number})"
    except ValueError:
        return "best PSNR -"
