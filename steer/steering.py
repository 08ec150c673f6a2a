"""The trial side of steering: `steer.steering(trial, optimizer=opt)` makes any Optuna objective steerable.

    def objective(trial):
        model = MyNet()
        opt = torch.optim.AdamW(model.parameters(), lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))
        with steer.steering(trial, optimizer=opt, model=model) as s:
            for step in range(1, 2001):
                loss = train_one_step(model, opt)
                s.step(step, loss=loss)       # pending commands are applied here, between two steps
        return evaluate(model)

`s.step` looks at the clock and returns at once until `poll_interval` has
passed: no database query per step, and the loss is read (a GPU sync) only
when a metrics row is published. At a poll it applies the trial's pending
commands in order through the handlers below (one per trial-side action of
`steer.actions`), marks each applied with its step or rejected with the
reason, and records it in the trial's user attributes as it happens (Optuna
refuses attribute writes once a trial has finished).

What the actions act on: the optimizer's `param_groups` (LR, weight decay),
the optimizer itself (switched in place, so the `opt` the loop holds stays
valid), the model (`reset`) and the loss function the loop reads as `s.loss_fn`.
steer's own coordinate-MLP objective is a client of this same API.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping

import optuna
import torch
import torch.nn.functional as F

from steer import record, stopping
from steer.actions import ACTIONS
from steer.control import Command, Control, NotSteerable
from steer.errors import UserError
from steer.image import to_png
from steer.sampler import SteerSampler
from steer.spec import CHECKPOINT_DEFAULTS, PARAMS
from steer.storage import ControlError, reported_values

if TYPE_CHECKING:
    from steer.checkpoints import Checkpoint, Checkpoints

log = logging.getLogger("steer.steering")

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # (param_groups, lr=, weight_decay=) -> optimizer
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SGD_MOMENTUM = 0.9
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda groups, lr, weight_decay: torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay),
    "sgd": lambda groups, lr, weight_decay: torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay),
    "adamw": lambda groups, lr, weight_decay: torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay),
}
LOSSES: dict[str, LossFn] = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


class InvalidChange(ValueError):
    """A command this trial cannot apply; the message is the rejection reason."""


# ---- handlers: what each trial-side action does ------------------------------------------ #

Handler = Callable[["Steering", dict[str, Any]], tuple[Any, Any]]  # (steering, args) -> (old, new)
HANDLERS: dict[str, Handler] = {}


def handles(action: str) -> Callable[[Handler], Handler]:
    """Register the trial-side handler of `action` (a row of `steer.actions` applied by the trial)."""
    if action not in ACTIONS or not ACTIONS[action].by_trial:
        raise ValueError(f"{action!r} is not an action that a trial applies")

    def register(fn: Handler) -> Handler:
        HANDLERS[action] = fn
        return fn

    return register


@handles("set_lr")
def _set_lr(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    new = float(args["value"])
    old = s.lr
    # Every group gets the new LR; groups that had different LRs (per-layer LR) keep their ratios.
    per_group = len({g["lr"] for g in s.optimizer.param_groups}) > 1 and old > 0
    for group in s.optimizer.param_groups:
        group["lr"] = group["lr"] * (new / old) if per_group else new
    return old, new


@handles("set_weight_decay")
def _set_weight_decay(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    new = float(args["value"])
    old = s.weight_decay
    for group in s.optimizer.param_groups:
        group["weight_decay"] = new
    return old, new


@handles("set_optimizer")
def _set_optimizer(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    new = args["value"]
    factory = s.optimizers.get(new)
    if factory is None:
        raise InvalidChange(f"optimizer: got {new!r}; allowed: {' | '.join(s.optimizers) or 'none (pass optimizers=)'}")
    old = s.optimizer_name
    _switch_in_place(s.optimizer, factory, s.lr, s.weight_decay)  # weights stay; optimizer state starts afresh
    s.optimizer_name = new
    return old, new


@handles("set_loss")
def _set_loss(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    new = args["value"]
    if new not in s.losses:
        raise InvalidChange(f"loss: got {new!r}; allowed: {' | '.join(s.losses) or 'none (pass losses=)'}")
    old, s.loss_name = s.loss_name, new
    return old, new


@handles("reset")
def _reset(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    if s.model is None:
        raise InvalidChange("reset needs the model: pass model= to steer.steering")
    seed = args["seed"]
    reset_weights(s.model, seed)
    s.optimizer.state = collections.defaultdict(dict)  # moments and momentum start afresh too
    return None, seed


@handles("find_lr")
def _find_lr(s: Steering, args: dict[str, Any]) -> tuple[Any, Any, Any]:
    from steer.lr_finder import range_test

    if s.lr_range_loss is None or s.model is None:
        raise InvalidChange("find-lr needs the trial's model and a loss to test it with: pass model= and "
                            "lr_range_loss= to steer.steering (steer's own trials do)")
    test = range_test(s.model, s.optimizer, s.lr_range_loss)
    summary = {"suggestion": test.suggestion, "reason": test.reason, "steps": test.steps}
    return s.lr, summary, {"range_test": test.to_dict()}  # the curve goes with the command, not the record


@handles("undo")
def _undo(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    from steer.checkpoints import CheckpointError, from_bytes

    if not s._undo:
        if s._undo_dropped:
            raise InvalidChange(f"nothing left to undo: a trial keeps the state before its last {s.undo_depth} "
                                f"changes ([checkpoints] undo_depth), and those are undone")
        since = f" since it started from step {s.start_step}" if s.start_step else ""
        raise InvalidChange(f"nothing to undo{since}: undo takes back a change that steered the trial "
                            f"(LR, optimizer, loss, weight decay, reset)")
    entry = s._undo[-1]
    try:
        state = from_bytes(entry["blob"], s.device) if "blob" in entry else s.checkpoints.load(entry["checkpoint"],
                                                                                                s.device)
    except CheckpointError as exc:
        raise InvalidChange(f"cannot undo {entry['what']}: {exc}") from None
    s.restore(state, keep_step=True)
    s._undo.pop()
    back = {"step": entry["step"]}
    if entry.get("command") is not None:  # a person's command (a scheduled change has none)
        back["command"] = entry["command"]
    return entry["what"], back


@handles("fork")
def _fork(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    if s.checkpoints is None or s.state is None:
        raise InvalidChange("fork needs a loop that can start from a checkpoint: pass state= to steer.steering "
                            "(steer's own trials do) and steer a study in a database")
    ck = s.save_checkpoint("fork", command=s._current_command, required=True)
    rec = record.read(s.control.trial(s.trial.number))  # what the trial did up to now: the checkpoint holds it
    number = s.control.continue_trial(rec, "fork", step=s.step_count, checkpoint=ck.id, changes=args["changes"])
    return None, {"trial": number, "step": s.step_count, "changes": args["changes"], "checkpoint": ck.id}


@handles("prune")
def _prune(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    reason = f"pruned by {s._current_by} at step {s.step_count}"
    if args.get("reason"):
        reason += f": {args['reason']}"
    record.write(s.trial, record.PRUNED_REASON, reason)
    raise optuna.TrialPruned(reason)


@handles("pin")
def _pin(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    param = args["param"]
    result = s.control.pin_from_trial(param, s.settings()[param], s._current_by, s.trial.number)
    return result["old"], result["new"]


@handles("promote")
def _promote(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    # What the trial did up to this step boundary, read back from its record (which every applied
    # command was written to), with the settings as they stand now for a final-values promotion.
    rec = record.read(s.control.trial(s.trial.number))
    number, params = s.control.promote(rec, args, effective=s.effective_params(), up_to=s.step_count)
    return None, {"trial": number, "params": params}


@handles("pause")
def _pause(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    if s.paused is not None:
        raise InvalidChange(f"trial {s.trial.number} is paused already (since step {s.paused['step']})")
    s.paused = {"since": time.time(), "step": s.step_count, "by": s._current_by}
    record.write(s.trial, record.PAUSED, s.paused)
    return None, "paused"


@handles("resume")
def _resume(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    if s.paused is None:
        raise InvalidChange(f"trial {s.trial.number} is not paused")
    s.paused_seconds += time.time() - s.paused["since"]
    s.paused = None
    record.write(s.trial, record.PAUSED, None)
    record.write(s.trial, record.PAUSED_SECONDS, round(s.paused_seconds, 3))
    return "paused", "running"


@handles("keep")
def _keep(s: Steering, args: dict[str, Any]) -> tuple[Any, Any]:
    if s.kept:
        raise InvalidChange(f"trial {s.trial.number} is kept already")
    s.kept = True
    return False, True


def _switch_in_place(opt: torch.optim.Optimizer, factory: OptimizerFactory, lr: float, weight_decay: float) -> None:
    """Turn `opt` into the optimizer `factory` makes for the same parameter groups.

    The object stays the same, so a training loop (and an LR scheduler) that
    holds it keeps working. Per-group LR and weight decay carry over, and so
    does `initial_lr`, which torch's LR schedulers keep in the groups.
    """
    groups = [{"params": g["params"], "lr": g["lr"], "weight_decay": g.get("weight_decay", weight_decay)}
              for g in opt.param_groups]
    new = factory(groups, lr=lr, weight_decay=weight_decay)
    for old_group, new_group in zip(opt.param_groups, new.param_groups):
        if "initial_lr" in old_group:
            new_group["initial_lr"] = old_group["initial_lr"]
    tracked = hasattr(opt.__dict__.get("step"), "_wrapped_by_lr_sched")
    opt.__class__ = new.__class__
    opt.__dict__.clear()
    opt.__dict__.update(new.__dict__)
    if tracked:  # an LR scheduler wrapped the old class's step to see it called: wrap the new one alike
        opt.step = _tracked_step(opt)


def _tracked_step(opt: torch.optim.Optimizer) -> Callable[..., Any]:
    """`opt.step` as torch's LR schedulers wrap it (they warn if the optimizer never stepped)."""
    opt_ref, step = weakref.ref(opt), type(opt).step

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        this = opt_ref()
        this._opt_called = True
        return step(this, *args, **kwargs)

    wrapper._wrapped_by_lr_sched = True
    return wrapper


def reset_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise `model` from `seed`: its own `reset_parameters(generator)` if it takes one,
    else every submodule's `reset_parameters()` under a forked, seeded torch RNG."""
    own = getattr(model, "reset_parameters", None)
    if own is not None and "generator" in inspect.signature(own).parameters:
        own(generator=torch.Generator().manual_seed(seed))
        return
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices}) or [], enabled=True):
        torch.manual_seed(seed)
        with torch.no_grad():
            if own is not None:
                own()
            else:
                found = [m for m in model.modules() if callable(getattr(m, "reset_parameters", None))]
                if not found:
                    raise InvalidChange("reset: the model has no reset_parameters() (nor do its layers)")
                for m in found:
                    m.reset_parameters()


# ---- the steering object ---------------------------------------------------------------- #


class Steering:
    """One trial's steering: applies commands between steps, records them, publishes live state.

    Use `steer.steering(...)`, which opens the study's control plane; with no
    trial (replay, tests) it only applies actions given to `apply`.
    """

    def __init__(self, trial: optuna.Trial | None, optimizer: torch.optim.Optimizer, *,
                 model: torch.nn.Module | None = None,
                 optimizers: Mapping[str, OptimizerFactory] | None = None,
                 losses: Mapping[str, LossFn] | None = None, loss: str | None = None,
                 optimizer_name: str | None = None,
                 effective_params: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 control: Control | None = None, poll_interval: float = 0.2, publish_interval: float = 0.5,
                 preview_size: int = 128, spare_watched: bool = True,
                 lr_range_loss: Callable[[torch.nn.Module], torch.Tensor] | None = None,
                 state: Any = None, checkpoints: Checkpoints | None = None, checkpoint_every: float = 0.0,
                 checkpoint_keep: int = 3, undo_depth: int | None = None) -> None:
        self.trial = trial
        self.optimizer = optimizer
        self.model = model
        self.lr_range_loss = lr_range_loss
        self.optimizers = dict(OPTIMIZERS if optimizers is None else optimizers)
        self.losses = dict(LOSSES if losses is None else losses)
        if loss is not None and loss not in self.losses:
            raise UserError(f"steer.steering: loss {loss!r} is not among the losses: {', '.join(self.losses)}")
        self.loss_name = loss
        self.optimizer_name = optimizer_name or type(optimizer).__name__.lower()
        self._effective_params = effective_params
        self.control = control
        self.poll_interval = poll_interval
        self.publish_interval = publish_interval
        self.preview_size = preview_size
        self.spare_watched = spare_watched
        self.paused: dict[str, Any] | None = None  # since when, at which step, by whom, while paused
        self.paused_seconds = 0.0
        self.kept = False  # a person exempted this trial from automatic pruning
        self.interventions: list[dict[str, Any]] = []
        # A promoted trial's schedule: the changes its source made, made again at the same steps.
        attrs = record.attrs(trial) if trial is not None else {}
        self.schedule: list[dict[str, Any]] = list(attrs.get(record.SCHEDULE) or [])
        self.promoted = attrs.get(record.PROMOTED_FROM) is not None
        # Checkpoints (steer.checkpoints): `state` is the loop's own (state_dict / load_state_dict, with its
        # step under "step"); without it a snapshot holds the model and the optimizer.
        self.state = state
        self.checkpoints = checkpoints if (state is not None or model is not None) else None
        self.checkpoint_every = checkpoint_every
        self.checkpoint_keep = checkpoint_keep
        self.resume: dict[str, Any] | None = attrs.get(record.RESUME)  # a fork's or a retry's starting point
        self.start_step = self.resume["step"] if self.resume else 0  # the loop trains from the step after it
        self._undo: list[dict[str, Any]] = []  # what undo goes back to, newest last (see `_apply`)
        self.undo_depth = undo_depth  # how many of those are kept (None: all, as a replay keeps them)
        self._undo_dropped = 0  # how many older ones went to keep that many
        self._next_checkpoint = time.monotonic() + checkpoint_every
        self._warned_checkpoint = False
        self._current_command: int | None = None
        self.step_count = 0
        self._last_loss: Any = None  # a tensor is kept as it is: reading it waits for the GPU
        self._next_poll = 0.0
        self._next_publish = 0.0
        self._current_by = ""  # who asked for the command being applied
        self._last_preview: Any = None  # the last preview and value published: the final row shows them again
        self._last_value: Any = None

    # ---- what the loop reads ------------------------------------------------------------ #
    @property
    def loss_fn(self) -> LossFn:
        """The loss function in use now (`set_loss` switches it)."""
        if self.loss_name is None:
            raise UserError("steer.steering was given no loss: pass losses= and loss= to read s.loss_fn")
        return self.losses[self.loss_name]

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def weight_decay(self) -> float:
        return float(self.optimizer.param_groups[0].get("weight_decay", 0.0))

    @property
    def steered(self) -> bool:
        """Whether an applied intervention changed what trains (then automatic pruning stops)."""
        return record.steers(self.interventions)

    def settings(self) -> dict[str, Any]:
        """The steerable settings as they stand now."""
        return {"lr": self.lr, "optimizer": self.optimizer_name, "loss": self.loss_name,
                "weight_decay": self.weight_decay}

    def effective_params(self) -> dict[str, Any]:
        """What trains now: the objective's own account if it gave one, else the trial's params
        with the current settings over them."""
        if self._effective_params is not None:
            return self._effective_params(self.settings())
        params = dict(self.trial.params) if self.trial is not None else {}
        return {**params, **{k: v for k, v in self.settings().items() if v is not None}}

    def should_prune(self, exempt_steered: bool = True) -> bool:
        """`trial.should_prune()`, except for a trial a person has a stake in.

        A steered trial's curve no longer compares with the others' (unless
        `exempt_steered` is False); a promoted one is a person's deliberate
        re-run; a kept one was exempted by hand; one whose page is open in the
        app is being watched. The last two are recorded as spared
        (`steer.spared`) when the pruner would have stopped them.
        """
        inherited = bool(self.resume and self.resume.get("exempt"))  # a retry of a trial that was exempt
        if (self.trial is None or (exempt_steered and self.steered) or self.promoted or inherited
                or not self.trial.should_prune()):
            return False
        why = "kept" if self.kept else "watched" if self._watched() else None
        if why is None:
            return True
        record.write(self.trial, record.SPARED, f"would be pruned at step {self.step_count} ({why})")
        return False

    def _watched(self) -> bool:
        if not self.spare_watched or self.control is None:
            return False
        try:
            return self.control.watched(self.trial.number)
        except ControlError as exc:  # cannot tell: the pruner decides, as without steering
            log.warning("trial %d: cannot read who watches it: %s", self.trial.number, exc)
            return False

    # ---- the loop's one call -------------------------------------------------------------- #
    def step(self, step: int, loss: Any = None, *, value: Any = None, preview: Any = None,
             publish: bool = False) -> None:
        """Call after each training step `step` (the number of steps done).

        Applies pending commands when `poll_interval` has passed (may raise
        `optuna.TrialPruned`), publishes a metrics row and the preview when
        `publish_interval` has passed or `publish` is set. `loss` may be a
        tensor; `value` (a metric to plot, e.g. PSNR) and `preview` (an image
        tensor, (H, W), (H, W, C) or (C, H, W), in [0, 1]) may be callables,
        which are called only when publishing. Without a value, the row
        carries the value the loop last reported (`trial.report`).
        """
        stopping.check()  # Ctrl-C and SIGTERM stop here, at a step boundary
        self.step_count = step
        if self.schedule and self.schedule[0]["step"] <= step:
            self._apply_schedule(step)
        if loss is not None:  # kept without its graph; read only when published
            self._last_loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
        if self.control is None:
            return
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self.poll()
            if self.paused is not None:  # held at this step boundary until resumed, pruned or stopped
                self.publish(value=value, preview=preview)  # the live view shows where it stopped
                while self.paused is not None:
                    time.sleep(self.poll_interval)
                    stopping.check()
                    self.poll()
        if publish or now >= self._next_publish:
            self._next_publish = now + self.publish_interval
            self.publish(value=value, preview=preview)
        if (self.checkpoint_every > 0 and self.checkpoints is not None and self.state is not None
                and now >= self._next_checkpoint):  # (only a loop that can load one is resumed from one)
            # After the commands of this step boundary: the checkpoint holds every change up to this step.
            self._next_checkpoint = now + self.checkpoint_every
            if self.save_checkpoint("cadence") is not None:
                self._quietly(lambda: self.checkpoints.retain(self.trial.number, self.checkpoint_keep))

    # ---- commands ------------------------------------------------------------------------- #
    def poll(self) -> None:
        """Apply the trial's pending commands now. May raise `optuna.TrialPruned`."""
        try:
            pending = self.control.pending(self.trial.number)
        except ControlError as exc:  # the database is away: train on, ask again next time
            log.warning("trial %d: cannot read commands: %s", self.trial.number, exc)
            return
        for cmd in pending:
            self._handle(cmd)

    def apply(self, action: str, args: dict[str, Any]) -> tuple[Any, Any]:
        """Apply one trial-side action with checked `args` now; returns (old, new). For replay and tests."""
        return self._apply(action, args)[:2]

    def _apply(self, action: str, args: dict[str, Any], command: int | None = None) -> tuple[Any, ...]:
        """(old, new) or (old, new, detail): a handler may return what the command's result carries
        beyond the trial's record (find_lr's curve).

        Before a change that steers, the state as it is goes on the undo stack: a checkpoint in the
        study's store for a person's command (`before`), else (a scheduled change, a replay, no store)
        the snapshot in memory. `undo` takes the newest back, and the same rule in a replay or a
        promoted run finds the same state.
        """
        handler = HANDLERS.get(action)
        if handler is None:
            raise InvalidChange(f"action {action!r} cannot be applied by a trial")
        entry = self._before(command) if ACTIONS[action].steers and action != "undo" else None
        try:
            out = handler(self, args)
        except BaseException:
            if entry is not None and "checkpoint" in entry:
                self._quietly(lambda: self.checkpoints.remove([entry["checkpoint"]]))
            raise
        if entry is not None:
            entry["what"] = record.change({"action": action, "args": args, "old": out[0], "new": out[1]})
            self._undo.append(entry)
            while self.undo_depth is not None and len(self._undo) > self.undo_depth:  # bounded: a file each
                dropped = self._undo.pop(0)
                self._undo_dropped += 1
                if "checkpoint" in dropped:
                    self._quietly(lambda: self.checkpoints.remove([dropped["checkpoint"]]))
        return out

    def _before(self, command: int | None) -> dict[str, Any] | None:
        """The state before a change, as the undo stack keeps it (None: this loop gives none to keep)."""
        if self.state is None and self.model is None:
            return None
        if command is not None and self.checkpoints is not None:
            ck = self.save_checkpoint("before", command=command)
            if ck is not None:
                return {"checkpoint": ck, "step": self.step_count, "command": command}
        return {"blob": self.snapshot(), "step": self.step_count, "command": command}

    def _apply_schedule(self, step: int) -> None:
        """Make the scheduled changes due at this step boundary, in their order (not interventions:
        the trial was given them before it started)."""
        while self.schedule and self.schedule[0]["step"] <= step:
            event = self.schedule.pop(0)
            self.apply(event["action"], event["args"])

    def _handle(self, cmd: Command) -> None:
        self._current_by = cmd.requested_by
        self._current_command = cmd.id
        try:
            old, new, *detail = self._apply(cmd.action, cmd.args, command=cmd.id)
        except InvalidChange as exc:
            self.control.resolve(cmd.id, "rejected", reason=str(exc))
            return
        except optuna.TrialPruned:
            self._record(cmd, None, None)
            raise
        self._record(cmd, old, new, detail[0] if detail else None)

    def _record(self, cmd: Command, old: Any, new: Any, detail: dict[str, Any] | None = None) -> None:
        entry = record.entry(cmd.id, cmd.action, cmd.args, old, new, self.step_count, cmd.requested_by)
        self.interventions.append(entry)
        # Attributes first: if the worker dies after this, the record survives with the trial.
        record.write(self.trial, record.INTERVENTIONS, self.interventions)
        record.write(self.trial, record.STEERED, self.steered)
        self.control.resolve(cmd.id, "applied", step=self.step_count, result={**entry, **(detail or {})})
        from optuna_dashboard import save_note

        save_note(self.trial, record.note(record.read(self.control.trial(self.trial.number))))

    # ---- checkpoints (steer.checkpoints) ----------------------------------------------------- #
    @property
    def device(self) -> torch.device:
        if self.model is not None:
            first = next(iter(self.model.parameters()), None)
            if first is not None:
                return first.device
        return torch.device(getattr(self.state, "device", "cpu"))

    def snapshot(self) -> bytes:
        """The state the next steps depend on, serialised: the settings steered here and the loop's state."""
        from steer.checkpoints import to_bytes

        loop = (self.state.state_dict() if self.state is not None else
                {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})
        return to_bytes({"settings": {"optimizer": self.optimizer_name, "loss": self.loss_name}, "loop": loop})

    def restore(self, state: dict[str, Any], *, keep_step: bool) -> None:
        """Go to a snapshot's state (`steer.checkpoints.from_bytes`). `keep_step`: the step count goes on
        (undo: Optuna's reports and the pruner see one clock); else it is the snapshot's (a fork, a retry)."""
        name = state["settings"].get("optimizer")
        if name != self.optimizer_name and name in self.optimizers:  # switched since: switch back first
            _switch_in_place(self.optimizer, self.optimizers[name], self.lr, self.weight_decay)
            self.optimizer_name = name
        if state["settings"].get("loss") is not None:
            self.loss_name = state["settings"]["loss"]
        loop = dict(state["loop"])
        if keep_step and "step" in loop:  # the loop's own count (a replay does not tell this object its steps)
            loop["step"] = self.state.state_dict()["step"] if self.state is not None else self.step_count
        if self.state is not None:
            self.state.load_state_dict(loop)
        else:
            self.model.load_state_dict(loop["model"])
            self.optimizer.load_state_dict(loop["optimizer"])

    def save_checkpoint(self, kind: str, command: int | None = None, required: bool = False) -> Checkpoint | None:
        """Write a checkpoint of the state now. One that cannot be written (a full disk) is said in the log
        and the record, and the trial trains on without it (None); `required`: InvalidChange instead."""
        try:
            return self.checkpoints.save(self.trial.number, self.step_count, kind, self.snapshot(), command)
        except (OSError, ControlError) as exc:
            reason = f"a {kind} checkpoint at step {self.step_count} could not be written ({exc})"
            if required:
                raise InvalidChange(reason) from None
            log.warning("trial %d: %s; it trains on without it", self.trial.number, reason)
            if not self._warned_checkpoint:  # once: the record keeps the first reason, the log every one
                self._warned_checkpoint = True
                self._quietly(lambda: record.write(self.trial, record.CHECKPOINT_WARNING, reason))
            return None

    def _start_from_checkpoint(self) -> None:
        """A fork or a retry: load the checkpoint it starts from (CheckpointError: it cannot, and the
        trial fails with that reason)."""
        from steer.checkpoints import CheckpointError

        r = self.resume
        try:
            if self.checkpoints is None or self.state is None:
                raise CheckpointError(f"trial {self.trial.number} starts from checkpoint {r['checkpoint']} of trial "
                                      f"{r['from']}, but this loop cannot load one: pass state= to steer.steering")
            ck = self.checkpoints.get(r["checkpoint"])
            if ck is None:
                raise CheckpointError(f"checkpoint {r['checkpoint']} of trial {r['from']} (step {r['step']}) is gone")
            self.restore(self.checkpoints.load(ck, self.device), keep_step=False)
        except CheckpointError as exc:  # the trial fails with the reason in its record, whoever runs the loop
            record.write(self.trial, record.FAIL_REASON, f"CheckpointError: {exc}")
            raise

    def _quietly(self, fn: Callable[[], Any]) -> None:
        """Housekeeping that must not stop a trial: a failure is logged."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - logged; the trial trains on
            log.warning("trial %d: checkpoint housekeeping failed: %s", self.trial.number if self.trial else -1, exc)

    # ---- live state ----------------------------------------------------------------------- #
    def publish(self, *, value: Any = None, preview: Any = None, running: bool = True) -> None:
        """Publish a metrics row (loss, value, settings) and the preview image now."""
        if preview is not None:
            self._last_preview = preview
        if value is not None:
            self._last_value = value
        value = value() if callable(value) else value
        if value is None:  # the loop gave none: the value it last reported to Optuna, if any
            reported = reported_values(self.trial)
            value = reported[max(reported)] if reported else None
        preview = preview() if callable(preview) else preview
        metric = {"loss": _finite(self._last_loss), "psnr": _finite(value), "lr": self.lr,
                  "weight_decay": self.weight_decay, "optimizer": self.optimizer_name,
                  "loss_name": self.loss_name or ""}
        png = to_png(_as_image(preview), self.preview_size) if preview is not None else None
        try:
            self.control.publish(self.trial.number, self.step_count, png=png, metric=metric, running=running)
        except ControlError as exc:
            log.warning("trial %d: cannot publish live state: %s", self.trial.number, exc)

    # ---- the trial's start and end ---------------------------------------------------------- #
    def __enter__(self) -> Steering:
        if self.trial is not None:
            record.write(self.trial, record.CHOICES, {"optimizer": list(self.optimizers), "loss": list(self.losses)})
            self._record_as_params(self.schedule)
        if self.resume:  # a fork or a retry: the changes its checkpoint holds are made already
            self.schedule = self.schedule[self.resume.get("applied", 0):]
            if self.resume.get("checkpoint") is not None:
                self._start_from_checkpoint()
            self.step_count = self.start_step
            if self.schedule and self.schedule[0]["step"] <= self.start_step:
                self._apply_schedule(self.start_step)  # a fork's changes, before its first step
        return self

    def _record_as_params(self, events: list[dict[str, Any]]) -> None:
        """Each change as an Optuna param (`lr@479` = 3e-4, `undo@900` = 1): `best_params`, the sampler and
        optuna-dashboard then say what trained. A trial's given schedule goes in when it starts; the
        changes a person made go in when it ends (`close`), when all are known: Optuna keeps one value
        per param name, and of two changes of one setting at one step the last one trained.

        The distributions are the widest a setting allows, the same in every
        trial of a study (Optuna requires one distribution per param name). A
        name taken already (a person's change at the step of a scheduled one
        of the same setting) keeps its first value; the interventions say the rest.
        """
        from steer.storage import set_trial_param

        latest: dict[str, tuple[Any, optuna.distributions.BaseDistribution]] = {}
        for event in events:
            name, value = record.scheduled_param(event)
            latest[name] = (value, self._distribution(event))
        have = self.trial.params
        for name, (value, distribution) in latest.items():
            if name in have:
                continue
            try:
                set_trial_param(self.trial, name, value, distribution)
            except (ValueError, ControlError) as exc:  # the record keeps the change; the trial trains on
                log.warning("trial %d: cannot record %s = %r as a param: %s", self.trial.number, name, value, exc)

    def _distribution(self, event: dict[str, Any]) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution of a change's param (`lr@479`)."""
        setting = ACTIONS[event["action"]].setting
        if setting in ("optimizer", "loss"):
            return optuna.distributions.CategoricalDistribution(
                sorted(self.optimizers if setting == "optimizer" else self.losses))
        if setting is not None:
            pdef = PARAMS[setting]
            return optuna.distributions.FloatDistribution(pdef.low, pdef.high, log=pdef.low > 0)  # weight decay from 0
        if event["action"] == "undo":  # no value: that it happened, at that step
            return optuna.distributions.IntDistribution(1, 1)
        return optuna.distributions.IntDistribution(0, 2**63 - 1)  # reset: the seed it drew

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is None:
            how = "completed"
        elif issubclass(exc_type, optuna.TrialPruned):
            how = "was pruned"
        else:
            how = "failed"
        self.close(how)
        return False

    def close(self, how: str) -> None:
        """The trial is ending (`how`: completed, was pruned, failed): record where it stands,
        publish a last row, expire what is still pending."""
        if self.trial is None:
            return
        record.write(self.trial, record.EFFECTIVE_PARAMS, self.effective_params())
        record.write(self.trial, record.FINAL_STEP, self.step_count)
        self._record_as_params([e for e in self.interventions if ACTIONS[e["action"]].replayed])
        if self.control is None:
            return
        self.publish(value=self._last_value, preview=self._last_preview, running=False)
        if self.checkpoints is not None:  # its own go (unless a fork starts from one), and any nobody needs
            self._quietly(lambda: self.checkpoints.release(self.trial.number))
        try:
            self.control.expire_pending(self.trial.number, f"the trial {how} before the command was applied")
        except ControlError as exc:
            log.warning("trial %d: cannot expire commands: %s", self.trial.number, exc)


def steering(trial: optuna.Trial, optimizer: torch.optim.Optimizer, *, model: torch.nn.Module | None = None,
             optimizers: Mapping[str, OptimizerFactory] | None = None, losses: Mapping[str, LossFn] | None = None,
             loss: str | None = None, optimizer_name: str | None = None,
             effective_params: Callable[[dict[str, Any]], dict[str, Any]] | None = None, enabled: bool = True,
             poll_interval: float = 0.2, publish_interval: float = 0.5, preview_size: int = 128,
             spare_watched: bool = True,
             lr_range_loss: Callable[[torch.nn.Module], torch.Tensor] | None = None,
             state: Any = None, checkpoint_every: float = 0.0, checkpoint_keep: int = CHECKPOINT_DEFAULTS["keep"],
             undo_depth: int = CHECKPOINT_DEFAULTS["undo_depth"], checkpoint_store: Any = None) -> Steering:
    """Make `trial` steerable; use it as a context manager around the training loop.

    optimizer       the optimizer the loop steps; `set_lr` / `set_weight_decay` change its param_groups,
                    `set_optimizer` switches it in place
    model           needed by `reset` (its `reset_parameters`, or its layers')
    optimizers      name -> factory `(param_groups, lr=, weight_decay=) -> optimizer` that `set_optimizer`
                    may switch to (default: adam, sgd with momentum 0.9, adamw)
    losses, loss    name -> loss function that `set_loss` may switch to, and the one in use; the loop
                    reads the current one as `s.loss_fn`
    effective_params  `(settings) -> params`: what trains now, given the current settings, as the
                    record and `promote` should say (default: the trial's params with the settings over them)
    lr_range_loss   `(model) -> loss`: one training loss of the model given (a copy of the trial's), which
                    `find-lr` trains with a rising LR (steer.lr_finder); without it find-lr is rejected
    enabled         False: commands are neither read nor applied (the trial still records its end)
    spare_watched   `s.should_prune()` spares the trial while its page is open in the app
    state           the loop's whole state, with `state_dict()` (its step under "step") and
                    `load_state_dict()`: then a trial can be forked and resumed after a crash, starting
                    at `s.start_step` (the loop trains from the step after it). Without it a checkpoint
                    holds the model and the optimizer, enough for `undo` (not for the data order)
    checkpoint_every  seconds between two checkpoints of a running trial (0: only before each applied
                    change, which `undo` goes back to, and at a fork); `checkpoint_keep` of them are kept
    undo_depth      how many changes back `undo` can go: the state before each of the newest this many is
                    kept while the trial runs (a checkpoint each), older ones go
    checkpoint_store  any Optuna artifact store (default: the study's artifact folder)

    Studies on an RDB storage (SQLite, PostgreSQL, MySQL) are steerable; an
    in-memory study trains unsteered, with a warning. The study's sampler is
    wrapped, once, in a `steer.sampler.SteerSampler`: later trials honour the
    study's pins and hints, and steered trials do not inform the sampler (wrap it
    yourself with `steered="sampled"` to keep them in).
    """
    control = checkpoints = None
    if enabled:
        try:
            control = Control.open(trial.study)
        except NotSteerable as exc:
            log.warning("trial %d trains unsteered: %s", trial.number, exc)
        if control is not None and not isinstance(trial.study.sampler, SteerSampler):
            trial.study.sampler = SteerSampler(trial.study.sampler, control.pin_values, hints=control.hint_rows)
        sampler = trial.study.sampler
        hinted = sampler.hinted(trial.number) if isinstance(sampler, SteerSampler) else {}
        if hinted:  # marked on the trial, so the comparison (and a person) can tell hinted draws apart
            record.write(trial, record.HINTED, hinted)
        if control is not None:
            from steer.checkpoints import Checkpoints

            checkpoints = Checkpoints.of(control, checkpoint_store)
    return Steering(trial, optimizer, model=model, optimizers=optimizers, losses=losses, loss=loss,
                    optimizer_name=optimizer_name, effective_params=effective_params, control=control,
                    poll_interval=poll_interval, publish_interval=publish_interval, preview_size=preview_size,
                    spare_watched=spare_watched, lr_range_loss=lr_range_loss, state=state,
                    checkpoints=checkpoints, checkpoint_every=checkpoint_every, checkpoint_keep=checkpoint_keep,
                    undo_depth=undo_depth)


def _finite(x: Any) -> float | None:
    """A number for JSON and SQL (a tensor is read here), None for NaN/inf or nothing."""
    if x is None:
        return None
    x = float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
    return x if x == x and abs(x) != float("inf") else None


def _as_image(img: Any) -> torch.Tensor:
    """A preview as (H, W, 3) in [0, 1]: grey images get three channels, (C, H, W) is transposed."""
    img = torch.as_tensor(img).detach().float()
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.permute(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise UserError(f"steer: a preview must be (H, W), (H, W, C) or (C, H, W) with C 1 or 3; got {tuple(img.shape)}")
    return img.expand(*img.shape[:2], 3) if img.shape[-1] == 1 else img


__all__ = ["HANDLERS", "LOSSES", "OPTIMIZERS", "InvalidChange", "Steering", "handles", "reset_weights", "steering"]
