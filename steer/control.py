"""The control plane: the one Python API to steer a study and to read what it did.

    from steer.control import Control
    ctl = Control.open("sqlite:///studies/quick.db", "quick")
    cmd = ctl.request("set_lr", trial=3, value=3e-4, by="alice")
    ctl.wait(cmd.id)            # -> Command(state="applied", applied_step=412, ...)

The CLI (`steer ctl`) and the Dash app call only this. A request is always
recorded: bad ones as `rejected` with the reason, trial changes as `pending`
until the trial's worker applies them at a step boundary (`applied`, with the
step) or the trial ends first (`expired`). Study-level changes (pins) and
changes that only read a finished trial (pin its value, promote it) are
applied at once.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from steer import tables as T
from steer.errors import UserError
from steer.spec import PARAMS
from steer.storage import display_url, open_storage

# action -> the trainer parameter it changes
SET_ACTIONS = {"set_lr": "lr", "set_optimizer": "optimizer", "set_loss": "loss",
               "set_weight_decay": "weight_decay"}
ACTIONS = (*SET_ACTIONS, "pin", "unpin", "prune", "reset", "promote")
PINNABLE = ("lr", "optimizer", "loss", "weight_decay")
STATES = ("pending", "applied", "rejected", "expired")


@dataclass(frozen=True)
class Command:
    id: int
    trial: int | None
    action: str
    args: dict[str, Any]
    request_id: str | None
    requested_by: str
    requested_at: float
    state: str
    applied_step: int | None
    resolved_at: float | None
    reason: str | None
    result: dict[str, Any] | None

    @property
    def done(self) -> bool:
        return self.state != "pending"

    def describe(self) -> str:
        """One line: what became of the request."""
        target = f"trial {self.trial}" if self.trial is not None else "study"
        head = f"command {self.id} {self.action} {json.dumps(self.args)} on {target}: {self.state}"
        if self.state == "applied" and self.applied_step is not None:
            return f"{head} at step {self.applied_step}"
        return f"{head} ({self.reason})" if self.reason else head


@dataclass(frozen=True)
class LiveState:
    trial: int
    step: int
    wall_time: float
    png: bytes | None
    running: bool


@dataclass(frozen=True)
class Metric:
    trial: int
    step: int
    wall_time: float
    loss: float | None
    psnr: float | None
    lr: float
    weight_decay: float
    optimizer: str
    loss_name: str


@dataclass(frozen=True)
class Pin:
    param: str
    value: Any
    pinned_by: str
    pinned_at: float
    source_trial: int | None


def _command(row: Any) -> Command:
    return Command(
        id=row.id, trial=row.trial_number, action=row.action, args=json.loads(row.args),
        request_id=row.request_id, requested_by=row.requested_by, requested_at=row.requested_at,
        state=row.state, applied_step=row.applied_step, resolved_at=row.resolved_at, reason=row.reason,
        result=json.loads(row.result) if row.result else None,
    )


def storage_url(study: optuna.Study) -> str | None:
    """The database URL behind an Optuna study, or None when it is not an RDB storage.

    Optuna wraps `RDBStorage` in a private cache; this is the one place that looks inside.
    """
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend.url if isinstance(backend, optuna.storages.RDBStorage) else None


def check_value(param: str, value: Any) -> Any:
    """`value` checked (and normalised) for `param`, or ValueError naming what is allowed.

    Strings that read as numbers are accepted for numeric params (they come from the CLI and forms).
    """
    pdef = PARAMS[param]
    if pdef.kind != "choice" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{param}: got {value!r}; expected a number, {pdef.allowed()}") from None
    try:
        return pdef.check(value)
    except ValueError as exc:
        raise ValueError(f"{param}: {exc}") from None


def promotion(effective: dict[str, Any], source: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params and user attrs to enqueue a clean run of `effective` (a trial's effective params).

    Every effective value goes in as a fixed param (Optuna ignores those never
    suggested) and as `steer.overrides`, which the objective applies to params
    the spec does not search (e.g. a loss changed by hand while the spec fixes it).
    """
    return dict(effective), {"steer.promoted_from": source, "steer.overrides": dict(effective)}


_OPENED: dict[tuple[str, str, int], "Control"] = {}  # Control.for_study's, by (url, study name, study id)


class Control:
    """Request, read and resolve steering commands for one study."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str, db: T.Database | None = None) -> None:
        self.storage = storage
        self.study_name = study_name
        self.study_id = storage.get_study_id_from_name(study_name)
        self.db = db or T.Database.from_url(storage.url)

    @classmethod
    def open(cls, url: str, study_name: str) -> Control:
        storage = open_storage(url, must_exist=True)
        try:
            return cls(storage, study_name)
        except KeyError:
            raise UserError(f"no study named {study_name!r} in {display_url(url)}") from None

    @classmethod
    def for_study(cls, study: optuna.Study) -> Control | None:
        """The control plane of `study`, or None for storages steer cannot steer (in-memory).

        One per study and process, reused by every trial: each holds two
        connection pools, and a worker that opened new ones for each trial
        would pile up server connections faster than they are collected.
        """
        url = storage_url(study)
        if url is None:
            return None
        key = (url, study.study_name, study._study_id)
        if key not in _OPENED:
            _OPENED[key] = cls(open_storage(url, heartbeat=False), study.study_name)
        return _OPENED[key]

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    # ---- requests ------------------------------------------------------- #
    def request(self, action: str, *, trial: int | None = None, value: Any = None, param: str | None = None,
                by: str = "api", request_id: str | None = None, reason: str | None = None) -> Command:
        """Record a request and return it (pending, applied at once, or rejected with the reason).

        `value` is the new value for set_* actions, a seed for `reset` (random
        if None), a value for a study-level `pin`; `param` names what `pin` and
        `unpin` act on; `reason` is kept with a `prune`.
        """
        args: dict[str, Any] = {}
        rejection: str | None = None
        immediate: Callable[[Session], dict[str, Any]] | None = None
        try:
            if request_id is not None:
                dup = self.db.run(lambda s: s.execute(select(T.commands.c.id).where(and_(
                    T.commands.c.study_id == self.study_id, T.commands.c.request_id == request_id))).scalar())
                if dup is not None:
                    raise ValueError(f"duplicate request id {request_id!r} (already command {dup})")
            args, immediate = self._validate(action, trial, value, param, by, reason)
        except ValueError as exc:
            rejection = str(exc)
            args = {k: v for k, v in (("value", value), ("param", param)) if v is not None}
            args = json.loads(json.dumps(args, default=str))
        now = time.time()

        def insert(s: Session) -> int:
            state, result, resolved = "pending", None, None
            if rejection is not None:
                state, resolved = "rejected", now
            elif immediate is not None:
                result, state, resolved = immediate(s), "applied", now
            return s.execute(T.commands.insert().values(
                study_id=self.study_id, trial_number=trial, action=action, args=json.dumps(args),
                request_id=request_id, requested_by=by, requested_at=now, state=state, resolved_at=resolved,
                reason=rejection, result=json.dumps(result) if result is not None else None,
            )).inserted_primary_key[0]

        command_id = self.db.run(insert)
        if rejection is None and immediate is None and trial is not None:
            # The trial may have ended between the check above and the insert; its worker has
            # then already expired what was pending, so this one is expired here.
            state = self._trial_state(trial)
            if state is not None and state.is_finished():
                self.expire_pending(trial, "the trial ended before the command was applied")
        return self.command(command_id)

    def _validate(self, action: str, trial: int | None, value: Any, param: str | None, by: str,
                  reason: str | None) -> tuple[dict[str, Any], Callable[[Session], dict[str, Any]] | None]:
        """Check a request; return its args and, for changes applied at once, the function that applies them."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
        if action in ("pin", "unpin"):
            if param not in PINNABLE:
                raise ValueError(f"{action} needs a parameter: one of {', '.join(PINNABLE)}; got {param!r}")
            if action == "unpin":
                if trial is not None:
                    raise ValueError("unpin acts on the study: give no trial")
                if param not in self.pins():
                    raise ValueError(f"{param} is not pinned")
                return {"param": param}, lambda s: self._unpin(s, param)
            if trial is None:
                if value is None:
                    raise ValueError(f"pin {param} needs a value, or a trial to take the value from")
                checked = check_value(param, value)
                return {"param": param, "value": checked}, lambda s: self._pin(s, param, checked, by, None)
        if trial is None:
            raise ValueError(f"{action} needs a trial number")
        state = self._trial_state(trial)
        if state is None:
            raise ValueError(f"no trial {trial} in study {self.study_name!r}")
        running = state == TrialState.RUNNING
        if action in ("pin", "promote") and state.is_finished():
            effective = self._effective_params(trial)
            if effective is None:
                raise ValueError(f"trial {trial} is {state.name} and recorded no effective params")
            if action == "pin":
                val = effective[param]
                return {"param": param}, lambda s: self._pin(s, param, val, by, trial)
            result = self._promote_finished(trial, effective)  # Optuna's own tables: not retried with ours
            return {}, lambda s: result
        if not running:
            raise ValueError(f"trial {trial} is {state.name}: only running trials can be changed")
        if action in SET_ACTIONS:
            return {"value": check_value(SET_ACTIONS[action], value)}, None
        if action == "reset":
            if value is None:
                value = random.randrange(2**31)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise ValueError(f"reset seed must be a non-negative integer, got {value!r}")
            return {"seed": value}, None
        if action == "prune":
            return ({"reason": str(reason)} if reason else {}), None
        if action == "pin":
            return {"param": param}, None
        return {}, None  # promote a running trial: its worker knows the effective params

    def _trial_state(self, number: int) -> TrialState | None:
        try:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        except KeyError:
            return None
        return self.storage.get_trial(trial_id).state

    def _effective_params(self, number: int) -> dict[str, Any] | None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self.storage.get_trial(trial_id).user_attrs.get("steer.effective_params")

    def _promote_finished(self, trial: int, effective: dict[str, Any]) -> dict[str, Any]:
        params, attrs = promotion(effective, trial)
        self.study().enqueue_trial(params, user_attrs=attrs)
        return {"action": "promote", "old": None, "new": params}

    # ---- pins ----------------------------------------------------------- #
    def _pin(self, s: Session, param: str, value: Any, by: str, source: int | None) -> dict[str, Any]:
        old = self._pins(s).get(param)
        T.upsert(s, T.pins, {"study_id": self.study_id, "param": param, "value": json.dumps(value), "pinned_by": by,
                             "pinned_at": time.time(), "source_trial": source})
        return {"action": "pin", "param": param, "old": old.value if old else None, "new": value}

    def _unpin(self, s: Session, param: str) -> dict[str, Any]:
        old = self._pins(s).get(param)
        s.execute(T.pins.delete().where(and_(T.pins.c.study_id == self.study_id, T.pins.c.param == param)))
        return {"action": "unpin", "param": param, "old": old.value if old else None, "new": None}

    def pin_from_trial(self, param: str, value: Any, by: str, trial: int) -> dict[str, Any]:
        """Worker side: pin a running trial's current value."""
        return self.db.run(lambda s: self._pin(s, param, value, by, trial))

    def _pins(self, s: Session) -> dict[str, Pin]:
        rows = s.execute(select(T.pins).where(T.pins.c.study_id == self.study_id)).all()
        return {r.param: Pin(r.param, json.loads(r.value), r.pinned_by, r.pinned_at, r.source_trial) for r in rows}

    def pins(self) -> dict[str, Pin]:
        return self.db.run(self._pins)

    def pin_values(self) -> dict[str, Any]:
        return {name: pin.value for name, pin in self.pins().items()}

    # ---- reading commands ----------------------------------------------- #
    def command(self, command_id: int) -> Command:
        row = self.db.run(lambda s: s.execute(select(T.commands).where(T.commands.c.id == command_id)).first())
        if row is None:
            raise UserError(f"no command {command_id}")
        return _command(row)

    def commands(self, trial: int | None = None, states: tuple[str, ...] | None = None) -> list[Command]:
        q = select(T.commands).where(T.commands.c.study_id == self.study_id)
        if trial is not None:
            q = q.where(T.commands.c.trial_number == trial)
        if states:
            q = q.where(T.commands.c.state.in_(states))
        return [_command(r) for r in self.db.run(lambda s: s.execute(q.order_by(T.commands.c.id)).all())]

    def wait(self, command_id: int, timeout: float = 30.0, poll: float = 0.05) -> Command:
        """Wait until the command is resolved or `timeout` seconds pass; returns its latest state."""
        deadline = time.monotonic() + timeout
        while True:
            cmd = self.command(command_id)
            if cmd.done or time.monotonic() >= deadline:
                return cmd
            time.sleep(poll)

    # ---- worker side ------------------------------------------------------ #
    def pending(self, trial: int) -> list[Command]:
        return self.commands(trial, ("pending",))

    def resolve(self, command_id: int, state: str, *, step: int | None = None, reason: str | None = None,
                result: dict[str, Any] | None = None) -> None:
        """Mark a pending command applied / rejected / expired (no-op if already resolved)."""
        if state not in STATES[1:]:
            raise ValueError(f"state must be one of {STATES[1:]}, got {state!r}")
        self.db.run(lambda s: s.execute(update(T.commands).where(and_(
            T.commands.c.id == command_id, T.commands.c.state == "pending")).values(
            state=state, applied_step=step, reason=reason, resolved_at=time.time(),
            result=json.dumps(result) if result is not None else None)))

    def expire_pending(self, trial: int, reason: str) -> int:
        """Expire the trial's pending commands; returns how many."""
        return self.db.run(lambda s: s.execute(update(T.commands).where(and_(
            T.commands.c.study_id == self.study_id, T.commands.c.trial_number == trial,
            T.commands.c.state == "pending")).values(
            state="expired", reason=reason, resolved_at=time.time())).rowcount)

    def publish(self, trial: int, step: int, *, png: bytes | None, metric: dict[str, Any] | None,
                running: bool = True) -> None:
        """Worker side: the live preview (replaced) and one metrics row (appended), in one transaction."""
        now = time.time()

        def write(s: Session) -> None:
            values: dict[str, Any] = {"study_id": self.study_id, "trial_number": trial, "step": step,
                                      "wall_time": now, "running": running}
            if png is not None:
                values["png"] = png
            T.upsert(s, T.live, values)
            if metric is not None:
                s.execute(T.metrics.insert().values(study_id=self.study_id, trial_number=trial, step=step,
                                                    wall_time=now, **metric))

        self.db.run(write)

    def store_target(self, png: bytes, width: int, height: int) -> None:
        """The study's target image, stored once."""
        def write(s: Session) -> None:
            T.upsert(s, T.targets, {"study_id": self.study_id, "png": png, "width": width, "height": height},
                     replace=False)
        self.db.run(write)

    def sweep(self, study: optuna.Study | None = None) -> list[int]:
        """Mark stale RUNNING trials (dead workers, by heartbeat) FAIL and expire orphaned commands.

        `study` must be opened on a storage with heartbeats for stale trials to
        be found (a worker's study is). Returns the numbers of the trials it
        failed. Safe to call from any process, any number of times.
        """
        study = study or self.study()
        failed_before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        failed = sorted({t.number for t in trials if t.state == TrialState.FAIL} - failed_before)
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        for trial in {c.trial for c in self.commands(states=("pending",))} - running - {None}:
            self.expire_pending(trial, "the trial ended before the command was applied")
        ended = [t.number for t in trials if t.state.is_finished()]
        if ended:
            self.db.run(lambda s: s.execute(update(T.live).where(and_(
                T.live.c.study_id == self.study_id, T.live.c.trial_number.in_(ended),
                T.live.c.running.is_(True))).values(running=False)))
        return failed

    # ---- reading live state ---------------------------------------------- #
    def live(self, trial: int) -> LiveState | None:
        row = self.db.run(lambda s: s.execute(select(T.live).where(and_(
            T.live.c.study_id == self.study_id, T.live.c.trial_number == trial))).first())
        return LiveState(row.trial_number, row.step, row.wall_time, row.png, row.running) if row else None

    def live_all(self, running_only: bool = True) -> list[LiveState]:
        q = select(T.live).where(T.live.c.study_id == self.study_id)
        if running_only:
            q = q.where(T.live.c.running.is_(True))
        rows = self.db.run(lambda s: s.execute(q.order_by(T.live.c.trial_number)).all())
        return [LiveState(r.trial_number, r.step, r.wall_time, r.png, r.running) for r in rows]

    def metrics(self, trial: int, after_step: int = -1) -> list[Metric]:
        q = select(T.metrics).where(and_(T.metrics.c.study_id == self.study_id, T.metrics.c.trial_number == trial,
                                         T.metrics.c.step > after_step)).order_by(T.metrics.c.step, T.metrics.c.id)
        rows = self.db.run(lambda s: s.execute(q).all())
        return [Metric(r.trial_number, r.step, r.wall_time, r.loss, r.psnr, r.lr, r.weight_decay, r.optimizer,
                       r.loss_name) for r in rows]

    def target_png(self) -> bytes | None:
        return self.db.run(lambda s: s.execute(select(T.targets.c.png).where(
            T.targets.c.study_id == self.study_id)).scalar())


def finite(x: float | None) -> float | None:
    """None for NaN/inf, so JSON and SQL get a clean null."""
    return x if x is not None and math.isfinite(x) else None
