"""One trial's training run: model, optimizer, loss, LR schedule and step count.

`step()` trains one step. `apply(change)` applies one validated intervention at
a step boundary and returns an `Event` (old -> new). Everything random draws
from generators seeded by the trial seed, so the same params + seed + changes at
the same steps give bitwise the same weights on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from steer.kernels import MLPConfig, build_model
from steer.errors import UserError
from steer.spec import DEFAULT_PARAMS, LOSSES, OPTIMIZERS, PARAMS


class InvalidChange(ValueError):
    """An intervention that cannot be applied; the message is the rejection reason."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Change:
    """One intervention on a running trainer. `value` is a number, a name, or a seed for reset."""

    action: str  # set_lr | set_optimizer | set_loss | set_weight_decay | reset
    value: Any = None


@dataclass(frozen=True)
class Event:
    """What an applied change did: recorded in the study and replayed later."""

    action: str
    value: Any
    old: Any
    new: Any
    step: int  # the number of steps done when it was applied: it affects step + 1 on
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LOSS_FNS = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": lambda a, b: F.huber_loss(a, b, delta=0.1)}
ACTIONS = ("set_lr", "set_optimizer", "set_loss", "set_weight_decay", "reset")


def pixel_coords(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H*W, 2) pixel-centre coordinates in [-1, 1], x then y, row-major like the image."""
    ys = torch.linspace(-1.0, 1.0, height, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [0, 1]."""
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch sees no CUDA device; use device = \"auto\" or \"cpu\"")
    return torch.device(device)


def mlp_config(params: dict[str, Any]) -> MLPConfig:
    return MLPConfig(
        width=params["width"], hidden_layers=params["hidden_layers"],
        activation=params["activation"], w0=params["w0"], encoding=params["encoding"],
        fourier_features=params["fourier_features"], fourier_sigma=params["fourier_sigma"],
    )


class Trainer:
    """Fits a coordinate MLP to `target` (H, W, 3) in [0, 1] with `params` for `steps` steps."""

    def __init__(
        self,
        params: dict[str, Any],
        target: torch.Tensor,
        *,
        steps: int,
        seed: int,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "tf32x3",
    ) -> None:
        self.params = {**DEFAULT_PARAMS, **params}
        self.steps = steps
        self.seed = seed
        self.device = resolve_device(device)
        self.target = target.to(self.device).reshape(-1, 3)  # (N, 3)
        self.height, self.width = target.shape[0], target.shape[1]
        self.coords = pixel_coords(self.height, self.width, self.device)  # (N, 2)
        init_gen = torch.Generator().manual_seed(seed)
        self.batch_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.model, self.backend = build_model(mlp_config(self.params), backend, self.device, init_gen, precision)
        self.step_count = 0
        self.lr_override: float | None = None  # set_lr overrides the schedule from then on
        self.loss_name: str = self.params["loss"]
        self.optimizer_name: str = self.params["optimizer"]
        self.weight_decay: float = self.params["weight_decay"]
        self.optimizer = self._make_optimizer(self.optimizer_name, self.current_lr, self.weight_decay)

    # ---- state --------------------------------------------------------- #
    @property
    def current_lr(self) -> float:
        if self.lr_override is not None:
            return self.lr_override
        base = self.params["lr"]
        if self.params["schedule"] == "cosine":
            return base * 0.5 * (1.0 + math.cos(math.pi * min(self.step_count, self.steps) / self.steps))
        return base

    def effective_params(self) -> dict[str, Any]:
        """The params as they stand now, interventions included.

        An LR set by hand replaces the schedule, so it shows as a constant LR.
        """
        out = {**self.params, "optimizer": self.optimizer_name, "loss": self.loss_name,
               "weight_decay": self.weight_decay}
        if self.lr_override is not None:
            out.update(lr=self.lr_override, schedule="constant")
        return out

    def _make_optimizer(self, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        params = self.model.parameters()
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    # ---- training ------------------------------------------------------ #
    def step(self) -> float:
        """One optimisation step; returns the training loss. Raises `Diverged` on NaN/inf."""
        lr = self.current_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.params["batch_size"]
        if 0 < batch < self.coords.shape[0]:
            idx = torch.randint(self.coords.shape[0], (batch,), generator=self.batch_gen, device=self.device)
            coords, target = self.coords[idx], self.target[idx]
        else:
            coords, target = self.coords, self.target
        self.optimizer.zero_grad(set_to_none=True)
        loss = LOSS_FNS[self.loss_name](self.model(coords), target)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        value = loss.item()
        if not math.isfinite(value):
            raise Diverged(f"training loss became {value} at step {self.step_count}")
        return value

    @torch.no_grad()
    def predict(self) -> torch.Tensor:
        """The prediction over the full image, (H, W, 3) in [0, 1]."""
        return self.model(self.coords).clamp(0, 1).reshape(self.height, self.width, 3)

    @torch.no_grad()
    def evaluate(self) -> tuple[torch.Tensor, float]:
        """The full-image prediction (H, W, 3) and its PSNR, from MSE whatever loss trains."""
        pred = self.predict()
        return pred, psnr_from_mse(F.mse_loss(pred.reshape(-1, 3), self.target).item())

    def psnr(self) -> float:
        return self.evaluate()[1]

    # ---- interventions ------------------------------------------------- #
    def apply(self, change: Change) -> Event:
        """Apply `change` before the next step. Raises `InvalidChange` with the reason."""
        action, value = change.action, change.value
        if action == "set_lr":
            new = _checked("lr", value)
            old, self.lr_override = self.current_lr, new
        elif action == "set_weight_decay":
            new = _checked("weight_decay", value)
            old, self.weight_decay = self.weight_decay, new
            for group in self.optimizer.param_groups:
                group["weight_decay"] = new
        elif action == "set_optimizer":
            new = _checked("optimizer", value)
            old, self.optimizer_name = self.optimizer_name, new
            # Weights stay; optimizer state (moments, momentum) starts afresh.
            self.optimizer = self._make_optimizer(new, self.current_lr, self.weight_decay)
        elif action == "set_loss":
            new = _checked("loss", value)
            old, self.loss_name = self.loss_name, new
        elif action == "reset":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidChange(f"reset needs a non-negative integer seed, got {value!r}")
            old, new = None, value
            self.model.reset_parameters(torch.Generator().manual_seed(value))
            self.optimizer = self._make_optimizer(self.optimizer_name, self.current_lr, self.weight_decay)
        else:
            raise InvalidChange(f"unknown action {action!r}; allowed: {', '.join(ACTIONS)}")
        return Event(action=action, value=new, old=old, new=new, step=self.step_count)


def _checked(name: str, value: Any) -> Any:
    try:
        return PARAMS[name].check(value)
    except ValueError as exc:
        raise InvalidChange(f"{name}: {exc}") from None


__all__ = [
    "ACTIONS", "Change", "Diverged", "Event", "InvalidChange", "LOSSES", "OPTIMIZERS", "Trainer",
    "pixel_coords", "psnr_from_mse",
]
