"""Re-running a recorded trial: same params, seed and interventions at the same steps.

A fork or a retry of a crashed trial is replayed from step 0 too: its schedule is
the whole chain of changes back to step 0 (`record.continuation`), and an undo
goes back to the state the same rule finds (`Steering._apply` keeps it in memory).

On the CPU the replay is bitwise identical to the original run, which is what
makes a steered study auditable: the record is complete. Importing this module
does not import torch (`steer show --trial` uses `find_trial`); `replay_trial` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from steer import record
from steer.errors import UserError
from steer.kernels import DEFAULT_PRECISION


def find_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise UserError(f"no trial {number} in study {study.study_name!r} (it has {len(study.trials)} trials)")


def replay_trial(study: optuna.Study, number: int, device: str | None = None) -> dict[str, Any]:
    """Re-run trial `number`; returns original and replayed final PSNR and per-report PSNRs."""
    import torch

    from steer.image import load_target
    from steer.steering import Steering
    from steer.trainer import Diverged, Trainer

    trial = find_trial(study, number)
    if not trial.state.is_finished():
        raise UserError(f"trial {number} is {trial.state.name}: only finished trials can be replayed")
    attrs = record.attrs(trial)
    spec = study.user_attrs.get(record.SPEC)
    missing = [k for k in (record.PARAMS, record.SEED, record.FINAL_STEP) if k not in attrs]
    if spec is None or missing:
        raise UserError(f"trial {number} was not recorded by steer (missing {', '.join(missing) or record.SPEC})")
    threads = attrs.get(record.TORCH_THREADS)
    if threads and device in (None, "cpu"):
        torch.set_num_threads(threads)  # CPU sums split by thread: the same split gives the same bits
    target = load_target(spec["image"], spec["size"], Path(spec["base"]) if spec.get("base") else None)
    trainer = Trainer(attrs[record.PARAMS], target, steps=spec["steps"], seed=attrs[record.SEED],
                      backend=attrs.get(record.BACKEND, "torch"), device=device or attrs.get(record.DEVICE, "cpu"),
                      precision=spec.get("precision", DEFAULT_PRECISION),
                      cuda_graph=bool(attrs.get(record.CUDA_GRAPH, False)),
                      fused_step=bool(attrs.get(record.FUSED_STEP, False)))
    knobs = Steering(None, **trainer.steering_kwargs())  # the same handlers that applied them the first time
    events = record.read(trial).changes()  # a promoted trial's schedule and the interventions, in order
    final_step = attrs[record.FINAL_STEP]
    report_every = spec["report_every"]
    replayed: dict[int, float] = {}
    error = None
    i = 0
    while trainer.step_count < final_step:
        while i < len(events) and events[i]["step"] == trainer.step_count:
            knobs.step_count = trainer.step_count
            knobs.apply(events[i]["action"], events[i]["args"])
            i += 1
        loss = trainer.step(knobs.loss_fn)
        step = trainer.step_count
        if step % report_every == 0 or step == spec["steps"]:
            try:
                trainer.check(loss)  # where the trial checked it: the same message
            except Diverged as exc:
                error = str(exc)
                break
            replayed[step] = trainer.psnr()
    # A finished trial's value is its last reported PSNR (pruned ones too): compare at that step. A fork
    # or a retry reported from where it started: the replay, run from step 0, is compared from there.
    start = (attrs.get(record.RESUME) or {}).get("step", 0)
    replayed = {step: v for step, v in replayed.items() if step > start}
    last_report = max(trial.intermediate_values, default=None)
    original = trial.value if trial.value is not None else _last(trial.intermediate_values)
    replay_value = replayed.get(last_report) if last_report is not None else trainer.psnr()
    return {
        "trial": number, "state": trial.state.name, "steps": final_step,
        "interventions": len(events), "device": str(trainer.device),
        "original": original, "replay": replay_value,
        "identical": original == replay_value and dict(trial.intermediate_values) == replayed,
        "intermediate": {"original": dict(trial.intermediate_values), "replay": replayed},
        "error": error,
    }


def export_spec(study: optuna.Study, number: int) -> str:
    """A spec (TOML text) whose one trial trains trial `number` again: its starting params fixed, its
    seed, and every change it trained with (its schedule and its steering) at the same steps."""
    import tomli_w

    from steer.image import BUILTIN_IMAGES

    trial = find_trial(study, number)
    spec = study.user_attrs.get(record.SPEC)
    rec = record.read(trial)
    attrs = record.attrs(trial)
    if spec is None or rec.seed is None or record.PARAMS not in attrs:
        raise UserError(f"trial {number} was not trained by a steer spec (no {record.PARAMS} / {record.SEED} "
                        f"recorded): there is no spec to export")
    image = spec["image"]
    if image not in BUILTIN_IMAGES and not Path(image).is_absolute() and spec.get("base"):
        image = str(Path(spec["base"]) / image)  # the new spec may live anywhere
    schedule = []
    for e in rec.changes(attrs.get(record.FINAL_STEP)):
        value = e["args"].get("value", e["args"].get("seed"))
        schedule.append({"step": e["step"], "action": e["action"], **({} if value is None else {"value": value})})
    doc = {
        "study": {"name": f"{study.study_name}-trial-{number}", "trials": 1, "seed": spec["seed"]},
        "target": {"image": image, "size": spec["size"]},
        "trial": {"steps": spec["steps"], "report_every": spec["report_every"], "backend": spec["backend"],
                  "device": spec["device"], "precision": spec.get("precision", DEFAULT_PRECISION), "seed": rec.seed,
                  "cuda_graph": bool(attrs.get(record.CUDA_GRAPH, False)),
                  "fused_step": bool(attrs.get(record.FUSED_STEP, False))},
        "pruner": {"type": "none"},
        "space": dict(attrs[record.PARAMS]),
    }
    value = "-" if rec.value is None else f"{rec.value:.4f}"
    threads = attrs.get(record.TORCH_THREADS)
    head = [f"# Trial {number} of study {study.study_name!r} ({rec.state}, value {value}), exported by `steer export`:",
            "# its params, its seed and every change it trained with, at the same steps. `steer run` on this",
            f"# file trains it again (on the CPU bit for bit, with the same torch threads: it had {threads}).", ""]
    changes = "".join("\n[[changes]]\n" + tomli_w.dumps(e) for e in schedule)  # one table each, not inline
    return "\n".join(head) + tomli_w.dumps(doc) + changes


def _last(values: dict[int, float]) -> float | None:
    return values[max(values)] if values else None
