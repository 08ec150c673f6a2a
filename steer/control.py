"""The control plane: the one Python API to steer a study and to read what it did.

    from steer.control import Control
    ctl = Control.open("sqlite:///studies/quick.db")        # or Control.open(study)
    cmd = ctl.request("set_lr", trial=3, value=3e-4, by="alice")
    ctl.wait(cmd.id)            # -> Command(state="applied", applied_step=412, ...)

The CLI (`steer ctl`) and the Dash app call only this. A request is always
recorded: bad ones as `rejected` with the reason, trial changes as `pending`
until the trial's worker applies them at a step boundary (`applied`, with the
step) or the trial ends first (`expired`). What each action is, and who
applies it, is its row in `steer.actions`; the actions the control plane
applies itself (pins, and what only reads a finished trial) have their
handlers here (`@applies_now`).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from steer import actions, record, search_space
from steer.errors import UserError
from steer.spec import CHECKPOINT_DEFAULTS, Dimension
from steer.storage import (
    default_storage_url, display_url, enqueue_trial, open_storage, rdb_storage, resolve_study_name, save_trial_note,
    shared_database, trial_state,
)
from steer.storage import tables as T

log = logging.getLogger("steer.control")

STATES = ("pending", "applied", "rejected", "expired")


class NotSteerable(UserError):
    """A study whose storage steer cannot steer (in-memory: no other process can reach it)."""


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
        new = (self.result or {}).get("new")
        made = f": trial {new['trial']}" if isinstance(new, dict) and "trial" in new else ""  # a fork, a promote
        if self.state == "applied" and self.applied_step is not None:
            return f"{head} at step {self.applied_step}{made}"
        if self.state == "applied" and made:
            return head + made
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
    psnr: float | None  # the value the objective reports (PSNR in dB for image studies)
    lr: float
    weight_decay: float
    optimizer: str
    loss_name: str


@dataclass(frozen=True)
class Hint:
    param: str
    value: Any
    strength: float
    trials: int
    first_trial: int  # trials first_trial .. first_trial + trials - 1 may be hinted
    hinted_by: str
    hinted_at: float

    def left(self, n_trials: int) -> int:
        """How many of its trials have not started yet, when the study has `n_trials` trials (numbered in order)."""
        return max(0, min(self.trials, self.first_trial + self.trials - n_trials))

    def as_sampler_sees_it(self) -> dict[str, Any]:
        return {"value": self.value, "strength": self.strength, "trials": self.trials, "first_trial": self.first_trial}

    def describe(self) -> str:
        return (f"{self.param} near {self.value:g}" if isinstance(self.value, float) else f"{self.param} near {self.value}") \
            + f", strength {self.strength:g}, trials {self.first_trial}-{self.first_trial + self.trials - 1}"


@dataclass(frozen=True)
class SpaceEdit:
    param: str
    dimension: dict[str, Any]  # steer.search_space.to_dict
    edited_by: str
    edited_at: float


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


# ---- actions the control plane applies itself ------------------------------------------- #

Write = Callable[[Session], dict[str, Any]]  # writes in the request's transaction, returns the command's result
Immediate = Callable[["Control", dict[str, Any], "FrozenTrial | None", str], Write]
IMMEDIATE: dict[str, Immediate] = {}


def applies_now(action: str) -> Callable[[Immediate], Immediate]:
    """Register how the control plane applies `action` (a row of `steer.actions` it applies) when recorded.

    The handler gets the checked args, the finished trial it reads (or None)
    and who asked. It returns the function that writes steer's tables in the
    transaction that records the command (and so is retried with it); work on
    Optuna's own tables is done by the handler itself, once.
    """
    if action not in actions.ACTIONS or not actions.ACTIONS[action].by_control:
        raise ValueError(f"{action!r} is not an action the control plane applies")

    def register(fn: Immediate) -> Immediate:
        IMMEDIATE[action] = fn
        return fn

    return register


@applies_now("pin")
def _pin_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    param = args["param"]
    if trial is None:
        return lambda s: control._write_pin(s, param, args["value"], by, None)
    value = record.read(trial).effective[param]
    return lambda s: control._write_pin(s, param, value, by, trial.number)


@applies_now("unpin")
def _unpin_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    param = args["param"]

    def write(s: Session) -> dict[str, Any]:
        old = control._pins(s).get(param)
        control._forget(s, T.pins, param)
        return {"action": "unpin", "param": param, "old": old.value if old else None, "new": None}

    return write


@applies_now("hint")
def _hint_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    first = control.storage.get_n_trials(control.study_id)  # the next trial's number: trials are numbered in order
    new = {"value": args["value"], "strength": args["strength"], "trials": args["trials"], "first_trial": first}

    def write(s: Session) -> dict[str, Any]:
        old = control._hints(s).get(args["param"])
        T.upsert(s, T.hints, {"study_id": control.study_id, "param": args["param"], "value": json.dumps(new["value"]),
                              "strength": new["strength"], "trials": new["trials"], "first_trial": first,
                              "hinted_by": by, "hinted_at": time.time()})
        return {"action": "hint", "param": args["param"], "old": old.as_sampler_sees_it() if old else None, "new": new}

    return write


@applies_now("unhint")
def _unhint_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    param = args["param"]

    def write(s: Session) -> dict[str, Any]:
        old = control._hints(s).get(param)
        control._forget(s, T.hints, param)
        return {"action": "unhint", "param": param, "old": old.as_sampler_sees_it() if old else None, "new": None}

    return write


@applies_now("space")
def _space_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    param, new = args["param"], args["space"]
    spec_dim = search_space.to_dict(control.spec_space()[param])

    def write(s: Session) -> dict[str, Any]:
        old = control._space_edits(s).get(param)
        if new is None:
            control._forget(s, T.space, param)
        else:
            T.upsert(s, T.space, {"study_id": control.study_id, "param": param, "dimension": json.dumps(new),
                                  "edited_by": by, "edited_at": time.time()})
        return {"action": "space", "param": param, "old": old.dimension if old else spec_dim, "new": new or spec_dim}

    return write


@applies_now("promote")
def _promote_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    rec = record.read(trial)
    number, params = control.promote(rec, args, up_to=record.attrs(trial).get(record.FINAL_STEP))
    result = {"action": "promote", "old": None, "new": {"trial": number, "params": params}}
    return lambda s: result


@applies_now("hold")
def _hold_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    held = control.held()
    if held is not None:
        raise ValueError(f"the study is held already (by {held['by']})")
    control.storage.set_study_user_attr(control.study_id, record.HELD, {"by": by, "at": time.time()})
    return lambda s: {"action": "hold", "old": None, "new": "held"}


@applies_now("release")
def _release_now(control: Control, args: dict[str, Any], trial: FrozenTrial | None, by: str) -> Write:
    if control.held() is None:
        raise ValueError("the study is not held")
    control.storage.set_study_user_attr(control.study_id, record.HELD, None)
    return lambda s: {"action": "release", "old": "held", "new": None}


# Optuna's trials.number is an INTEGER column, 32 bits on PostgreSQL: a number beyond it names no trial,
# and handing it to a database fails (SQLite: OverflowError) instead of finding nothing.
MAX_TRIAL_NUMBER = 2**31 - 1


def _text(value: str | None) -> str | None:
    """A text for the commands table: PostgreSQL's text columns refuse NUL characters (found by the
    fuzz tests: a request whose reason quoted a NUL failed as a database error), so they are shown."""
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


def retry_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """An Optuna stale-trial callback (RDBStorage's `heartbeat_stale_trial_callback`): a trial whose worker
    died (its heartbeat went stale) is carried on from its last checkpoint by whichever worker of the study
    starts a trial next. Optuna calls it in the one process that marked the trial FAIL."""
    try:
        number = Control.open(study).retry(trial)
    except Exception as exc:  # noqa: BLE001 - a worker must not die of another's death: said, and it goes on
        log.warning("trial %d died and cannot be retried: %s", trial.number, exc)
        return
    if number is not None:
        log.warning("trial %d died (its worker stopped beating); trial %d carries it on from its last checkpoint",
                    trial.number, number)


def trial_number_ok(number: Any) -> bool:
    """Whether `number` can name a trial at all (an int in 0..MAX_TRIAL_NUMBER, not a bool)."""
    return isinstance(number, int) and not isinstance(number, bool) and 0 <= number <= MAX_TRIAL_NUMBER


_OPENED: dict[tuple[int, str], "Control"] = {}  # Control.open(study)'s, by (storage, study name)


class Control:
    """Request, read and resolve steering commands for one study."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.study_id = storage.get_study_id_from_name(study_name)
        self.db = shared_database(storage)  # the storage's own engine: one connection pool per storage
        self._trial_ids: dict[int, int] = {}  # trial number -> id: fixed once the trial exists

    @classmethod
    def open(cls, where: str | optuna.Study | optuna.storages.RDBStorage | None = None,
             study: str | None = None) -> Control:
        """The control plane of a study: the one way to get one.

        `where` is an Optuna study (a trial's, a worker's: its storage is reused,
        and the Control is kept for the process, shared by every trial), an
        opened RDB storage, or a storage URL (default: $STEER_STORAGE or the
        only *.db in ./studies or here). `study` names the study in a storage (default: its
        only study). Raises `NotSteerable` for in-memory studies and
        `UserError` for a missing database or study.
        """
        if isinstance(where, optuna.Study):
            storage = rdb_storage(where)
            if storage is None:
                raise NotSteerable(f"study {where.study_name!r} is not in a database (in-memory storage): "
                                   "steer needs one that other processes can reach, e.g. sqlite:///study.db")
            key = (id(storage), where.study_name)
            if key not in _OPENED:
                _OPENED[key] = cls(storage, where.study_name)
            return _OPENED[key]
        if isinstance(where, optuna.storages.RDBStorage):
            storage, url = where, where.url
        else:
            url = where or default_storage_url()
            storage = open_storage(url, must_exist=True, heartbeat=False)
        name = resolve_study_name(storage, study)
        try:
            return cls(storage, name)
        except KeyError:
            raise UserError(f"no study named {name!r} in {display_url(url)}") from None

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage)

    # ---- requests ------------------------------------------------------- #
    def request(self, action: str, *, trial: int | None = None, value: Any = None, param: str | None = None,
                by: str = "api", request_id: str | None = None, reason: str | None = None,
                denied: str | None = None, options: dict[str, Any] | None = None) -> Command:
        """Record a request and return it (pending, applied at once, or rejected with the reason).

        `value` is the new value for set_* actions, a seed for `reset` (random
        if None), a value for a study-level `pin`; `param` names what `pin` and
        `unpin` act on (and `hint`, `unhint`, `space`); `options` are a hint's
        strength and trials, a space edit's low, high, choices or reset;
        `reason` is kept with a `prune`. `denied`: why the
        asker may not make this request (a viewer in the app); it is recorded,
        rejected with that reason.
        """
        now = time.time()
        name = _text(str(action))[:32]  # the column's width: an unknown name is recorded as far as it fits
        by, request_id = _text(str(by)), _text(request_id)
        write = None
        asked_trial = trial  # recorded as asked, unless no trial can have that number
        try:
            if trial is not None and not trial_number_ok(trial):
                asked_trial = None
                raise ValueError(f"no trial {str(trial)[:40]}: trial numbers are whole numbers from 0 to "
                                 f"{MAX_TRIAL_NUMBER}")
            act = actions.get(action)
            name = act.name
            if denied:
                raise ValueError(denied)
            if request_id is not None:
                dup = self.db.run(lambda s: s.execute(select(T.commands.c.id).where(and_(
                    T.commands.c.study_id == self.study_id, T.commands.c.request_id == request_id))).scalar())
                if dup is not None:
                    raise ValueError(f"duplicate request id {request_id!r} (already command {dup})")
            args, finished = self._check(act, trial, value, param, reason, options)
            if act.by_control and (trial is None or finished is not None):
                write = IMMEDIATE[act.name](self, args, finished, by)
            rejection = None
        except ValueError as exc:
            rejection = _text(str(exc))
            asked = {"value": value, "param": param, "trial": str(trial)[:40] if asked_trial != trial else None,
                     **(options or {})}
            args = json.loads(json.dumps({k: v for k, v in asked.items() if v is not None}, default=str))

        def insert(s: Session) -> tuple[int, str, Any]:
            state, result, resolved = "pending", None, None
            if rejection is not None:
                state, resolved = "rejected", now
            elif write is not None:
                result, state, resolved = write(s), "applied", now
            row_id = s.execute(T.commands.insert().values(
                study_id=self.study_id, trial_number=asked_trial, action=name, args=json.dumps(args),
                request_id=request_id, requested_by=by, requested_at=now, state=state, resolved_at=resolved,
                reason=rejection, result=json.dumps(result) if result is not None else None,
            )).inserted_primary_key[0]
            return row_id, state, result

        command_id, state, result = self.db.run(insert)
        if state == "pending":
            # The trial may have ended between the check above and the insert; its worker has
            # then already expired what was pending, so this one is expired here.
            now_state = trial_state(self.storage, self._trial_ids[trial])
            if now_state is not None and now_state.is_finished():
                self.expire_pending(trial, "the trial ended before the command was applied")
                return self.command(command_id)
        return Command(command_id, trial, name, args, request_id, by, now, state, None,
                       None if state == "pending" else now, rejection, result)

    def _check(self, act: actions.Action, trial: int | None, value: Any, param: Any,
               reason: Any, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], FrozenTrial | None]:
        """The checked args of a request, and the finished trial an action applied at once reads.

        The trial is checked before the value: a request to a trial that has
        ended says so, whatever its value.
        """
        if act.scope == "study" and trial is not None:
            raise ValueError(f"{act.name} acts on the study: give no trial")
        if act.name in ("pin", "unpin"):
            param = actions.check_pinnable(act.name, param)
        if act.name == "unpin" and param not in self.pins():
            raise ValueError(f"{param} is not pinned")
        if options and act.name not in ("hint", "space"):
            raise ValueError(f"{act.name} takes no options (got {', '.join(map(str, options))})")
        space = spec_space = steer_spec = None
        if act.name in actions.SPACE_ACTIONS:
            steer_spec = self.study_user_attr(record.SPEC)
            spec_space = self._spec_space(steer_spec)
            space = self.space(spec_space)
            if act.name == "unhint" and isinstance(param, str) and param.replace("-", "_") not in self.hints():
                raise ValueError(f"{param} is not hinted")
        finished = choices = None
        if trial is not None:
            frozen = self._trial(trial)
            if frozen is None:
                raise ValueError(f"no trial {trial} in study {self.study_name!r}")
            if frozen.state.is_finished() and act.by_control:
                if record.EFFECTIVE_PARAMS not in record.attrs(frozen):
                    raise ValueError(f"trial {trial} is {frozen.state.name} and recorded no effective params")
                finished = frozen
            elif frozen.state != TrialState.RUNNING:
                raise ValueError(f"trial {trial} is {frozen.state.name}: only running trials can be changed")
            choices = {s: record.choices(frozen, s) for s in ("optimizer", "loss")}
        args = actions.arguments(act, value=value, param=param, reason=reason, trial=trial, choices=choices,
                                 options=options, space=space,
                                 spec_space=spec_space if steer_spec else None)
        return args, finished

    def _trial(self, number: int | None) -> FrozenTrial | None:
        if number is None or not trial_number_ok(number):
            return None
        if number not in self._trial_ids:
            try:
                self._trial_ids[number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
            except KeyError:
                return None
        return self.storage.get_trial(self._trial_ids[number])

    def trial(self, number: int) -> FrozenTrial | None:
        """One trial of the study by number (one trial's rows, not the whole study), or None."""
        return self._trial(number)

    # ---- promotion --------------------------------------------------------- #
    def promote(self, rec: record.TrialRecord, args: dict[str, Any], *, effective: dict[str, Any] | None = None,
                up_to: int | None = None) -> tuple[int, dict[str, Any]]:
        """Enqueue a clean run of what trial `rec` did (`record.promotion`, with `args`' final_values and
        new_seed) and write both trials' optuna-dashboard notes; returns the new trial's number and params."""
        params, attrs = record.promotion(rec, effective=effective, up_to=up_to,
                                         final_values=bool(args.get("final_values")),
                                         new_seed=bool(args.get("new_seed")))
        number = enqueue_trial(self.storage, self.study_id, params, *record.split(attrs))
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        promoted_as = record.promoted_as(trials)
        for t in trials:
            if t.number in (number, rec.number):
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
                save_trial_note(self.storage, self.study_id, trial_id,
                                record.note(record.read(t), promoted_as.get(t.number, ())))
        return number, params

    # ---- forks and retries (steer.checkpoints) ---------------------------------------------- #
    def continue_trial(self, rec: record.TrialRecord, kind: str, *, step: int, checkpoint: int | None,
                       changes: dict[str, Any] | None = None, attempt: int = 1) -> int:
        """Enqueue a trial that carries on from trial `rec`'s checkpoint (`record.continuation`): a fork
        (`kind` "fork", with `changes`) or a retry of a trial whose worker died. Returns its number."""
        params, attrs = record.continuation(rec, kind=kind, step=step, checkpoint=checkpoint, changes=changes,
                                            attempt=attempt)
        number = enqueue_trial(self.storage, self.study_id, params, *record.split(attrs))
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        save_trial_note(self.storage, self.study_id, trial_id, record.note(record.read(self.storage.get_trial(trial_id))))
        return number

    def retry(self, trial: FrozenTrial) -> int | None:
        """Carry a trial whose worker died on from its last cadence checkpoint (from step 0 if it took none),
        as a new trial, within the spec's `[checkpoints] retries`; returns its number, or None."""
        from steer.checkpoints import Checkpoints

        rec = record.read(trial)
        retries = ((self.study_user_attr(record.SPEC) or {}).get("checkpoints") or CHECKPOINT_DEFAULTS)["retries"]
        attempt = (rec.resume or {}).get("attempt", 0) + 1 if rec.retry_of is not None else 1
        checkpoints = Checkpoints.of(self)
        if attempt > retries:  # it ends here: nothing will start from its checkpoints (a fork's start is kept)
            checkpoints.release(trial.number)
            return None
        others = self.storage.get_all_trials(self.study_id, deepcopy=False)
        if any(t.user_attrs.get(record.RETRY_OF) == trial.number for t in others):
            return None  # carried on already (two processes found it stale)
        found = checkpoints.of_trial(trial.number, "cadence")
        # None of its own yet: where it started (a fork, a retry), if that is still there.
        last = found[-1] if found else checkpoints.get((rec.resume or {}).get("checkpoint") or -1)
        return self.continue_trial(rec, "retry", step=last.step if last else 0,
                                   checkpoint=last.id if last else None, attempt=attempt)

    def delete_study(self) -> dict[str, int]:
        """Delete the study: its checkpoints (files and rows), steer's rows of it, then Optuna's study.
        Returns how many of each went. Other studies in the database are not touched."""
        from steer.checkpoints import Checkpoints

        removed = {"checkpoints": Checkpoints.of(self).delete_study()}

        def wipe(s: Session) -> None:
            for table in T.STUDY_TABLES:
                removed[table.name] = s.execute(table.delete().where(table.c.study_id == self.study_id)).rowcount

        self.db.run(wipe)
        optuna.delete_study(study_name=self.study_name, storage=self.storage)
        for key in [k for k, c in _OPENED.items() if c is self]:
            del _OPENED[key]
        return removed

    def _forget(self, s: Session, table: Any, param: str) -> None:
        """Delete this study's row for `param` from a table keyed by (study, param): a pin, a hint, an edit."""
        s.execute(table.delete().where(and_(table.c.study_id == self.study_id, table.c.param == param)))

    # ---- pins ----------------------------------------------------------- #
    def _write_pin(self, s: Session, param: str, value: Any, by: str, source: int | None) -> dict[str, Any]:
        old = self._pins(s).get(param)
        T.upsert(s, T.pins, {"study_id": self.study_id, "param": param, "value": json.dumps(value), "pinned_by": by,
                             "pinned_at": time.time(), "source_trial": source})
        return {"action": "pin", "param": param, "old": old.value if old else None, "new": value}

    def pin_from_trial(self, param: str, value: Any, by: str, trial: int) -> dict[str, Any]:
        """Worker side: pin a running trial's current value."""
        return self.db.run(lambda s: self._write_pin(s, param, value, by, trial))

    def _pins(self, s: Session) -> dict[str, Pin]:
        rows = s.execute(select(T.pins).where(T.pins.c.study_id == self.study_id)).all()
        return {r.param: Pin(r.param, json.loads(r.value), r.pinned_by, r.pinned_at, r.source_trial) for r in rows}

    def pins(self) -> dict[str, Pin]:
        return self.db.run(self._pins)

    def pin_values(self) -> dict[str, Any]:
        return {name: pin.value for name, pin in self.pins().items()}

    # ---- hints and the search space (steer.search_space) ---------------------- #
    def _hints(self, s: Session) -> dict[str, Hint]:
        rows = s.execute(select(T.hints).where(T.hints.c.study_id == self.study_id)).all()
        return {r.param: Hint(r.param, json.loads(r.value), r.strength, r.trials, r.first_trial, r.hinted_by,
                              r.hinted_at) for r in rows}

    def hints(self) -> dict[str, Hint]:
        return self.db.run(self._hints)

    def hint_rows(self) -> dict[str, dict[str, Any]]:
        """The hints as the sampler reads them when a trial starts."""
        return {name: h.as_sampler_sees_it() for name, h in self.hints().items()}

    def _space_edits(self, s: Session) -> dict[str, SpaceEdit]:
        rows = s.execute(select(T.space).where(T.space.c.study_id == self.study_id)).all()
        return {r.param: SpaceEdit(r.param, json.loads(r.dimension), r.edited_by, r.edited_at) for r in rows}

    def space_edits(self) -> dict[str, SpaceEdit]:
        return self.db.run(self._space_edits)

    def space_edit_dimensions(self) -> dict[str, Dimension]:
        """The edited dimensions, as the objective and the sampler apply them."""
        return {name: search_space.from_dict(name, e.dimension) for name, e in self.space_edits().items()}

    def study_user_attr(self, key: str) -> Any:
        return self.storage.get_study_user_attrs(self.study_id).get(key)

    def spec_space(self) -> dict[str, Dimension]:
        """The searched dimensions as the spec gave them: recorded by `steer run`; for a study of a user's own
        objective, each parameter's distribution in the latest trial that drew it."""
        return self._spec_space(self.study_user_attr(record.SPEC))

    def _spec_space(self, steer_spec: dict[str, Any] | None) -> dict[str, Dimension]:
        recorded = (steer_spec or {}).get("space")
        if recorded is not None:
            return {name: search_space.from_dict(name, d) for name, d in recorded.items()}
        dims: dict[str, Dimension] = {}
        for t in self.storage.get_all_trials(self.study_id, deepcopy=False):
            for name, dist in t.distributions.items():
                if not dist.single():
                    dims[name] = search_space.from_distribution(name, dist)
        return dims

    def space(self, spec_space: dict[str, Dimension] | None = None,
              edits: dict[str, SpaceEdit] | None = None) -> dict[str, Dimension]:
        """The dimensions later trials draw from: the spec's, with the space edits in force (either may be
        given, read already)."""
        dims = dict(self.spec_space() if spec_space is None else spec_space)
        for name, edit in (self.space_edits() if edits is None else edits).items():
            if name in dims:
                dims[name] = search_space.from_dict(name, edit.dimension)
        return dims

    # ---- the person's pace ------------------------------------------------- #
    def held(self) -> dict[str, Any] | None:
        """Who held the study and when, while it is held (no worker starts a new trial); else None."""
        return self.storage.get_study_user_attrs(self.study_id).get(record.HELD)

    def watch(self, trial: int, seconds: float = 6.0) -> None:
        """A person has the trial's page open: its worker does not prune it automatically for `seconds`.

        The app renews this while the page stays open; nothing lives in the app process.
        """
        if not trial_number_ok(trial):
            return
        until = time.time() + seconds
        self.db.run(lambda s: T.upsert(s, T.watch, {"study_id": self.study_id, "trial_number": trial,
                                                   "until": until}))

    def watched(self, trial: int) -> bool:
        """Whether the trial's page is open in the app now."""
        if not trial_number_ok(trial):
            return False
        return self.db.run(lambda s: s.execute(select(T.watch.c.until).where(and_(
            T.watch.c.study_id == self.study_id, T.watch.c.trial_number == trial,
            T.watch.c.until > time.time()))).first()) is not None

    # ---- reading commands ----------------------------------------------- #
    def command(self, command_id: int) -> Command:
        row = self.db.run(lambda s: s.execute(select(T.commands).where(T.commands.c.id == command_id)).first())
        if row is None:
            raise UserError(f"no command {command_id}")
        return _command(row)

    def commands(self, trial: int | None = None, states: tuple[str, ...] | None = None,
                 actions: tuple[str, ...] | None = None) -> list[Command]:
        """The study's commands in the order requested: of one trial, in some states, of some actions."""
        q = select(T.commands).where(T.commands.c.study_id == self.study_id)
        if actions:
            q = q.where(T.commands.c.action.in_(actions))
        if trial is not None:
            if not trial_number_ok(trial):
                return []
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
            state=state, applied_step=step, reason=_text(reason), resolved_at=time.time(),
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
        if not trial_number_ok(trial):
            return None
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
        if not trial_number_ok(trial) or not -1 <= after_step <= MAX_TRIAL_NUMBER:  # steps: the same column type
            return []
        q = select(T.metrics).where(and_(T.metrics.c.study_id == self.study_id, T.metrics.c.trial_number == trial,
                                         T.metrics.c.step > after_step)).order_by(T.metrics.c.step, T.metrics.c.id)
        rows = self.db.run(lambda s: s.execute(q).all())
        return [Metric(r.trial_number, r.step, r.wall_time, r.loss, r.psnr, r.lr, r.weight_decay, r.optimizer,
                       r.loss_name) for r in rows]

    def has_target(self) -> bool:
        """Whether the study has a target image (the built-in objective's; a user's loop has none)."""
        return self.db.run(lambda s: s.execute(select(T.targets.c.study_id).where(
            T.targets.c.study_id == self.study_id)).first()) is not None

    def target_png(self) -> bytes | None:
        return self.db.run(lambda s: s.execute(select(T.targets.c.png).where(
            T.targets.c.study_id == self.study_id)).scalar())
