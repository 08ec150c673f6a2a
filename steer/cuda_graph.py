"""A training step captured as one CUDA graph and replayed, so the host launches once per step.

Why: on an H200 at the goal's shape (width 64, 3 hidden layers, 2^16 points, Adam) every
backend's eager step took 1.2-1.7 ms whatever the GPU did, paced by the host's launches;
the same step captured as one graph took 0.18-0.40 ms (docs/kernels.md).

A graph bakes in its tensors' addresses, its kernels' scalar arguments (weight decay,
betas, momentum), the loss function and the optimizer's class and state tensors. So:

- the LR, which a schedule changes every step and a person most often, reaches the graph
  as a tensor per parameter group, filled before each step. The param groups themselves
  keep plain floats the rest of the time: steering reads and writes those;
- anything else that changes (`set_weight_decay`, `set_optimizer`, `set_loss`, `reset`'s
  fresh optimizer state) changes the step's key: the step then runs eagerly for
  WARMUP_STEPS steps (the optimizer builds its state, as the capture needs) and is
  captured again. A steered trial pays that a few times, not every step.

The optimizer must be graph-safe (`capturable=True` where torch has the flag; the trainer
builds fused, capturable ones on CUDA). The caller's step function must not read tensors
back to the host (no `.item()`), and draws its random batch outside it (into a fixed
tensor), so replaying the graph is the same arithmetic as running the function: the same
kernels with the same arguments.
"""

from __future__ import annotations

import warnings
from typing import Callable, Hashable

import torch

WARMUP_STEPS = 2  # eager steps after a change before capturing: optimizer state must exist first


class StepGraph:
    """Runs `step_fn` (zero grads, forward, loss, backward, optimizer step; returns the loss) on
    `device`: eagerly after each change of `key`, then as a captured graph."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.capture = True  # False: every step runs eagerly, the same way (a test's twin, a benchmark's baseline)
        self.captures = 0  # how many times a step was captured (tests and the benchmark read it)
        self.failed: str | None = None  # why capturing failed: the trial then stays eager
        self._key: Hashable = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._loss: torch.Tensor | None = None
        self._eager_since_change = 0
        self._lrs: list[torch.Tensor] = []
        self._side = torch.cuda.Stream(device)

    def step(self, key: Hashable, optimizer: torch.optim.Optimizer, step_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One training step; returns its loss (a tensor of its own, safe to keep past the next step)."""
        if key != self._key:
            self._key, self._graph, self._loss, self._eager_since_change = key, None, None, 0
        groups = optimizer.param_groups
        floats = [g["lr"] for g in groups]
        while len(self._lrs) < len(groups):
            self._lrs.append(torch.zeros((), dtype=torch.float32, device=self.device))
        for t, lr in zip(self._lrs, floats):
            t.fill_(lr)  # a launch with the value as its argument: no wait for the GPU
        for g, t in zip(groups, self._lrs):
            g["lr"] = t
        try:
            if self._graph is None and self.capture and self._eager_since_change >= WARMUP_STEPS and not self.failed:
                self._capture(step_fn)
            if self._graph is not None:
                self._graph.replay()
                return self._loss.clone()  # the graph overwrites its own loss at the next replay
            self._eager_since_change += 1
            return self._eager(step_fn)
        finally:
            for g, lr in zip(groups, floats):
                g["lr"] = lr

    def _eager(self, step_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        # On a side stream, as torch.cuda.graphs asks of the steps before a capture (lazy
        # initialisation must not happen on the stream being captured).
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side), warnings.catch_warnings():
            # capturable optimizers warn when run uncaptured; these few steps are meant to be.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            loss = step_fn()
        current.wait_stream(self._side)
        return loss

    def _capture(self, step_fn: Callable[[], torch.Tensor]) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                loss = step_fn()
        except Exception as exc:  # noqa: BLE001 - a step that cannot be captured still trains, eagerly
            self.failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"steer: the training step could not be captured as a CUDA graph, so it runs "
                          f"eagerly (slower, same results): {self.failed}", RuntimeWarning, stacklevel=3)
            return
        self._graph, self._loss = graph, loss
        self.captures += 1


__all__ = ["StepGraph", "WARMUP_STEPS"]
