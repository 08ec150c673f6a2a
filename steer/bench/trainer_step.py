"""How fast does a trial train? `Trainer.step` at the kernel goal's shape, with and without CUDA graphs.

The kernel benchmark (`python -m steer.kernels.bench`) times a bare step; this times the
trainer's, as a trial runs it: the LR written every step, the batch drawn, the loss kept
as a tensor and read only at reports (here every `report_every` steps). On the CPU the
graph rows say they need CUDA.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from steer.kernels import BackendError
from steer.trainer import Trainer

# The kernel goal's shape: width 64, 3 hidden layers, 256 x 256 = 2^16 pixels, Adam; the trainer's own cosine LR.
PARAMS = {"width": 64, "hidden_layers": 3, "activation": "relu", "encoding": "none", "optimizer": "adam",
          "lr": 1e-3, "schedule": "cosine", "loss": "mse"}
RUNS = (("torch", "fp32"), ("triton", "fp32"), ("triton", "tf32x3"), ("triton", "tf32"), ("triton", "bf16"))


def trainer_step(size: int = 256, steps: int = 300, warmup: int = 20, report_every: int = 100,
                 device: str = "auto") -> list[dict[str, Any]]:
    """One row per (backend, precision) x CUDA graph off/on: ms per step after `warmup` steps."""
    target = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(0))
    rows = []
    # The triton backend with the split kernels and with the one-kernel step (`fused_step`), each with and
    # without a graph; torch has no one-kernel step. Where the installed Triton's step cannot launch here,
    # the trainer takes the split kernels (FusedCoordMLP.step_unsupported_reason) and the row says so.
    steps_of = {"triton": (False, True), "torch": (False,)}
    runs = [(b, p, g, f) for b, p in RUNS for f in steps_of[b] for g in (False, True)]
    for backend, precision, cuda_graph, fused_step in runs:
        row = {"backend": backend, "precision": precision, "cuda_graph": cuda_graph, "fused_step": fused_step,
               "points": size * size, "steps": steps, "ms_per_step": None, "mpoints_per_s": None,
               "captures": None, "note": ""}
        rows.append(row)
        try:
            trainer = Trainer(PARAMS, target, steps=warmup + steps, seed=0, backend=backend, device=device,
                              precision=precision, cuda_graph=cuda_graph, fused_step=bool(fused_step))
        except BackendError as exc:
            row["note"] = str(exc)
            continue
        if cuda_graph and trainer.graph is None:
            row["note"] = "CUDA graphs need CUDA"
            continue
        refused = trainer.model.step_unsupported_reason(PARAMS["loss"]) if fused_step else None
        if refused:
            row["note"] = f"the split kernels train it: the one-kernel step: {refused}"
        elif fused_step and trainer.device.type == "cuda":
            row["note"] = _spills_note(trainer.model.plan, trainer.device)
        for _ in range(warmup):
            trainer.check(trainer.step())
        start = time.perf_counter()
        for i in range(1, steps + 1):
            loss = trainer.step()
            if i % report_every == 0 or i == steps:
                trainer.check(loss)  # waits for the GPU, as a trial's report does
        seconds = (time.perf_counter() - start) / steps
        row.update(ms_per_step=seconds * 1e3, mpoints_per_s=size * size / seconds / 1e6,
                   captures=trainer.graph.captures if trainer.graph else None,
                   note=" ".join(filter(None, (row["note"], trainer.graph.failed if trainer.graph else None))))
        print(f"measured: {backend} ({precision}), cuda_graph={cuda_graph}, fused_step={fused_step}: "
              f"{row['ms_per_step']:.3f} ms/step", flush=True)
    return rows


def _spills_note(plan: Any, device: torch.device) -> str:
    """What the one-kernel step spills here (it runs all the same: a row to compare with the split kernels')."""
    from steer.kernels.resources import step_resources

    major, minor = torch.cuda.get_device_capability(device)
    spills = step_resources(plan, PARAMS["loss"], major * 10 + minor)["spills"]
    return f"its step spills {spills} B per thread" if spills else ""


def markdown_table(rows: list[dict[str, Any]]) -> str:
    eager = {(r["backend"], r["precision"], r.get("fused_step", False)): r["ms_per_step"]
             for r in rows if not r["cuda_graph"]}
    lines = ["| backend | precision | one-kernel step | CUDA graph | ms / step | Mpoints / s | vs the same without "
             "graph | note |", "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        head = f"| {r['backend']} | {r['precision']} | {r.get('fused_step', False)} | {r['cuda_graph']} |"
        if r["ms_per_step"] is None:
            lines.append(f"{head} | | | {r['note']} |")
            continue
        base = eager.get((r["backend"], r["precision"], r.get("fused_step", False)))
        speedup = f"{base / r['ms_per_step']:.2f}x" if r["cuda_graph"] and base else ""
        lines.append(f"{head} {r['ms_per_step']:.3f} | {r['mpoints_per_s']:.1f} | {speedup} | {r['note']} |")
    return "\n".join(lines)
