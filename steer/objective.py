"""The Optuna objective built from a spec, and the study built around it.

    study = steer.create_study(spec)                 # or any optuna study, direction maximize
    study.optimize(steer.objective(spec), n_trials=12)

Each trial suggests its params, trains a `Trainer`, reports full-image PSNR
every `report_every` steps (Optuna intermediate values, pruning) and returns the
final PSNR. What it records lives under `steer.*` user attributes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import torch

from steer import record, search_space
from steer.artifacts import (
    PREDICTION_ARTIFACT, TARGET_ARTIFACT, artifact_dir, artifact_store, has_study_artifact, upload_png,
)
from steer.control import Control, NotSteerable
from steer.errors import UserError
from steer.image import load_target, to_png
from steer.kernels import BackendError, precision_fault, resolve_backend
from steer.sampler import SteerSampler
from steer.spec import DEFAULT_PARAMS, PARAMS, Dimension, Spec
from steer.steering import Steering, steering
from steer.storage import storage_url
from steer.trainer import Diverged, Trainer, mlp_config, resolve_device


def suggest_params(trial: optuna.Trial, spec: Spec, pins: dict[str, Any] | None = None,
                   space: dict[str, Dimension] | None = None) -> dict[str, Any]:
    """Suggest the spec's searched params; fixed values and defaults fill the rest.

    `space` holds the dimensions a person edited (`steer ctl space`): a float or int is
    drawn from the edited range (Optuna records each trial's own); a categorical keeps the
    spec's choices as its distribution and the sampler draws among the edited ones
    (`SteerSampler`, steer.search_space).

    Conditional params (w0 for sine, fourier_* for the Fourier encoding) are
    only suggested when their condition holds, so TPE sees a tree-structured
    space. A promoted trial's `steer.overrides` and the study's `pins` win over
    everything (a study made by `create_study` also samples pinned values, so
    they are what Optuna records as the trial's params).
    """
    overrides = record.attrs(trial).get(record.OVERRIDES, {})
    params = {**DEFAULT_PARAMS, **spec.fixed, **overrides}
    for dim in sorted(spec.space, key=lambda d: PARAMS[d.name].when is not None):
        when = PARAMS[dim.name].when
        if when is not None and params[when[0]] != when[1]:
            continue
        edited = (space or {}).get(dim.name)
        params[dim.name] = _suggest(trial, edited if edited is not None and edited.kind != "categorical" else dim)
    params.update(overrides)
    params.update(applicable_pins(trial, pins or {}))
    return params


def applicable_pins(trial: optuna.Trial, pins: dict[str, Any]) -> dict[str, Any]:
    """The pins a trial honours: all of them, except over a promoted trial's own values."""
    overrides = record.attrs(trial).get(record.OVERRIDES, {})
    return {k: v for k, v in pins.items() if k not in overrides}


def _suggest(trial: optuna.Trial, dim: Dimension) -> Any:
    if dim.kind == "categorical":
        return trial.suggest_categorical(dim.name, list(dim.choices))
    if dim.kind == "int":
        return trial.suggest_int(dim.name, dim.low, dim.high, step=dim.step or 1, log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step, log=dim.log)


def trial_seed(spec: Spec, trial: optuna.Trial) -> int:
    """Each trial's own seed: recorded, so a replay starts from the same weights."""
    return spec.seed * 100_003 + trial.number


def make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    cfg = spec.sampler
    if cfg["type"] == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if cfg["type"] == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=spec.seed)
    kwargs = {k: cfg[k] for k in ("n_startup_trials", "multivariate") if k in cfg}
    return optuna.samplers.TPESampler(seed=spec.seed, **kwargs)


def grid_space(spec: Spec) -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {}
    for d in spec.space:
        if d.kind == "categorical":
            space[d.name] = list(d.choices)
        elif d.kind == "int":
            space[d.name] = list(range(d.low, d.high + 1, d.step or 1))
        else:
            space[d.name] = [float(v) for v in np.arange(d.low, d.high + d.step / 2, d.step)]
    return space


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    cfg = spec.pruner
    if cfg["type"] == "none":
        return optuna.pruners.NopPruner()
    if cfg["type"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.get("min_resource", spec.report_every), max_resource=spec.steps,
            reduction_factor=cfg.get("reduction_factor", 3),
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.get("n_startup_trials", 5), n_warmup_steps=cfg.get("n_warmup_steps", 0),
    )


def create_study(spec: Spec, storage: str | optuna.storages.BaseStorage | None = None,
                 study_name: str | None = None) -> optuna.Study:
    """Create or resume the spec's study (direction maximize: the value is PSNR in dB)."""
    study = optuna.create_study(
        study_name=study_name or spec.name, storage=storage, direction="maximize",
        sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True,
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study {study.study_name!r} exists but does not maximize; steer studies maximize PSNR")
    control = _control(study)
    if control is not None:
        study.sampler = SteerSampler(study.sampler, control.pin_values, steered=spec.sampler["steered"],
                                     hints=control.hint_rows, space=control.space_edit_dimensions, seed=spec.seed)
        control.sweep(study)  # trials of dead workers -> FAIL, their commands -> expired
    study.set_user_attr(record.SPEC, _spec_record(spec))
    target = load_target(spec.image, spec.size, spec.path.parent if spec.path else None)
    if control is not None:
        # Before any trial runs: a trial page opened the moment its trial starts must know the study
        # has images (it decides its layout once), not wait for the trial to store the target.
        control.store_target(to_png(target), target.shape[1], target.shape[0])
    folder = artifact_dir(storage_url(study), study.study_name, spec.artifacts)
    if folder is not None:
        study.set_user_attr(record.ARTIFACTS, str(folder.resolve()))
        if not has_study_artifact(study, TARGET_ARTIFACT):
            upload_png(artifact_store(folder), to_png(target), TARGET_ARTIFACT, study)
    if spec.baseline and not study.trials:
        study.enqueue_trial(baseline_params(spec), user_attrs={record.BASELINE: True})
    return study


def _control(study: optuna.Study) -> Control | None:
    """The study's control plane, or None when it cannot be steered (in-memory)."""
    try:
        return Control.open(study)
    except NotSteerable:
        return None


def baseline_params(spec: Spec) -> dict[str, Any]:
    """The seeds' hand-picked net (2-64-64-3 ReLU, Adam 2e-3, MSE) in the spec's searched dims.

    Dims whose range cannot hold the default are left to the sampler.
    """
    out = {}
    for dim in spec.space:
        when = PARAMS[dim.name].when
        if when is not None and DEFAULT_PARAMS[when[0]] != when[1]:
            continue  # e.g. w0 for a ReLU net: never suggested
        value = DEFAULT_PARAMS[dim.name]
        inside = value in dim.choices if dim.kind == "categorical" else dim.low <= value <= dim.high
        if inside:
            out[dim.name] = value
    return out


def _spec_record(spec: Spec) -> dict[str, Any]:
    """What a replay or the app needs to know about the spec, stored in the study."""
    return {"image": spec.image, "size": spec.size, "steps": spec.steps, "report_every": spec.report_every,
            "backend": spec.backend, "device": spec.device, "precision": spec.precision, "seed": spec.seed,
            "space": {d.name: search_space.to_dict(d) for d in spec.space}, "checkpoints": dict(spec.checkpoints),
            "base": str(spec.path.parent.resolve()) if spec.path else None}


def check_runnable(spec: Spec) -> None:
    """Fail early, before any trial starts, on a device or backend that cannot run here."""
    device = resolve_device(spec.device)
    try:
        resolve_backend(spec.backend, mlp_config({**DEFAULT_PARAMS, **spec.fixed}), device)
    except BackendError as exc:
        raise UserError(f"{spec.path or '<spec>'}: [trial] backend: {exc}") from None
    if spec.backend == "triton" and device.type == "cuda" and (fault := precision_fault(spec.precision)):
        raise UserError(f"{spec.path or '<spec>'}: [trial] precision: {fault}")


class Objective:
    """A picklable callable: `study.optimize(Objective(spec))`. The target is loaded once."""

    def __init__(self, spec: Spec, checkpoint_store: Any = None) -> None:
        """`checkpoint_store`: any Optuna artifact store for the trials' checkpoints (default: the study's
        artifact folder; several machines need one they all reach)."""
        self.spec = spec
        self.checkpoint_store = checkpoint_store
        self.target = load_target(spec.image, spec.size, spec.path.parent if spec.path else None)

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        control = _control(trial.study) if spec.steering_enabled else None
        pins = control.pin_values() if control else {}
        edits = control.space_edit_dimensions() if control else {}
        params = suggest_params(trial, spec, pins, edits)
        if edits:  # the edits in force when it started, beside Optuna's own record of each distribution
            record.write(trial, record.SPACE_EDITS, {n: search_space.describe(d) for n, d in edits.items()
                                                     if n in trial.params})
        # A promoted trial was enqueued with its source's seed (unless promoted with a new one); a spec
        # that `steer export` wrote fixes the seed and the schedule of the trial it exported.
        given = record.attrs(trial)
        seed = given.get(record.SEED, spec.trial_seed if spec.trial_seed is not None else trial_seed(spec, trial))
        if spec.schedule and record.SCHEDULE not in given:
            record.write(trial, record.SCHEDULE, list(spec.schedule))  # read by steering() below
        trainer = Trainer(params, self.target, steps=spec.steps, seed=seed,
                          backend=spec.backend, device=spec.device, precision=spec.precision,
                          cuda_graph=spec.cuda_graph, fused_step=spec.fused_step)
        if trainer.lr_found is not None:  # lr = "find": the range test's LR is what trains (and replays)
            params = {**params, "lr": trainer.params["lr"]}
            record.write(trial, record.LR_FOUND, trainer.lr_found.to_dict())
        record.write(trial, record.PARAMS, params)  # what a replay starts from
        record.write(trial, record.SEED, seed)
        record.write(trial, record.BACKEND, trainer.backend)
        record.write(trial, record.DEVICE, str(trainer.device))
        if os.environ.get("CUDA_VISIBLE_DEVICES"):  # `--workers N --gpus`: which GPU is this worker's cuda:0
            record.write(trial, record.VISIBLE_GPUS, os.environ["CUDA_VISIBLE_DEVICES"])
        record.write(trial, record.TORCH_THREADS, torch.get_num_threads())
        if trainer.graph is not None:  # a replay must run the same arithmetic (fused optimizer, graphs)
            record.write(trial, record.CUDA_GRAPH, True)
        if trainer.fused_step:  # ... and the same kernels (the one-kernel step sums in another order)
            record.write(trial, record.FUSED_STEP, True)
        if applicable_pins(trial, pins):
            record.write(trial, record.PINNED, applicable_pins(trial, pins))
        if control is not None:
            control.sweep(trial.study)  # another worker may have died since this one started
            control.store_target(to_png(self.target), self.target.shape[1], self.target.shape[0])
        cadence = {k: spec.steering[k] for k in ("poll_interval", "publish_interval", "preview_size", "spare_watched")}
        cadence.update(checkpoint_every=spec.checkpoints["every"], checkpoint_keep=spec.checkpoints["keep"],
                       undo_depth=spec.checkpoints["undo_depth"], checkpoint_store=self.checkpoint_store)
        started = time.perf_counter()
        # The same public steering API as any training loop's (steer.steering): no private path.
        with steering(trial, **trainer.steering_kwargs(), enabled=spec.steering_enabled, **cadence) as s:
            try:
                return self._train(trial, trainer, s)  # a fork or a retry trains on from its checkpoint's step
            finally:
                record.write(trial, record.TRAIN_SECONDS, round(time.perf_counter() - started, 3))
                self._save_prediction(trial, trainer)

    def _save_prediction(self, trial: optuna.Trial, trainer: Trainer) -> None:
        """The final prediction as a trial artifact: Optuna accepts it only while the trial runs."""
        folder = trial.study.user_attrs.get(record.ARTIFACTS)
        if folder is not None:
            upload_png(artifact_store(Path(folder)), to_png(trainer.predict()), PREDICTION_ARTIFACT, trial)

    def _train(self, trial: optuna.Trial, trainer: Trainer, s: Steering) -> float:
        spec = self.spec
        exempt = spec.steering["exempt_steered_from_pruning"]
        psnr = float("nan")
        while trainer.step_count < spec.steps:
            loss = trainer.step(s.loss_fn)  # a tensor: read (and waited for) only at reports
            step = trainer.step_count
            report = step % spec.report_every == 0 or step == spec.steps
            if report:
                try:
                    trainer.check(loss)
                except Diverged as exc:
                    record.write(trial, record.DIVERGED, str(exc))
                    raise optuna.TrialPruned(str(exc)) from None
                psnr = trainer.psnr()
                trial.report(psnr, step)
            # Applies pending commands at this step boundary (may raise TrialPruned) and publishes
            # the preview and full-image PSNR at its cadence, and at every report.
            s.step(step, loss=loss, value=psnr if report else trainer.psnr, preview=trainer.predict, publish=report)
            if report and step < spec.steps and s.should_prune(exempt_steered=exempt):
                reason = f"pruned by {type(trial.study.pruner).__name__} at step {step} (PSNR {psnr:.2f} dB)"
                record.write(trial, record.PRUNED_REASON, reason)
                raise optuna.TrialPruned(reason)
        return psnr if psnr == psnr else trainer.psnr()  # a fork taken at the last step trains no step


def objective(spec: Spec, checkpoint_store: Any = None) -> Callable[[optuna.Trial], float]:
    """The Optuna objective for `spec`: `study.optimize(steer.objective(spec), n_trials=...)`."""
    return Objective(spec, checkpoint_store)
