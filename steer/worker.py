"""The running trial's side of the control plane.

Between two training steps the objective calls `poll()` and `publish()`. Both
look at the wall clock and return at once until their interval has passed, so
there is no database query per step. `poll()` applies the trial's pending
commands in order, marking each `applied` with its step or `rejected` with the
reason; it records every applied one in the trial's user attributes
(`steer.interventions`, `steer.steered`) and in an optuna-dashboard note as it
happens, because Optuna refuses attribute writes once a trial has finished.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna

from steer import stopping
from steer.control import SET_ACTIONS, Command, Control, finite, promotion
from steer.image import to_png
from steer.tables import ControlError
from steer.trainer import Change, InvalidChange, Trainer

log = logging.getLogger("steer.worker")


class TrialSteering:
    def __init__(self, control: Control, trial: optuna.Trial, trainer: Trainer, settings: dict[str, Any]) -> None:
        self.control = control
        self.trial = trial
        self.trainer = trainer
        self.poll_interval = settings["poll_interval"]
        self.publish_interval = settings["publish_interval"]
        self.preview_size = settings["preview_size"]
        self.interventions: list[dict[str, Any]] = []
        self._next_poll = 0.0
        self._next_publish = 0.0
        self.last_loss: float | None = None

    @property
    def steered(self) -> bool:
        return bool(self.interventions)

    # ---- commands -------------------------------------------------------- #
    def poll(self, force: bool = False) -> None:
        """Apply pending commands if `poll_interval` has passed. May raise `TrialPruned`.

        Called between two steps, it is also where a requested stop (Ctrl-C, SIGTERM) happens.
        """
        stopping.check()
        now = time.monotonic()
        if not force and now < self._next_poll:
            return
        self._next_poll = now + self.poll_interval
        try:
            pending = self.control.pending(self.trial.number)
        except ControlError as exc:  # the database is away: train on, ask again next time
            log.warning("trial %d: cannot read commands: %s", self.trial.number, exc)
            return
        for cmd in pending:
            self._handle(cmd)

    def _handle(self, cmd: Command) -> None:
        trainer, number = self.trainer, self.trial.number
        try:
            if cmd.action in SET_ACTIONS:
                event = trainer.apply(Change(cmd.action, cmd.args["value"])).to_dict()
            elif cmd.action == "reset":
                event = trainer.apply(Change("reset", cmd.args["seed"])).to_dict()
            elif cmd.action == "pin":
                param = cmd.args["param"]
                result = self.control.pin_from_trial(param, trainer.effective_params()[param], cmd.requested_by, number)
                event = {**result, "value": result["new"], "step": trainer.step_count, "at": time.time()}
            elif cmd.action == "promote":
                params, attrs = promotion(trainer.effective_params(), number)
                self.trial.study.enqueue_trial(params, user_attrs=attrs)
                event = {"action": "promote", "value": None, "old": None, "new": params,
                         "step": trainer.step_count, "at": time.time()}
            elif cmd.action == "prune":
                event = {"action": "prune", "value": None, "old": None, "new": None,
                         "step": trainer.step_count, "at": time.time()}
            else:
                raise InvalidChange(f"action {cmd.action!r} cannot be applied by a trial")
        except InvalidChange as exc:
            self.control.resolve(cmd.id, "rejected", reason=str(exc))
            return
        self._record(cmd, event)
        if cmd.action == "prune":
            reason = f"pruned by {cmd.requested_by} at step {trainer.step_count}"
            if cmd.args.get("reason"):
                reason += f": {cmd.args['reason']}"
            self.trial.set_user_attr("steer.pruned_reason", reason)
            raise optuna.TrialPruned(reason)

    def _record(self, cmd: Command, event: dict[str, Any]) -> None:
        entry = {"command": cmd.id, "action": cmd.action, "args": cmd.args, "old": event["old"],
                 "new": event["new"], "step": event["step"], "at": event["at"], "by": cmd.requested_by}
        self.interventions.append(entry)
        # Attributes first: if the worker dies after this, the record survives with the trial.
        self.trial.set_user_attr("steer.interventions", self.interventions)
        self.trial.set_user_attr("steer.steered", True)
        self.control.resolve(cmd.id, "applied", step=event["step"], result=entry)
        self._save_note()

    def _save_note(self) -> None:
        from optuna_dashboard import save_note

        save_note(self.trial, intervention_note(self.trial.number, self.interventions))

    # ---- live state ------------------------------------------------------ #
    def publish(self, loss: float | None, psnr: float | None = None, *, force: bool = False,
                running: bool = True) -> None:
        """Publish the live preview and a metrics row if `publish_interval` has passed (or `force`)."""
        now = time.monotonic()
        if not force and now < self._next_publish:
            return
        self._next_publish = now + self.publish_interval
        pred, full_psnr = self.trainer.evaluate()
        t = self.trainer
        metric = {"loss": finite(loss), "psnr": finite(psnr if psnr is not None else full_psnr), "lr": t.current_lr,
                  "weight_decay": t.weight_decay, "optimizer": t.optimizer_name, "loss_name": t.loss_name}
        try:
            self.control.publish(self.trial.number, t.step_count, png=to_png(pred, self.preview_size),
                                 metric=metric, running=running)
        except ControlError as exc:
            log.warning("trial %d: cannot publish live state: %s", self.trial.number, exc)

    def finish(self, how: str) -> None:
        """The trial is ending (`how`: completed, pruned, failed): last preview, expire what is left."""
        self.publish(self.last_loss, force=True, running=False)
        try:
            self.control.expire_pending(self.trial.number, f"the trial {how} before the command was applied")
        except ControlError as exc:
            log.warning("trial %d: cannot expire commands: %s", self.trial.number, exc)


def intervention_note(number: int, interventions: list[dict[str, Any]]) -> str:
    """The optuna-dashboard note of a steered trial: its intervention timeline in markdown."""
    lines = [f"## Trial {number}: steered", "", "| step | action | old | new | by | when (UTC) |",
             "|---:|---|---|---|---|---|"]
    for e in interventions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        new = "enqueued a clean run of these effective params" if e["action"] == "promote" else _fmt(e["new"])
        lines.append(f"| {e['step']} | {e['action']} {_fmt(e['args'])} | {_fmt(e['old'])} | {new} "
                     f"| {e['by']} | {when} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None or v == {}:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)
