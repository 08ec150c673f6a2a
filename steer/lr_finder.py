"""The LR range test ("LR finder", Leslie Smith 2015; fastai's `lr_find`) for a running trial.

The test trains for a few steps with a learning rate rising exponentially from
`lr_min` to `lr_max`, records the smoothed loss and suggests the LR where the
loss falls fastest. steer runs it while the trial waits at a step boundary, so
it works on copies: a deep copy of the model and a fresh optimizer loaded with
the trial's optimizer state (Adam's moments carry over, so the copy starts
where the trial is). The trial's model, optimizer and the global RNG state are
left bit-for-bit as they were, and the trial then continues as if nothing had
happened. Only what `loss_fn` itself touches (e.g. the data iterator it draws
batches from) moves on. The copy needs as much memory as the model and its
optimizer state once more.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

RULE = ("steepest descent of the smoothed loss against log LR (fastai's 'steep' rule), "
        "between the first 10% of the curve and the loss's minimum (and never in the last 10%)")
# A trained net's curve falls slowly at every LR (it simply trains on) until the LR is too large; its
# steepest point is noise (on trials training well at 1.6e-3 and 8.6e-3 the steep rule said 7e-6 and
# 4e-5). What such a curve knows is its edge: how far the LR can rise before the loss does.
FLAT_DROP = 0.10  # a curve whose smoothed loss falls less than this (relative) is flat
RULE_EDGE = ("a trained net (its optimizer has state) or a flat curve: a third of the largest LR before the "
             "smoothed loss rose 10% above its minimum")


@dataclass(frozen=True)
class RangeTest:
    lrs: list[float]  # the LR of each recorded test step, rising exponentially
    losses: list[float]  # the smoothed loss after each recorded step (same length as lrs)
    suggestion: float | None  # the suggested LR, None when the curve gives none (`reason` says why)
    rule: str  # one sentence: how the suggestion was chosen
    reason: str  # why the test stopped, and, when suggestion is None, why there is none
    steps: int  # test steps run (a last step with a non-finite loss is run but not recorded)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _copies(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    model_copy = copy.deepcopy(model)
    # deepcopy keeps shared parameters shared, so both parameter lists line up one to one.
    twin = {id(p): q for p, q in zip(model.parameters(), model_copy.parameters())}
    try:
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [twin[id(p)] for p in g["params"]]}
                  for g in optimizer.param_groups]
    except KeyError:
        raise ValueError("optimizer: it holds parameters that are not the model's") from None
    # Only what the constructor takes: `defaults` may hold more (AdamW keeps decoupled_weight_decay).
    takes = inspect.signature(type(optimizer).__init__).parameters
    opt_copy = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in takes})
    # state_dict() hands out the trial's own state tensors; the copy must not step them in place.
    opt_copy.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return model_copy, opt_copy


def _suggest(lrs: list[float], losses: list[float], trained: bool) -> tuple[float | None, str, str]:
    """(suggestion or None, why none, the rule that made it). `trained`: the optimizer had state."""
    n = len(losses)
    lo, hi = n // 10, n - n // 10  # the first points are noise; the last ones are already near divergence
    if hi - lo < 10:
        return None, f"no suggestion: only {hi - lo} usable points on the curve (need 10)", RULE
    low = min(losses)
    if low > 0 and (trained or losses[lo] - low < FLAT_DROP * losses[lo]):
        rising = next((i for i in range(int(np.argmin(losses)), n) if losses[i] > (1 + FLAT_DROP) * low), None)
        if rising is not None:  # (a curve that never rose has no edge: the steep rule below decides)
            return lrs[max(rising - 1, 0)] / 3, "", RULE_EDGE
    # A constant loss still wobbles by rounding in the bias-corrected average; that is no decrease.
    if losses[0] - min(losses) <= 1e-6 * abs(losses[0]):
        return None, "no suggestion: the smoothed loss never fell below its first value", RULE
    # Only the descent counts: past the minimum the loss rises, and a trained net's curve can dip
    # again there (Adam recovering from a too-large step), which is no LR to train at.
    hi = min(hi, int(np.argmin(losses)) + 1)
    if hi - lo < 3:
        return None, "no suggestion: the smoothed loss was lowest at the start of the curve (no LR made it fall)", RULE
    slope = np.gradient(np.asarray(losses[lo:hi]), np.log10(lrs[lo:hi]))
    best = int(np.argmin(slope))
    if slope[best] >= 0:
        return None, "no suggestion: the smoothed loss does not fall in the usable part of the curve", RULE
    return lrs[lo + best], "", RULE


def range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               loss_fn: Callable[[torch.nn.Module], torch.Tensor], *,
               lr_min: float = 1e-7, lr_max: float = 1.0, steps: int = 100,
               smoothing: float = 0.05, diverge_factor: float = 4.0) -> RangeTest:
    """Run the LR range test on copies of `model` and `optimizer`; `loss_fn(model)` computes one training loss."""
    if not 0 < lr_min < lr_max < math.inf:
        raise ValueError(f"lr_min and lr_max: need 0 < lr_min < lr_max < inf (got lr_min={lr_min}, lr_max={lr_max})")
    if not 10 <= steps <= 10000:
        raise ValueError(f"steps: need 10 <= steps <= 10000 (got {steps})")
    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing: need 0 < smoothing <= 1 (got {smoothing})")
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor: need diverge_factor > 1 (got {diverge_factor})")

    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    lrs: list[float] = []
    losses: list[float] = []
    reason = "reached lr_max"
    average, best, run = 0.0, math.inf, 0
    # The trial may sit inside no_grad (e.g. a command handler); the test needs gradients.
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():
        model_copy, opt = _copies(model, optimizer)
        for i in range(steps):
            lr = lr_min * (lr_max / lr_min) ** (i / (steps - 1))
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            loss = loss_fn(model_copy)
            loss.backward()
            opt.step()
            run = i + 1
            raw = float(loss.detach())
            if not math.isfinite(raw):
                reason = f"diverged at lr={lr:.3g}: the loss became {raw}"
                break
            average = smoothing * raw + (1 - smoothing) * average
            smoothed = average / (1 - (1 - smoothing) ** (i + 1))  # undo the pull towards the 0 it starts from
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            # A ratio to the best loss only means "much worse" while the loss is positive.
            if i >= 5 and best > 0 and smoothed > diverge_factor * best:
                reason = f"diverged at lr={lr:.3g}: the smoothed loss exceeded {diverge_factor:g}x its best"
                break

    suggestion, why_none, rule = _suggest(lrs, losses, trained=any(optimizer.state.values()))
    if suggestion is None:
        reason = f"{reason}; {why_none}"
    return RangeTest(lrs=lrs, losses=losses, suggestion=suggestion, rule=rule, reason=reason, steps=run)
