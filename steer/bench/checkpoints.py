"""What does checkpointing cost a trial? Bytes per checkpoint, time per checkpoint, and steps/s with and without.

A real trial of a real study (SQLite, the file-system artifact store in a
temporary folder) trains the built-in net through `steer.steering`, as `steer
run` does. Per width: the bytes of one checkpoint, the time one takes (the
snapshot, the file, the row; median of `saves`), the time of one training
step, and the share of steps a cadence of `every` seconds costs, both as
computed (time per checkpoint / cadence) and as measured (steps/s over
`seconds` of training with checkpoints every `measured_every` s against none,
in alternated rounds; the medians).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from steer.steering import steering
from steer.trainer import LOSS_FNS, Trainer

PARAMS = {"hidden_layers": 3, "activation": "relu", "encoding": "none", "optimizer": "adam", "lr": 1e-3,
          "loss": "mse"}


def _steps_per_second(trainer: Trainer, s: Any, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss = trainer.step(LOSS_FNS["mse"])
        s.step(trainer.step_count, loss=loss)
        done += 1
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def checkpoint_cost(widths: tuple[int, ...] = (64, 128), size: int = 64, saves: int = 20, seconds: float = 9.0,
                    every: float = 10.0, measured_every: float = 0.5, rounds: int = 3,
                    device: str = "auto") -> list[dict[str, Any]]:
    """One row per width (see the module's doc)."""
    rows = []
    target = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'bench.db'}"
        study = optuna.create_study(storage=storage, study_name="checkpoint-bench", direction="maximize")
        for width in widths:
            trial = study.ask()
            trainer = Trainer({**PARAMS, "width": width}, target, steps=10**9, seed=0, device=device)
            with steering(trial, **trainer.steering_kwargs(), poll_interval=0.2, publish_interval=0.5,
                          checkpoint_every=0.0) as s:
                _steps_per_second(trainer, s, 1.0)  # warm up
                times, sizes = [], []
                for _ in range(saves):  # what a cadence checkpoint costs: the file, its row, the retention
                    start = time.perf_counter()
                    ck = s.save_checkpoint("cadence")
                    s.checkpoints.retain(trial.number, 3)
                    times.append(time.perf_counter() - start)
                    sizes.append(ck.bytes)
                base, with_ck = [], []
                for _ in range(rounds):  # alternated, so that a change in the machine's load hits both alike
                    s.checkpoint_every = 0.0
                    base.append(_steps_per_second(trainer, s, seconds / rounds))
                    s.checkpoint_every = measured_every
                    s._next_checkpoint = time.monotonic() + measured_every
                    with_ck.append(_steps_per_second(trainer, s, seconds / rounds))
                base, with_ck = statistics.median(base), statistics.median(with_ck)
            study.tell(trial, 0.0)
            save_ms = statistics.median(times) * 1e3
            rows.append({
                "width": width, "hidden_layers": PARAMS["hidden_layers"], "points": size * size,
                "device": str(trainer.device), "params": sum(p.numel() for p in trainer.model.parameters()),
                "bytes": statistics.median(sizes), "save_ms": round(save_ms, 3),
                "step_ms": round(1e3 / base, 4), "every_s": every,
                "overhead_at_every": round(save_ms / (every * 1e3 + save_ms), 5),
                "measured_every_s": measured_every, "steps_per_s": round(base, 1),
                "steps_per_s_checkpointing": round(with_ck, 1),
                "measured_overhead": round(1 - with_ck / base, 4),
            })
    return rows


__all__ = ["checkpoint_cost"]
