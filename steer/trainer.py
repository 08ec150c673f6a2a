"""One trial's training run of the built-in objective: model, optimizer, LR schedule and step count.

`step(loss_fn)` trains one step. What a person changes while it runs goes
through `steer.steering` like any training loop's: `steering_kwargs()` hands
it this trainer's optimizer, model, optimizer and loss names. Everything
random draws from generators seeded by the trial seed, so the same params +
seed + changes at the same steps give bitwise the same weights on the CPU.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from steer.kernels import DEFAULT_PRECISION, MLPConfig, build_model
from steer.errors import UserError
from steer.spec import DEFAULT_PARAMS
from steer.steering import OPTIMIZERS, SGD_MOMENTUM, OptimizerFactory

if TYPE_CHECKING:
    from steer.lr_finder import RangeTest


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


# The losses a trial of the built-in objective can train with (Huber's delta suits [0, 1] colours).
LOSS_FNS = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": lambda a, b: F.huber_loss(a, b, delta=0.1)}
LOSS_NAMES = {fn: name for name, fn in LOSS_FNS.items()}  # the one-kernel step computes the loss by name


FIND_LR = "find"  # lr = "find" in a spec: each trial starts at what an LR range test suggests

# The same optimizers for steps captured as CUDA graphs: fused (one launch for every parameter)
# and, where torch has the flag, capturable (their step counters stay on the GPU).
GRAPH_OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda groups, lr, weight_decay: torch.optim.Adam(
        groups, lr=lr, weight_decay=weight_decay, fused=True, capturable=True),
    "sgd": lambda groups, lr, weight_decay: torch.optim.SGD(
        groups, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay, fused=True),
    "adamw": lambda groups, lr, weight_decay: torch.optim.AdamW(
        groups, lr=lr, weight_decay=weight_decay, fused=True, capturable=True),
}
assert GRAPH_OPTIMIZERS.keys() == OPTIMIZERS.keys()


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
    """"auto", "cpu", "cuda" or "cuda:N" as a torch device; a UserError for one that cannot train here
    (found by the fuzz tests: `steer replay --device tpu` or `cuda:7` ended in a traceback)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"device {device!r}: steer trains on the CPU or a CUDA GPU; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but torch sees no CUDA device; "
                            "use device = \"auto\" or \"cpu\"")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise UserError(f"device {device!r}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return resolved


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
        precision: str = DEFAULT_PRECISION,
        cuda_graph: bool = False,
        fused_step: bool = False,
    ) -> None:
        """`cuda_graph`: on CUDA, run each step as one captured CUDA graph (`steer.cuda_graph`);
        ignored on the CPU. `fused_step`: on the triton backend, a net and loss the one-kernel step
        takes train with it (forward, loss, backward and weight gradients in one launch). Both are
        off by default so that a replay of a trial recorded without them (every trial before they
        existed) runs the same arithmetic; the spec turns them on."""
        self.params = {**DEFAULT_PARAMS, **params}
        find = self.params["lr"] == FIND_LR  # the spec's `lr = "find"`: an LR range test picks it, below
        if find:
            self.params["lr"] = DEFAULT_PARAMS["lr"]  # only while the test runs (on copies)
        self.steps = steps
        self.seed = seed
        self.device = resolve_device(device)
        self.target = target.to(self.device).reshape(-1, 3)  # (N, 3)
        self.height, self.width = target.shape[0], target.shape[1]
        self.coords = pixel_coords(self.height, self.width, self.device)  # (N, 2)
        init_gen = torch.Generator().manual_seed(seed)
        self.batch_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.model, self.backend = build_model(mlp_config(self.params), backend, self.device, init_gen, precision)
        self.fused_step = fused_step and hasattr(self.model, "loss_and_grads")  # the triton backend's model
        self.step_count = 0
        self.lr_override: float | None = None  # an LR set by hand replaces the schedule from then on
        self.graph = None
        if cuda_graph and self.device.type == "cuda":
            from steer.cuda_graph import StepGraph

            self.graph = StepGraph(self.device)
        self.optimizers = GRAPH_OPTIMIZERS if self.graph is not None else OPTIMIZERS
        self.optimizer = self.optimizers[self.params["optimizer"]](
            self.model.parameters(), lr=self.current_lr, weight_decay=self.params["weight_decay"])
        batch = self.params["batch_size"]
        self.batch = batch if 0 < batch < self.coords.shape[0] else 0  # 0: every step trains on every pixel
        # The batch's pixel indices, drawn before each step into this one tensor (a graph reads it there).
        self._idx = torch.empty(self.batch, dtype=torch.long, device=self.device)
        self._loss_fn: Callable | None = None  # the loss the last step trained with (an LR range test uses it)
        self._range_gen: torch.Generator | None = None
        self._lr_written = self.current_lr  # what the schedule last wrote into the optimizer
        self.lr_found: RangeTest | None = None
        if find:
            # Nothing the trial trains with moves: the test trains copies with batches of its own, so
            # a replay that starts at the found LR (the recorded params) trains the same bits.
            self.lr_found = self.find_lr()
            if self.lr_found.suggestion is not None:
                self.params["lr"] = self.lr_found.suggestion
            self._write_lr()

    def steering_kwargs(self) -> dict[str, Any]:
        """What `steer.steering` needs to steer this trainer."""
        return {"optimizer": self.optimizer, "model": self.model, "optimizers": self.optimizers, "losses": LOSS_FNS,
                "loss": self.params["loss"], "optimizer_name": self.params["optimizer"],
                "effective_params": self.effective_params, "lr_range_loss": self.range_test_loss, "state": self}

    # ---- the LR range test (steer.lr_finder) --------------------------------- #
    def range_test_loss(self, model: torch.nn.Module) -> torch.Tensor:
        """One training loss of `model` (a copy of this trainer's) with the loss the trial trains with now.

        Mini-batches come from a generator of the test's own: the trial's batch draws stay
        as they were, so a trial that ran a test trains on exactly as it would have.
        """
        loss_fn = self._loss_fn or LOSS_FNS[self.params["loss"]]
        if not self.batch:
            return loss_fn(model(self.coords), self.target)
        if self._range_gen is None:
            self._range_gen = torch.Generator(device=self.device).manual_seed(self.seed + 2)
        idx = torch.randint(self.coords.shape[0], (self.batch,), generator=self._range_gen, device=self.device)
        return loss_fn(model(self.coords[idx]), self.target[idx])

    def find_lr(self) -> "RangeTest":
        """The range test on copies of the model and optimizer as they are now (they stay unchanged)."""
        from steer.lr_finder import range_test

        return range_test(self.model, self.optimizer, self.range_test_loss)

    # ---- state --------------------------------------------------------- #
    @property
    def current_lr(self) -> float:
        if self.lr_override is not None:
            return self.lr_override
        base = self.params["lr"]
        if self.params["schedule"] == "cosine":
            return base * 0.5 * (1.0 + math.cos(math.pi * min(self.step_count, self.steps) / self.steps))
        return base

    def _write_lr(self) -> None:
        lr = self.current_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._lr_written = lr

    def _notice_lr_set_by_hand(self) -> None:
        """An LR in the optimizer that the schedule did not write was set by hand (`set_lr`)."""
        lr = self.optimizer.param_groups[0]["lr"]
        if lr != self._lr_written:
            self.lr_override = self._lr_written = lr

    def effective_params(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The params as they stand now, with the steering object's current `settings`.

        An LR set by hand replaces the schedule, so it shows as a constant LR.
        """
        self._notice_lr_set_by_hand()
        out = {**self.params, "optimizer": settings["optimizer"], "loss": settings["loss"],
               "weight_decay": settings["weight_decay"]}
        if self.lr_override is not None:
            out.update(lr=self.lr_override, schedule="constant")
        return out

    # ---- checkpoints (steer.checkpoints) ------------------------------------ #
    def state_dict(self) -> dict[str, Any]:
        """Everything the next steps depend on: weights, optimizer state, the batch RNGs, the step, the LR
        set by hand. A trainer made with the same params and seed that loads it trains on bit for bit alike
        (on the CPU). The tensors are the live ones: serialise it (steer.checkpoints.to_bytes) to keep it."""
        return {"step": self.step_count, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_override": self.lr_override, "lr_written": self._lr_written,
                "batch_gen": self.batch_gen.get_state(),
                "range_gen": None if self._range_gen is None else self._range_gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go back (undo) or forward (a fork, a retry) to a `state_dict()`; its optimizer must be of the
        same class as this trainer's (steering switches it first)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.lr_override = state["lr_override"]
        self._lr_written = state["lr_written"]
        self.batch_gen.set_state(state["batch_gen"].cpu())
        if state["range_gen"] is None:
            self._range_gen = None
        else:
            self._range_gen = torch.Generator(device=self.device)
            self._range_gen.set_state(state["range_gen"].cpu())

    # ---- training ------------------------------------------------------ #
    def step(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """One optimisation step with `loss_fn` (default: the params' loss); returns the training loss.

        The loss comes back as a detached 0-dim tensor, not a float: reading it waits for the
        GPU, and a step that waited every time would leave the GPU idle while the host
        launches the next. Callers read it when they report (`check` raises on NaN/inf).
        """
        self._notice_lr_set_by_hand()
        self._write_lr()
        loss_fn = self._loss_fn = loss_fn or LOSS_FNS[self.params["loss"]]
        if self.batch:
            torch.randint(self.coords.shape[0], (self.batch,), generator=self.batch_gen, device=self.device,
                          out=self._idx)

        one_kernel = self._one_kernel_loss(loss_fn)

        def train_step() -> torch.Tensor:
            coords, target = (self.coords[self._idx], self.target[self._idx]) if self.batch else (self.coords, self.target)
            self.optimizer.zero_grad(set_to_none=True)
            if one_kernel is not None:  # forward, loss, backward and the weight gradients: one launch
                loss = self.model.loss_and_grads(coords, target, one_kernel)
            else:
                loss = loss_fn(self.model(coords), target)
                loss.backward()
            self.optimizer.step()
            return loss.detach()

        loss = train_step() if self.graph is None else self.graph.step(self._graph_key(loss_fn), self.optimizer, train_step)
        self.step_count += 1
        self._write_lr()  # the optimizer holds the next step's LR: what a person sees and changes
        return loss

    def _one_kernel_loss(self, loss_fn: Callable) -> str | None:
        """The name of `loss_fn` when this step trains with the one-kernel step, else None (another loss,
        a net it does not take, or the flag off)."""
        name = LOSS_NAMES.get(loss_fn) if self.fused_step else None
        return name if name is not None and self.model.step_unsupported_reason(name) is None else None

    def _graph_key(self, loss_fn: Callable) -> tuple:
        """What a captured step bakes in besides the LR (see steer.cuda_graph): a change of it re-captures.

        `optimizer.state` is a new dict after an optimizer switch, after `reset`, whose moments
        start afresh, and after `undo`, which loads older ones: the old graph would go on updating
        the old ones. The dict the key names is held until the next key: two replacements between
        two steps could otherwise hand the freed first dict's id to the third.
        """
        opt = self.optimizer
        self._keyed_state = opt.state
        hyper = tuple(tuple(sorted((k, v) for k, v in g.items() if k not in ("params", "lr", "initial_lr")))
                      for g in opt.param_groups)
        return type(opt), id(opt.state), hyper, loss_fn

    def check(self, loss: torch.Tensor) -> float:
        """The value of a loss that `step` returned; raises `Diverged` on NaN/inf.

        A loss that is NaN or infinite leaves NaN weights behind, and every later loss stays
        NaN, so checking at each report catches a divergence at most one report late.
        """
        value = loss.item()
        if not math.isfinite(value):
            raise Diverged(f"training loss became {value} by step {self.step_count}")
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


__all__ = ["FIND_LR", "Diverged", "LOSS_FNS", "Trainer", "pixel_coords", "psnr_from_mse"]
