"""Every place steer touches Optuna's private internals (and optuna-dashboard's), and nothing else.

Optuna's public storage API does not let steer retry a call that met a
dropped connection, take an enqueued trial atomically, record a trial's first
heartbeat at once, or find the database behind a study. Those need Optuna's
private names: the underscored `RDBStorage` methods its trial cache calls,
its `TrialModel` table, the `_CachedStorage` wrapper's `_backend` and a
study's `_storage` / `_study_id`. They are all here, so an Optuna upgrade has
one file to read.

`check_optuna_internals()` lists what the installed Optuna lacks or changed of
these; importing this module fails at once with that list (and the Optuna
version) rather than with an AttributeError deep inside a running trial.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
import time
from datetime import datetime, timedelta
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exists, select, update
from sqlalchemy.exc import SQLAlchemyError

from steer.storage._engine import retry_delays, transient

log = logging.getLogger("steer.storage")

# RDBStorage calls that give the same result when run twice (the underscored ones are what Optuna's trial
# cache calls); RetryingRDBStorage retries each of them on a transient database error.
IDEMPOTENT_CALLS = (
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "get_all_studies", "get_trial_id_from_study_id_trial_number", "get_trial",
    "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id", "get_trial_param",
    "get_trial_user_attrs", "get_trial_system_attrs", "set_study_user_attr", "set_study_system_attr",
    "set_trial_user_attr", "set_trial_system_attr", "_set_trial_param", "set_trial_intermediate_value",
    "record_heartbeat", "_get_stale_trial_ids",
)

# RDBStorage methods steer overrides or calls with these arguments: their parameters, in order.
SIGNATURES = {
    "set_trial_state_values": ("self", "trial_id", "state", "values"),
    "_create_new_trial": ("self", "study_id", "template_trial"),
    "check_trial_is_updatable": ("self", "trial_id", "trial_state"),
    "record_heartbeat": ("self", "trial_id"),
    "get_trial": ("self", "trial_id"),
}

# Attributes steer reads, as set by each class's __init__.
ASSIGNED_IN_INIT = (
    ("optuna.storages.RDBStorage", "engine"), ("optuna.storages.RDBStorage", "url"),
    ("optuna.storages.RDBStorage", "heartbeat_interval"),
    ("optuna.storages._cached_storage._CachedStorage", "_backend"),
    ("optuna.Study", "_storage"), ("optuna.Study", "_study_id"),
    ("optuna.trial.FrozenTrial", "_trial_id"),
    ("optuna.trial.Trial", "_trial_id"), ("optuna.trial.Trial", "_cached_frozen_trial"),
)

TRIAL_COLUMNS = ("trial_id", "study_id", "state", "datetime_start")  # what RetryingRDBStorage reads and writes

# Study methods steer's sampler view overrides (Optuna's samplers read a study's trials through them).
STUDY_SIGNATURES = {"_get_trials": ("self", "deepcopy", "states", "use_cache")}
FIXED_PARAMS = "fixed_params"  # the system attribute `Study.enqueue_trial` writes an enqueued trial's params to


def _resolve(dotted: str) -> Any:
    """`optuna.storages._cached_storage._CachedStorage` and the like, looked up now (tests may patch them)."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _implemented(cls: type, name: str) -> bool:
    """`cls` has a method `name` of its own or inherited, not just an abstract one from a base class."""
    method = getattr(cls, name, None)
    return callable(method) and not getattr(method, "__isabstractmethod__", False)


def check_optuna_internals() -> list[str]:
    """One readable line for each Optuna internal steer relies on that the installed Optuna lacks or changed."""
    problems: list[str] = []
    rdb = optuna.storages.RDBStorage
    for name in (*IDEMPOTENT_CALLS, *SIGNATURES):
        if not _implemented(rdb, name):
            problems.append(f"RDBStorage.{name} is missing")
    for name, expected in SIGNATURES.items():
        if not _implemented(rdb, name):
            continue  # reported above
        method = getattr(rdb, name)
        try:
            found = tuple(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            found = ()
        if found != expected:
            problems.append(f"RDBStorage.{name}({', '.join(expected[1:])}) is now ({', '.join(found[1:])})")
    for owner, attr in ASSIGNED_IN_INIT:
        try:
            cls = _resolve(owner)
        except (ImportError, AttributeError):
            problems.append(f"{owner} is missing")
            continue
        code = getattr(cls.__init__, "__code__", None)
        if code is None or attr not in code.co_names:
            problems.append(f"{owner.rpartition('.')[2]}.__init__ no longer sets `{attr}`")
    for name, expected in STUDY_SIGNATURES.items():
        method = getattr(optuna.Study, name, None)
        found = tuple(inspect.signature(method).parameters) if callable(method) else ()
        if found != expected:
            problems.append(f"Study.{name}({', '.join(expected[1:])}) is now ({', '.join(found[1:]) or 'missing'})")
    try:
        from optuna_dashboard._note import note_ver_key, save_note_with_version  # noqa: F401
    except ImportError as exc:
        problems.append(f"optuna_dashboard._note lacks what save_trial_note uses ({exc})")
    if f'"{FIXED_PARAMS}"' not in inspect.getsource(optuna.Study.enqueue_trial):
        problems.append(f"Study.enqueue_trial no longer keeps the params in the system attribute `{FIXED_PARAMS}`")
    try:
        columns = set(_resolve("optuna.storages._rdb.models.TrialModel").__table__.c.keys())
    except (ImportError, AttributeError) as exc:
        problems.append(f"optuna.storages._rdb.models.TrialModel.__table__ is missing ({exc})")
    else:
        problems += [f"TrialModel.__table__ has no column `{c}`" for c in TRIAL_COLUMNS if c not in columns]
    try:
        beats = set(_resolve("optuna.storages._rdb.models.TrialHeartbeatModel").__table__.c.keys())
    except (ImportError, AttributeError) as exc:
        problems.append(f"optuna.storages._rdb.models.TrialHeartbeatModel.__table__ is missing ({exc})")
    else:
        problems += ["TrialHeartbeatModel.__table__ has no column `trial_id`"] * ("trial_id" not in beats)
    return problems


def _steer_version() -> str:
    try:
        return importlib.metadata.version("steer")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


_PROBLEMS = check_optuna_internals()
if _PROBLEMS:
    raise ImportError(
        f"steer {_steer_version()} relies on Optuna internals that optuna {optuna.__version__} changed: "
        f"{'; '.join(_PROBLEMS)} ({__name__.replace('.', '/')}.py); install an Optuna release steer supports "
        "or update that file"
    )

from optuna.storages._cached_storage import _CachedStorage  # noqa: E402 - only once the check passed
from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel  # noqa: E402


def rdb_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind `study` (Optuna wraps it in a private cache), or None for other storages."""
    storage = study._storage
    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (the key of steer's tables), which Optuna keeps private."""
    return study._study_id


def trial_system_attrs(trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    """A trial's system attributes: public on a `FrozenTrial`, kept in a private cached one by a running
    `optuna.Trial` (Optuna 4 removed its public accessor)."""
    frozen = trial if isinstance(trial, FrozenTrial) else trial._cached_frozen_trial
    return frozen.system_attrs


def set_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """Write a running trial's system attribute (what `Trial.set_system_attr` did before Optuna 4
    removed it): in the storage, and in the trial's cached copy so that its process reads it back."""
    trial.storage.set_trial_system_attr(trial._trial_id, key, value)
    trial._cached_frozen_trial.system_attrs[key] = value


def set_trial_param(trial: optuna.Trial, name: str, value: Any,
                    distribution: optuna.distributions.BaseDistribution) -> None:
    """Record a param whose value is known on a running trial, without asking the sampler (what
    `Trial._suggest` does once it has a value): a change the trial was given or made (`lr@479`).
    In the storage, and in the trial's cached copy so that `trial.params` shows it."""
    trial.storage.set_trial_param(trial._trial_id, name, distribution.to_internal_repr(value), distribution)
    trial._cached_frozen_trial.distributions[name] = distribution
    trial._cached_frozen_trial.params[name] = value


def reported_values(trial: optuna.Trial) -> dict[int, float]:
    """The intermediate values `trial` has reported so far, as its own process knows them (no query).

    Optuna's `Trial` keeps them in a private cached `FrozenTrial`; steer's trial
    side shows the latest one beside the loss when the loop gives no value.
    """
    return trial._cached_frozen_trial.intermediate_values


def enqueue_trial(storage: optuna.storages.BaseStorage, study_id: int, params: dict[str, Any],
                  user_attrs: dict[str, Any], system_attrs: dict[str, Any] | None = None) -> int:
    """`Study.enqueue_trial`, returning the new trial's number (Optuna's returns nothing): a promote
    says which trial it enqueued, and the source trial's record can name it."""
    template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=user_attrs,
                                         system_attrs={**(system_attrs or {}), FIXED_PARAMS: params})
    return storage.get_trial_number_from_id(storage.create_new_trial(study_id, template_trial=template))


def save_trial_note(storage: optuna.storages.BaseStorage, study_id: int, trial_id: int, body: str) -> None:
    """optuna-dashboard's `save_note` for any trial, finished ones too: its public one takes a live
    `optuna.Trial`, and building one for a finished trial runs the sampler's `before_trial`."""
    from optuna_dashboard._note import note_ver_key, save_note_with_version

    version = storage.get_study_system_attrs(study_id).get(note_ver_key(trial_id), 0) + 1
    save_note_with_version(storage, study_id, trial_id, version, body)


class _StudyView(optuna.Study):
    """A study as a sampler sees it: the same study (its attributes shared), minus some trials.

    Optuna's samplers read a study's trials through `Study._get_trials`; this
    view filters what it returns, so the sampler's model never learns from the
    hidden trials while every other reader of the study still sees them.
    """

    _hide: Callable[[FrozenTrial], bool]

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        return [t for t in super()._get_trials(deepcopy, states, use_cache) if not self._hide(t)]


def study_view(study: optuna.Study, hide: Callable[[FrozenTrial], bool]) -> optuna.Study:
    """`study` without the trials `hide` picks, for a sampler to read (see `_StudyView`)."""
    view = object.__new__(_StudyView)
    # A shallow copy made per call: the storage, the trial cache and the sampler are the study's own objects.
    view.__dict__.update(study.__dict__)
    view._hide = hide
    return view


def trial_state(storage: optuna.storages.RDBStorage, trial_id: int) -> TrialState | None:
    """A trial's state in one query (`storage.get_trial` reads params, attributes and values too)."""
    trials = TrialModel.__table__
    try:
        with storage.engine.connect() as conn:
            state = conn.execute(select(trials.c.state).where(trials.c.trial_id == trial_id)).scalar()
    except SQLAlchemyError as exc:
        raise optuna.exceptions.StorageInternalError(f"cannot read trial {trial_id}: {exc}") from exc
    if state is None:
        return None
    return state if isinstance(state, TrialState) else TrialState[state]


def _retried(name: str, method: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """Optuna's storage method `name` (or `method`), retried when it fails on a transient database error."""
    method = method or getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        delays = retry_delays(0.05)
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.StorageInternalError as exc:
                pause = next(delays, None) if transient(exc.__cause__) else None
                if pause is None:
                    raise
                log.warning("retrying %s after a database error: %s", name,
                            str(getattr(exc.__cause__, "orig", exc.__cause__)).strip().splitlines()[0])
                time.sleep(pause)

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose idempotent calls survive a dropped connection or a busy database.

    Optuna turns every database error into `StorageInternalError`; one that is
    transient (the server closed the connection, SQLite stayed locked, a
    deadlock) re-runs the call after a short backoff. Reads, attribute writes,
    intermediate values and heartbeats give the same result when run twice;
    trial creation already retries in Optuna itself. A trial's final state
    is retried too: if the first attempt did commit, the retry finds the
    trial finished in that state and counts as success.

    A new trial records its first heartbeat at once, not when Optuna's
    heartbeat thread starts after sampling: a worker killed in between
    would otherwise leave a RUNNING trial with no heartbeat, which Optuna
    never marks stale.

    Taking an enqueued trial (WAITING -> RUNNING) is one conditional UPDATE.
    Optuna reads the state and then writes it, relying on SELECT ... FOR
    UPDATE, which SQLite ignores; Python's sqlite3 also runs that read outside
    the write's transaction, so two workers could both take the same enqueued
    trial (the baseline, a promoted trial) and train it twice (Optuna issues
    #4002, #4621; seen here with 4 workers on SQLite).
    """

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        try:
            if state == TrialState.RUNNING and values is None:
                done = _retried_take(self, trial_id)
            else:
                done = _retried_state_values(self, trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            if state.is_finished() and self.get_trial(trial_id).state == state:
                return True  # an earlier attempt committed before its connection dropped
            raise
        if done and state == TrialState.RUNNING and self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)  # an enqueued trial, just taken by this worker
        return done

    def _take_waiting_trial(self, trial_id: int) -> bool:
        """WAITING -> RUNNING if it is still WAITING, atomically; False if another worker took it."""
        trials = TrialModel.__table__
        try:
            with self.engine.begin() as conn:
                taken = conn.execute(update(trials).where(
                    trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING,
                ).values(state=TrialState.RUNNING, datetime_start=datetime.now())).rowcount
        except SQLAlchemyError as exc:  # as Optuna reports it, so that the retry below applies
            raise optuna.exceptions.StorageInternalError(f"cannot take trial {trial_id}: {exc}") from exc
        if taken:
            return True
        self.check_trial_is_updatable(trial_id, self.get_trial(trial_id).state)  # finished: Optuna skips it
        return False

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)  # Optuna's cache calls this one
        if self.heartbeat_interval is not None and trial.state == TrialState.RUNNING:
            self.record_heartbeat(trial._trial_id)
        return trial

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, and a RUNNING trial with no heartbeat at all that started more than
        the grace period ago. A worker killed between taking a trial and its first heartbeat (a
        window `_create_new_trial` narrows but cannot close: they are two transactions) leaves one,
        and Optuna never finds it stale: it would stay RUNNING for good."""
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * self.heartbeat_interval)
        trials, beats = TrialModel.__table__, TrialHeartbeatModel.__table__
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(trials.c.trial_id, trials.c.datetime_start).where(
                    trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING,
                    ~exists().where(beats.c.trial_id == trials.c.trial_id))).all()
        except SQLAlchemyError as exc:  # as Optuna reports it, so that the retry below applies
            raise optuna.exceptions.StorageInternalError(f"cannot read the running trials: {exc}") from exc
        now = datetime.now()  # datetime_start is the taking worker's `datetime.now()` (Optuna's): the same clock
        beatless = [r.trial_id for r in rows if r.datetime_start is not None and now - r.datetime_start > grace]
        return stale + [t for t in beatless if t not in stale]


for _name in IDEMPOTENT_CALLS:  # steer's own override of one (`_get_stale_trial_ids`) is retried alike
    setattr(RetryingRDBStorage, _name, _retried(_name, RetryingRDBStorage.__dict__.get(_name)))
_retried_state_values = _retried("set_trial_state_values")
_retried_take = _retried("_take_waiting_trial", RetryingRDBStorage._take_waiting_trial)
