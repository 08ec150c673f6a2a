"""Which input precision can the fused kernels default to? Train the quick study's nets at each and compare.

The issue's rule: the default is the fastest precision that keeps the quick study's PSNR within
0.1 dB of IEEE fp32. This trains the quick study's kinds of net (the baseline ReLU net, a sine
net, a Fourier-feature ReLU net) on its image with the same seed at every precision, on the
`triton` backend, and `torch` (eager) at fp32 and bf16 (autocast) beside them. Needs CUDA
for the triton rows; on the CPU they say so, and the torch rows measure the CPU's bf16.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from steer.image import load_target
from steer.kernels import PRECISIONS, BackendError
from steer.trainer import Trainer

# The quick study's kinds of net (studies/quick.toml: width 64, 2 hidden layers, 1000 steps).
NETS = {
    "baseline relu": {"activation": "relu", "encoding": "none", "optimizer": "adam", "lr": 2e-3},
    "sine w0=30": {"activation": "sine", "w0": 30.0, "encoding": "none", "optimizer": "adam", "lr": 1e-3},
    "fourier relu": {"activation": "relu", "encoding": "fourier", "fourier_features": 32, "fourier_sigma": 8.0,
                     "optimizer": "adam", "lr": 2e-3},
}


def _train(params: dict[str, Any], target: torch.Tensor, steps: int, seed: int, backend: str, precision: str,
           device: str) -> tuple[float, float]:
    """(final PSNR, seconds) of one run."""
    trainer = Trainer({"width": 64, "hidden_layers": 2, **params}, target, steps=steps, seed=seed,
                      backend=backend, device=device, precision=precision)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    psnr = trainer.psnr()  # reads back, so the clock includes the GPU's work
    return psnr, time.perf_counter() - start


def precision(image: str = "card", size: int = 64, steps: int = 1000, seeds: tuple[int, ...] = (0, 1, 2),
              device: str = "auto") -> list[dict[str, Any]]:
    """One row per net x (backend, precision): mean final PSNR over `seeds`, its difference to fp32
    (the fused kernels' where they run, else torch's; same seeds), the largest per-seed difference,
    and seconds per run (the first run of a precision includes compiling its kernels).

    The per-seed difference matters: a precision can move single runs by more than it moves the mean.
    """
    target = load_target(image, size)
    rows = []
    for net, params in NETS.items():
        runs = [("torch", "fp32"), ("torch", "bf16"), *(("triton", p) for p in PRECISIONS)]
        for backend, prec in runs:
            row = {"net": net, "backend": backend, "precision": prec, "image": image, "size": size, "steps": steps,
                   "seeds": list(seeds)}
            try:
                results = [_train(params, target, steps, seed, backend, prec, device) for seed in seeds]
            except BackendError as exc:
                row.update(status="skipped", note=str(exc))
            except RuntimeError as exc:  # a kernel that faults on the GPU: keep the other rows
                row.update(status="error", note=str(exc).splitlines()[0])
            else:
                row.update(psnr_per_seed=[p for p, _ in results], psnr_db=sum(p for p, _ in results) / len(results),
                           seconds=sum(t for _, t in results) / len(results))
            rows.append(row)
            print(f"measured: {net}, {backend} {prec}: "
                  + (f"{row['psnr_db']:.3f} dB, {row['seconds']:.2f} s a run" if "psnr_db" in row else row["note"]),
                  flush=True)
        # The reference: the fused kernels at IEEE fp32 where they ran (a GPU), else torch at fp32.
        measured = [r for r in rows if r["net"] == net and "psnr_db" in r]
        reference = next((r for backend in ("triton", "torch") for r in measured
                          if r["backend"] == backend and r["precision"] == "fp32"), None)
        for r in measured:
            if reference is not None:
                r["reference"] = f"{reference['backend']} fp32"
                r["db_vs_fp32"] = r["psnr_db"] - reference["psnr_db"]
                r["max_seed_db_vs_fp32"] = max(
                    (abs(a - b) for a, b in zip(r["psnr_per_seed"], reference["psnr_per_seed"])))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| net | backend | precision | mean PSNR (dB) | vs fp32 (dB) | largest per-seed gap (dB) "
             "| seconds a run |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "psnr_db" not in r:
            lines.append(f"| {r['net']} | {r['backend']} | {r['precision']} | {r['status']}: "
                         f"{r.get('note', '').split(';')[0]} | | | |")
            continue
        diff, gap = r.get("db_vs_fp32"), r.get("max_seed_db_vs_fp32")
        lines.append(f"| {r['net']} | {r['backend']} | {r['precision']} | {r['psnr_db']:.3f} | "
                     f"{'' if diff is None else f'{diff:+.3f}'} | {'' if gap is None else f'{gap:.3f}'} | "
                     f"{r['seconds']:.2f} |")
    return "\n".join(lines)
