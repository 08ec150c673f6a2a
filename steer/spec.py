"""Study specs: `studies/*.toml` parsed into a checked `Spec`.

A spec names the study, the target image, the per-trial budget, the search
space, the sampler and pruner. Every mistake is reported as one `SpecError`
naming the file and the key (``studies/x.toml: [space] lr.low: ...``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steer.errors import SpecError
from steer.kernels import BACKENDS, DEFAULT_PRECISION, PRECISIONS

# --------------------------------------------------------------------------- #
# The hyperparameters a trial has. Each may be searched, fixed, or left at its
# default (the seeds' hand-picked 2-64-64-3 ReLU MLP, Adam 2e-3, MSE).


@dataclass(frozen=True)
class ParamDef:
    kind: str  # "float" | "int" | "choice"
    default: Any
    low: float | None = None  # inclusive bounds for float/int
    high: float | None = None
    choices: tuple[str, ...] = ()  # allowed names for "choice"
    when: tuple[str, str] | None = None  # only used when params[when[0]] == when[1]

    def allowed(self) -> str:
        if self.kind == "choice":
            return " | ".join(self.choices)
        return f"{self.kind} in [{self.low:g}, {self.high:g}]"

    def check(self, value: Any) -> Any:
        """Return `value` normalised, or raise ValueError saying what is allowed."""
        if self.kind == "choice":
            if not isinstance(value, str) or value.lower() not in self.choices:
                raise ValueError(f"got {value!r}; allowed: {self.allowed()}")
            return value.lower()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"got {value!r}; expected a number, {self.allowed()}")
        if self.kind == "int" and not float(value).is_integer():
            raise ValueError(f"got {value!r}; expected an integer, {self.allowed()}")
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise ValueError(f"got {value!r}; allowed: {self.allowed()}")
        return int(value) if self.kind == "int" else float(value)


OPTIMIZERS = ("adam", "sgd", "adamw")
LOSSES = ("mse", "l1", "huber")

PARAMS: dict[str, ParamDef] = {
    "lr": ParamDef("float", 2e-3, 1e-7, 1.0),
    "optimizer": ParamDef("choice", "adam", choices=OPTIMIZERS),
    "loss": ParamDef("choice", "mse", choices=LOSSES),
    "weight_decay": ParamDef("float", 0.0, 0.0, 1.0),
    "schedule": ParamDef("choice", "constant", choices=("constant", "cosine")),
    "batch_size": ParamDef("int", 0, 0, 1 << 24),  # 0 = full batch
    "width": ParamDef("int", 64, 8, 512),
    "hidden_layers": ParamDef("int", 2, 1, 8),
    "activation": ParamDef("choice", "relu", choices=("relu", "sine")),
    "w0": ParamDef("float", 30.0, 0.1, 200.0, when=("activation", "sine")),
    "encoding": ParamDef("choice", "none", choices=("none", "fourier")),
    "fourier_features": ParamDef("int", 16, 1, 256, when=("encoding", "fourier")),
    "fourier_sigma": ParamDef("float", 10.0, 1e-3, 1000.0, when=("encoding", "fourier")),
}
DEFAULT_PARAMS: dict[str, Any] = {name: p.default for name, p in PARAMS.items()}


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a float/int range or a list of choices."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Spec:
    path: Path | None
    name: str
    image: str  # a built-in name or a path (resolved against the spec's folder)
    size: int
    trials: int | None
    timeout: float | None
    seed: int
    steps: int
    report_every: int
    backend: str
    device: str
    precision: str
    space: tuple[Dimension, ...]
    fixed: dict[str, Any]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    steering: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False  # enqueue the seeds' hand-picked params as the study's first trial
    trial_seed: int | None = None  # every trial trains from this seed (a spec `steer export` wrote)
    schedule: tuple[dict[str, Any], ...] = ()  # changes every trial makes at their steps ([[changes]])
    artifacts: Path | None = None  # artifact folder (default: beside a SQLite database)
    cuda_graph: bool = True  # on CUDA, each training step runs as one captured CUDA graph
    fused_step: bool = True  # the triton backend trains a net it takes with one kernel per step
    # [checkpoints] (steer.checkpoints): seconds between two, how many a running trial keeps, how many
    # times a trial whose worker died is carried on from its last one, how many changes back undo goes
    checkpoints: dict[str, Any] = field(default_factory=lambda: dict(CHECKPOINT_DEFAULTS))

    def with_overrides(self, **changes: Any) -> Spec:
        """A copy with CLI overrides applied (None means keep); values are re-checked."""
        changes = {k: v for k, v in changes.items() if v is not None}
        where = f"{self.path or '<spec>'}"
        for key in ("steps", "trials", "size"):
            if key in changes and changes[key] < 1:
                raise SpecError(f"{where}: --{key} must be >= 1, got {changes[key]}")
        if "timeout" in changes and changes["timeout"] <= 0:
            raise SpecError(f"{where}: --timeout must be > 0 seconds, got {changes['timeout']}")
        spec = replace(self, **changes)
        if spec.report_every > spec.steps:
            spec = replace(spec, report_every=spec.steps)
        return spec

    @property
    def steering_enabled(self) -> bool:
        return self.steering.get("enabled", True)

    @property
    def default_storage(self) -> str:
        """SQLite file beside the spec, named after the study."""
        folder = self.path.parent if self.path else Path.cwd()
        return f"sqlite:///{folder / (self.name + '.db')}"


# --------------------------------------------------------------------------- #
# Parsing. `_Section` walks one TOML table and reports unknown keys.

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DEVICES = ("auto", "cpu", "cuda")

_SAMPLER_KEYS = {"type": str, "n_startup_trials": int, "multivariate": bool, "steered": str}
STEERED_MODES = ("exclude", "sampled")  # what the sampler learns from a steered trial: nothing, or its sampled params
_PRUNER_KEYS = {
    "type": str, "n_startup_trials": int, "n_warmup_steps": int,
    "min_resource": int, "reduction_factor": int,
}
_CHECKPOINT_KEYS = {"every": float, "keep": int, "retries": int, "undo_depth": int}
CHECKPOINT_DEFAULTS = {"every": 10.0, "keep": 3, "retries": 1, "undo_depth": 20}
_STEERING_KEYS = {
    "enabled": bool, "poll_interval": float, "publish_interval": float, "exempt_steered_from_pruning": bool,
    "spare_watched": bool, "preview_size": int, "heartbeat_interval": int, "grace_period": int,
}


class _Section:
    def __init__(self, where: str, name: str, table: Any) -> None:
        self.where, self.name = where, name
        if not isinstance(table, dict):
            self.fail(None, f"must be a table, got {type(table).__name__}")
        self.table = dict(table)

    def fail(self, key: str | None, message: str) -> None:
        at = f"[{self.name}]" + (f" {key}" if key else "")
        raise SpecError(f"{self.where}: {at}: {message}")

    def get(self, key: str, typ: type, default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.table:
            if required or default is ...:
                self.fail(key, "is required")
            return default
        value = self.table.pop(key)
        ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.fail(key, f"must be {typ.__name__}, got {type(value).__name__} {value!r}")
        return value

    def done(self) -> None:
        if self.table:
            unknown = ", ".join(sorted(self.table))
            self.fail(None, f"unknown key(s): {unknown}")


def _typed_table(section: _Section, keys: dict[str, type]) -> dict[str, Any]:
    out = {k: section.get(k, t) for k, t in keys.items() if k in section.table}
    section.done()
    return out


def _positive(section: _Section, key: str, value: int | float | None, minimum: float = 1) -> None:
    if value is not None and value < minimum:
        section.fail(key, f"must be >= {minimum:g}, got {value}")


def _parse_dimension(section: _Section, name: str, raw: Any) -> Dimension | Any:
    """A `[space]` entry: a table defines a searched dimension, a plain value fixes the param."""
    pdef = PARAMS.get(name)
    if pdef is None:
        section.fail(name, f"unknown parameter; known: {', '.join(PARAMS)}")
    if not isinstance(raw, dict):  # fixed value
        if name == "lr" and raw == "find":  # each trial starts at what an LR range test suggests (steer.lr_finder)
            return raw
        try:
            return pdef.check(raw)
        except ValueError as exc:
            section.fail(name, str(exc))
    entry = _Section(section.where, f"space.{name}", raw)
    kind = entry.get("type", str, required=True)
    if kind == "categorical":
        choices = entry.get("choices", list, required=True)
        entry.done()
        if not choices:
            entry.fail("choices", "must not be empty")
        try:
            checked = tuple(pdef.check(c) for c in choices)
        except ValueError as exc:
            entry.fail("choices", str(exc))
        if len(set(checked)) != len(checked):
            entry.fail("choices", f"has duplicates: {choices}")
        return Dimension(name, "categorical", choices=checked)
    if kind not in ("float", "int"):
        entry.fail("type", f"got {kind!r}; allowed: float | int | categorical")
    if pdef.kind == "choice":
        entry.fail("type", f"{name} takes names ({pdef.allowed()}): use type = \"categorical\"")
    if kind == "float" and pdef.kind == "int":
        entry.fail("type", f"{name} is an integer parameter: use type = \"int\"")
    low = entry.get("low", float, required=True)
    high = entry.get("high", float, required=True)
    log = entry.get("log", bool, False)
    step = entry.get("step", float, None)
    entry.done()
    for key, value in (("low", low), ("high", high)):
        try:
            pdef.check(int(value) if kind == "int" and float(value).is_integer() else value)
        except ValueError as exc:
            entry.fail(key, str(exc))
    if low >= high:
        entry.fail("high", f"must be greater than low ({low:g}), got {high:g}")
    if log and low <= 0:
        entry.fail("low", f"must be > 0 when log = true, got {low:g}")
    if step is not None and (step <= 0 or log):
        entry.fail("step", "must be > 0 and cannot be combined with log = true")
    if kind == "int":
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    return Dimension(name, kind, low=low, high=high, log=log, step=step)


def parse_spec(data: dict[str, Any], path: Path | None = None) -> Spec:
    """Check a parsed TOML document and build a `Spec`."""
    where = str(path) if path else "<spec>"
    top = _Section(where, "spec", data)
    if "study" not in top.table:
        raise SpecError(f"{where}: missing [study] table (with at least name = \"...\")")
    study = _Section(where, "study", top.table.pop("study"))
    name = study.get("name", str, required=True)
    if not name.strip() or any(c in name for c in "/\\"):
        study.fail("name", f"must be a non-empty name without slashes, got {name!r}")
    trials = study.get("trials", int, None)
    timeout = study.get("timeout", float, None)
    seed = study.get("seed", int, 0)
    baseline = study.get("baseline", bool, False)
    artifacts = study.get("artifacts", str, None)
    study.done()
    _positive(study, "trials", trials)
    if timeout is not None and timeout <= 0:
        study.fail("timeout", f"must be > 0 seconds, got {timeout}")

    target = _Section(where, "target", top.table.pop("target", {}))
    image = target.get("image", str, "card")
    size = target.get("size", int, 64)
    target.done()
    if not 4 <= size <= 2048:
        target.fail("size", f"must be in [4, 2048] pixels, got {size}")

    trial = _Section(where, "trial", top.table.pop("trial", {}))
    steps = trial.get("steps", int, required=True)
    report_every = trial.get("report_every", int, max(1, steps // 10) if steps > 0 else 1)
    backend = trial.get("backend", str, "auto")
    device = trial.get("device", str, "auto")
    precision = trial.get("precision", str, DEFAULT_PRECISION)
    cuda_graph = trial.get("cuda_graph", bool, True)
    fused_step = trial.get("fused_step", bool, True)
    trial_seed = trial.get("seed", int, None)
    trial.done()
    if trial_seed is not None and not 0 <= trial_seed < 2**63:
        trial.fail("seed", f"must be in [0, 2**63), got {trial_seed}")
    _positive(trial, "steps", steps)
    _positive(trial, "report_every", report_every)
    if report_every > steps:
        trial.fail("report_every", f"must be <= steps ({steps}), got {report_every}")
    if backend not in BACKENDS:
        trial.fail("backend", f"got {backend!r}; allowed: {' | '.join(BACKENDS)}")
    if device not in DEVICES:
        trial.fail("device", f"got {device!r}; allowed: {' | '.join(DEVICES)}")
    if precision not in PRECISIONS:
        trial.fail("precision", f"got {precision!r}; allowed: {' | '.join(PRECISIONS)}")

    space_sec = _Section(where, "space", top.table.pop("space", {}))
    dims: list[Dimension] = []
    fixed: dict[str, Any] = {}
    for pname in list(space_sec.table):
        parsed = _parse_dimension(space_sec, pname, space_sec.table.pop(pname))
        if isinstance(parsed, Dimension):
            dims.append(parsed)
        else:
            fixed[pname] = parsed

    sampler_sec = _Section(where, "sampler", top.table.pop("sampler", {}))
    sampler = _typed_table(sampler_sec, _SAMPLER_KEYS)
    sampler.setdefault("type", "tpe")
    if sampler["type"] not in SAMPLERS:
        sampler_sec.fail("type", f"got {sampler['type']!r}; allowed: {' | '.join(SAMPLERS)}")
    if sampler["type"] == "grid":
        for d in dims:
            if d.kind == "float" and d.step is None:
                space_sec.fail(d.name, "the grid sampler needs a finite grid: give a step, or use "
                               "type = \"categorical\" with choices")
    _positive(sampler_sec, "n_startup_trials", sampler.get("n_startup_trials"), 0)
    sampler.setdefault("steered", "exclude")
    if sampler["steered"] not in STEERED_MODES:
        sampler_sec.fail("steered", f"got {sampler['steered']!r}; allowed: {' | '.join(STEERED_MODES)}")

    pruner_sec = _Section(where, "pruner", top.table.pop("pruner", {}))
    pruner = _typed_table(pruner_sec, _PRUNER_KEYS)
    pruner.setdefault("type", "median")
    if pruner["type"] not in PRUNERS:
        pruner_sec.fail("type", f"got {pruner['type']!r}; allowed: {' | '.join(PRUNERS)}")
    for key in ("n_startup_trials", "n_warmup_steps"):
        _positive(pruner_sec, key, pruner.get(key), 0)
    for key in ("min_resource", "reduction_factor"):
        _positive(pruner_sec, key, pruner.get(key), 1 if key == "min_resource" else 2)

    steering_sec = _Section(where, "steering", top.table.pop("steering", {}))
    steering = {"enabled": True, "poll_interval": 0.2, "publish_interval": 0.5,
                "exempt_steered_from_pruning": True, "spare_watched": True, "preview_size": 128,
                "heartbeat_interval": 5, "grace_period": 20}
    steering.update(_typed_table(steering_sec, _STEERING_KEYS))
    for key in ("poll_interval", "publish_interval"):
        if not 0.01 <= steering[key] <= 60:
            steering_sec.fail(key, f"must be in [0.01, 60] seconds, got {steering[key]}")
    if not 1 <= steering["heartbeat_interval"] < steering["grace_period"]:
        steering_sec.fail("grace_period", f"must be greater than heartbeat_interval "
                          f"({steering['heartbeat_interval']} s, itself >= 1), got {steering['grace_period']}")
    if not 8 <= steering["preview_size"] <= 512:
        steering_sec.fail("preview_size", f"must be in [8, 512] pixels, got {steering['preview_size']}")

    checkpoints_sec = _Section(where, "checkpoints", top.table.pop("checkpoints", {}))
    checkpoints = {**CHECKPOINT_DEFAULTS, **_typed_table(checkpoints_sec, _CHECKPOINT_KEYS)}
    if not 0 <= checkpoints["every"] <= 86400:
        checkpoints_sec.fail("every", f"must be in [0, 86400] seconds (0: none at a cadence), got {checkpoints['every']}")
    _positive(checkpoints_sec, "keep", checkpoints["keep"])
    _positive(checkpoints_sec, "retries", checkpoints["retries"], 0)
    _positive(checkpoints_sec, "undo_depth", checkpoints["undo_depth"])

    schedule = _parse_changes(where, top.table.pop("changes", []), steps)
    top.done()
    return Spec(
        path=path, name=name, image=image, size=size, trials=trials, timeout=timeout, seed=seed,
        steps=steps, report_every=report_every, backend=backend, device=device, precision=precision,
        space=tuple(dims), fixed=fixed, sampler=sampler, pruner=pruner, steering=steering,
        baseline=baseline, trial_seed=trial_seed, schedule=schedule, cuda_graph=cuda_graph, fused_step=fused_step,
        checkpoints=checkpoints,
        artifacts=None if artifacts is None else (path.parent if path else Path.cwd()) / artifacts,
    )


def _parse_changes(where: str, raw: Any, steps: int) -> tuple[dict[str, Any], ...]:
    """`[[changes]]` tables: `step`, `action` (set_lr, set_optimizer, set_loss, set_weight_decay, reset, undo)
    and its `value` (a reset's seed; none for an undo), each checked as a request to a running trial would be."""
    from steer import actions  # it reads PARAMS from here

    if not isinstance(raw, list):
        raise SpecError(f"{where}: changes: must be an array of tables ([[changes]]), got {type(raw).__name__}")
    allowed = [a.name for a in actions.ACTIONS.values() if a.replayed]
    events = []
    for i, entry in enumerate(raw):
        sec = _Section(where, f"changes #{i + 1}", entry)
        step = sec.get("step", int, required=True)
        name = sec.get("action", str, required=True)
        value = sec.table.pop("value", None)
        sec.done()
        if not 0 <= step <= steps:
            sec.fail("step", f"must be in [0, {steps}] (the trial's steps), got {step}")
        if events and step < events[-1]["step"]:
            sec.fail("step", f"must not be before the previous change's step ({events[-1]['step']}), got {step}")
        if name not in allowed:
            sec.fail("action", f"got {name!r}; allowed: {' | '.join(allowed)}")
        if name not in ("reset", "undo") and value is None:
            sec.fail("value", "is required")
        try:
            args = actions.arguments(actions.ACTIONS[name], value=value, trial=0)
        except ValueError as exc:
            sec.fail("value", str(exc))
        events.append({"step": step, "action": name, "args": args})
    return tuple(events)


def load_spec(path: str | Path) -> Spec:
    """Read and check a spec file; every problem is a `SpecError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(data, path)
