"""The fused Triton backend: shape rules, launch functions, autograd Function, module.

Layers, bottom up (the kernels themselves are in `fused_kernels.py`):

    unsupported_reason(config)           which MLPs the kernels handle (no triton needed)
    KernelPlan                            what the kernels specialise on, block sizes
    fused_forward / fused_backward        check tensors, allocate, launch
    FusedMLPFunction                      torch.autograd.Function over the two
    FusedCoordMLP(CoordMLP)               same parameters and state_dict as CoordMLP

The parameters travel to the kernels as one flat fp32 vector in `CoordMLP.parameters()`
order ([w_in, b_in, w_1, b_1, ..., w_out, b_out]); the gradient comes back in the same
layout and is split into views, one per parameter. `triton` is imported only when a
kernel is first launched, so importing this module is cheap and works without triton.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from .choices import DEFAULT_PRECISION, PRECISIONS
from .errors import BackendError
from .reference import CoordMLP, MLPConfig

log = logging.getLogger("steer.kernels")

SUPPORTED_WIDTHS = (16, 32, 64, 128)
MAX_HIDDEN_LAYERS = 8
MAX_FOURIER_FEATURES = 64  # 2F <= 128 encoded features
MAX_IN_FEATURES = 4
MAX_OUT_FEATURES = 16
_DOT_PRECISION = {"fp32": "ieee", "tf32x3": "tf32x3", "tf32": "tf32", "bf16": "bf16"}
# Per width: (BLOCK_M points per forward/backward program, BLOCK_K points per weight-gradient
# step, num_warps). Chosen from ptxas register and spill counts for sm_90 at tf32/bf16
# (compiled here without a GPU); not yet timed on one.
_BLOCKS = {16: (128, 128, 4), 32: (128, 128, 8), 64: (64, 64, 8), 128: (64, 64, 8)}
MAX_ROWS = 2**31  # hidden_layers * points must stay below this (int32 row offsets)


def unsupported_reason(config: MLPConfig) -> str | None:
    """Why the fused kernels cannot run `config`, in one line; None when they can."""
    if config.width not in SUPPORTED_WIDTHS:
        return f"width={config.width} is not supported by the triton backend; supported widths: " + \
            ", ".join(map(str, SUPPORTED_WIDTHS))
    if not 1 <= config.hidden_layers <= MAX_HIDDEN_LAYERS:
        return f"hidden_layers={config.hidden_layers} is not supported by the triton backend; " \
            f"supported: 1..{MAX_HIDDEN_LAYERS}"
    if config.encoding == "fourier" and not 1 <= config.fourier_features <= MAX_FOURIER_FEATURES:
        return f"fourier_features={config.fourier_features} (2F={2 * config.fourier_features} encoded " \
            f"features) is not supported by the triton backend; supported: 1..{MAX_FOURIER_FEATURES}"
    if not 1 <= config.in_features <= MAX_IN_FEATURES:
        return f"in_features={config.in_features} is not supported by the triton backend; " \
            f"supported: 1..{MAX_IN_FEATURES}"
    if not 1 <= config.out_features <= MAX_OUT_FEATURES:
        return f"out_features={config.out_features} is not supported by the triton backend; " \
            f"supported: 1..{MAX_OUT_FEATURES}"
    return None


def interpreter_requested() -> bool:
    """True when TRITON_INTERPRET asks Triton to run kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


@lru_cache(maxsize=1)
def triton_importable() -> bool:
    """True when `import triton` would find a package (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _pad(n: int) -> int:
    """The next power of two >= max(n, 16): what tl.arange and tl.dot accept."""
    return max(16, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class KernelPlan:
    """Everything the kernels are specialised on, plus block sizes and warps."""

    in_features: int
    encoding: str
    fourier_features: int
    width: int
    hidden_layers: int
    out_features: int
    activation: str
    output: str
    w0: float
    precision: str  # one of PRECISIONS
    block_m: int  # points per program, forward and backward-data kernels
    block_k: int  # points per loop step of the weight-gradient kernel
    num_warps: int  # warps per program, every kernel
    splits: int | None  # weight-gradient programs per layer; None picks from N and the device

    @classmethod
    def from_config(cls, config: MLPConfig, precision: str = DEFAULT_PRECISION, block_m: int | None = None,
                    splits: int | None = None) -> KernelPlan:
        reason = unsupported_reason(config)
        if reason is not None:
            raise BackendError(reason)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        default_block_m, block_k, num_warps = _BLOCKS[config.width]
        if block_m is None:
            block_m = default_block_m
        if block_m not in (16, 32, 64, 128, 256):
            raise ValueError(f"block_m must be one of 16, 32, 64, 128, 256; got {block_m!r}")
        if splits is not None and (not isinstance(splits, int) or splits < 1):
            raise ValueError(f"splits must be a positive int or None; got {splits!r}")
        return cls(
            in_features=config.in_features, encoding=config.encoding,
            fourier_features=config.fourier_features, width=config.width,
            hidden_layers=config.hidden_layers, out_features=config.out_features,
            activation=config.activation, output=config.output, w0=float(config.w0),
            precision=precision, block_m=block_m, block_k=block_k, num_warps=num_warps, splits=splits,
        )

    # Layout of the flat parameter vector (CoordMLP.parameters() order).
    @property
    def first_in(self) -> int:
        """K0: the first layer's input features."""
        return 2 * self.fourier_features if self.encoding == "fourier" else self.in_features

    @property
    def hidden_offset(self) -> int:
        return self.width * self.first_in + self.width

    @property
    def hidden_block(self) -> int:
        return self.width * self.width + self.width

    @property
    def out_offset(self) -> int:
        return self.hidden_offset + (self.hidden_layers - 1) * self.hidden_block

    @property
    def num_params(self) -> int:
        return self.out_offset + self.out_features * self.width + self.out_features

    # The constexpr arguments of each kernel launch (`dot_precision` is the PRECISION one).
    def backward_data_constexprs(self, dot_precision: str) -> dict:
        return dict(
            WIDTH=self.width, HIDDEN=self.hidden_layers, OUT=self.out_features,
            OUT_PAD=_pad(self.out_features), ACT=self.activation, OUTPUT=self.output,
            PRECISION=dot_precision, BLOCK_M=self.block_m,
        )

    def forward_constexprs(self, dot_precision: str, store_z: bool) -> dict:
        return dict(self.backward_data_constexprs(dot_precision), IN=self.in_features, ENCODING=self.encoding,
                    F=self.fourier_features, F_PAD=_pad(self.fourier_features), STORE_Z=store_z)

    def weight_grad_constexprs(self, dot_precision: str, group: str) -> dict:
        """group: "first" (input: the encoded coords), "hidden" (act(z) below), "out" (output layer)."""
        W = self.width
        common = dict(IN=self.in_features, F=self.fourier_features, ACT=self.activation,
                      PRECISION=dot_precision, BLOCK_K=self.block_k)
        if group == "first" and self.encoding == "fourier":
            # The encoding is recomputed here, (BLOCK_K, F_PAD) sin and cos tiles beside dz: at 128
            # points a step, widths 16 and 32 spilled 1.3 KB per thread at tf32 (ptxas, sm_90a), and at
            # 64 width 32 still spilled 1.1 KB with 32 Fourier features (32 points: 202 registers, none).
            # A chunk is a multiple of block_k, so of the smaller step too.
            return dict(common, BLOCK_K=min(self.block_k, 32 if W == 32 else 64), G=W, G_PAD=W,
                        K=self.fourier_features,
                        K_PAD=_pad(self.fourier_features), SOURCE="fourier")
        if group == "first":
            return dict(common, G=W, G_PAD=W, K=self.in_features, K_PAD=_pad(self.in_features), SOURCE="coords")
        if group == "hidden":
            return dict(common, G=W, G_PAD=W, K=W, K_PAD=W, SOURCE="act")
        return dict(common, G=self.out_features, G_PAD=_pad(self.out_features), K=W, K_PAD=W, SOURCE="act")

    @property
    def dot_precision(self) -> str:
        """The kernels' PRECISION constexpr (bf16 is emulated under the interpreter, see _matmul)."""
        if self.precision == "bf16" and _interpreted(_kernels().mlp_forward_kernel):
            return "bf16-emulated"
        return _DOT_PRECISION[self.precision]


def _kernels():
    """The jit kernels; importing them imports triton (and reads TRITON_INTERPRET)."""
    try:
        from . import fused_kernels
    except ImportError as exc:
        raise BackendError(f"the triton backend needs the 'triton' package, which failed to import: {exc}") from exc
    return fused_kernels


def _interpreted(kernel) -> bool:
    return type(kernel).__name__ == "InterpretedFunction"


def _check_tensors(plan: KernelPlan, coords: torch.Tensor, params: torch.Tensor, **others: torch.Tensor) -> None:
    """Raise a clear error for anything the kernels would mis-read or crash on."""
    if coords.dim() != 2 or coords.shape[1] != plan.in_features:
        raise ValueError(f"coords must have shape (N, {plan.in_features}); got {tuple(coords.shape)}")
    if params.shape != (plan.num_params,):
        raise ValueError(f"flat parameters must have shape ({plan.num_params},); got {tuple(params.shape)}")
    tensors = {"coords": coords, "params": params, **others}
    for name, t in tensors.items():
        if t.dtype != torch.float32:
            raise ValueError(f"the triton backend needs float32 tensors; {name} is {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"the triton backend needs contiguous tensors; {name} has strides {t.stride()}")
        if t.device != coords.device:
            raise ValueError(f"all tensors must be on one device; coords on {coords.device}, {name} on {t.device}")
    if coords.device.type != "cuda" and not _interpreted(_kernels().mlp_forward_kernel):
        raise RuntimeError(
            f"the triton kernels need CUDA tensors; got device '{coords.device}'. To run them in Triton's "
            "CPU interpreter set TRITON_INTERPRET=1 before steer.kernels.fused_kernels is first imported"
        )
    if coords.shape[0] * plan.hidden_layers >= MAX_ROWS:
        raise ValueError(f"too many points for the triton backend: {coords.shape[0]} x {plan.hidden_layers} "
                         f"hidden layers must stay below 2**31")


def fused_forward(coords: torch.Tensor, fourier_b: torch.Tensor, params: torch.Tensor, plan: KernelPlan,
                  store_z: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y (N, OUT) for coords (N, IN); with store_z also the pre-activations z (L, N, W) for backward."""
    _check_tensors(plan, coords, params, fourier_b=fourier_b)
    k = _kernels()
    n = coords.shape[0]
    y = torch.empty((n, plan.out_features), dtype=torch.float32, device=coords.device)
    z = torch.empty((plan.hidden_layers, n, plan.width), dtype=torch.float32, device=coords.device) \
        if store_z else None
    if n == 0:
        return y, z
    grid = (_cdiv(n, plan.block_m),)
    k.mlp_forward_kernel[grid](
        coords, fourier_b,
        params, params[plan.hidden_offset - plan.width:],  # w_in, b_in
        params[plan.hidden_offset:],  # hidden blocks
        params[plan.out_offset:], params[plan.num_params - plan.out_features:],  # w_out, b_out
        y, z if store_z else y,
        n, plan.w0,
        num_warps=plan.num_warps, **plan.forward_constexprs(plan.dot_precision, store_z),
    )
    return y, z


def fused_backward(coords: torch.Tensor, fourier_b: torch.Tensor, params: torch.Tensor, y: torch.Tensor,
                   z: torch.Tensor, dy: torch.Tensor, plan: KernelPlan) -> torch.Tensor:
    """d loss / d params (flat, same layout as `params`) from dy (N, OUT) and the forward's y and z."""
    _check_tensors(plan, coords, params, fourier_b=fourier_b, y=y, z=z, dy=dy)
    n = coords.shape[0]
    if y.shape != (n, plan.out_features) or dy.shape != y.shape:
        raise ValueError(f"y and dy must have shape ({n}, {plan.out_features}); got {tuple(y.shape)}, "
                         f"{tuple(dy.shape)}")
    if z.shape != (plan.hidden_layers, n, plan.width):
        raise ValueError(f"z must have shape ({plan.hidden_layers}, {n}, {plan.width}); got {tuple(z.shape)}")
    if n == 0:
        return torch.zeros_like(params)
    k = _kernels()
    dz = torch.empty_like(z)
    d_out = torch.empty_like(y)
    k.mlp_backward_data_kernel[(_cdiv(n, plan.block_m),)](
        y, dy, params[plan.hidden_offset:], params[plan.out_offset:], z, dz, d_out, n, plan.w0,
        num_warps=plan.num_warps, **plan.backward_data_constexprs(plan.dot_precision),
    )

    # Weight gradients: `splits` programs per layer, each over a contiguous chunk of
    # points, write partial sums into their own slot; one sum over slots finishes.
    splits = plan.splits or _default_splits(n, plan.block_k, coords.device)
    chunk = _cdiv(_cdiv(n, splits), plan.block_k) * plan.block_k
    splits = _cdiv(n, chunk)
    partial = torch.empty((splits, plan.num_params), dtype=torch.float32, device=coords.device)
    flat = partial.view(-1)
    W, L, P = plan.width, plan.hidden_layers, plan.num_params
    common = dict(part_stride=P, n_points=n, chunk=chunk, w0=plan.w0, num_warps=plan.num_warps)
    precision = plan.dot_precision
    # First layer: its input is the encoding of the coords, recomputed here.
    k.mlp_weight_grad_kernel[(splits, 1)](
        dz, z, coords, fourier_b, flat, flat[plan.hidden_offset - W:], dw_layer_stride=0,
        **common, **plan.weight_grad_constexprs(precision, "first"),
    )
    # Hidden layers 2..L: input act(z) of the layer below.
    if L > 1:
        k.mlp_weight_grad_kernel[(splits, L - 1)](
            dz[1:], z, coords, fourier_b, flat[plan.hidden_offset:], flat[plan.hidden_offset + W * W:],
            dw_layer_stride=plan.hidden_block, **common, **plan.weight_grad_constexprs(precision, "hidden"),
        )
    # Output layer: grad d_out, input act(z) of the last hidden layer.
    k.mlp_weight_grad_kernel[(splits, 1)](
        d_out, z[L - 1], coords, fourier_b, flat[plan.out_offset:], flat[P - plan.out_features:],
        dw_layer_stride=0, **common, **plan.weight_grad_constexprs(precision, "out"),
    )
    return partial.sum(dim=0)


# The whole step in one kernel (`mlp_train_step_kernel`), for the nets whose activations and weight
# gradients fit in registers: per width, the most hidden layers (without, with Fourier features) and the
# (BLOCK_M, num_warps) it runs with. From ptxas for sm_90a at tf32 (Triton 3.9, compiled here without a
# GPU): these do not spill; one more layer, 64 Fourier features, or Fourier features at width 32 spilled
# 50 B to 2 KB per thread.
# Other nets train with the split kernels.
STEP_SHAPES = {16: (4, 2, (32, 4)), 32: (2, 0, (32, 8)), 64: (4, 4, (32, 8))}
STEP_MAX_FOURIER_FEATURES = 32
STEP_LOSSES = ("mse", "l1", "huber")
# Bytes per thread (stores and loads) the one-kernel step may spill on a GPU and still train: see
# _compiled_step_reason for what was measured either side of it.
STEP_MAX_SPILL_BYTES = 4096


def step_unsupported_reason(plan: KernelPlan, loss: str) -> str | None:
    """Why the one-kernel training step cannot run `plan` with `loss`; None when it can."""
    if plan.width not in STEP_SHAPES:
        return f"width {plan.width} (it takes widths {', '.join(map(str, STEP_SHAPES))})"
    most, most_fourier, _ = STEP_SHAPES[plan.width]
    fourier = plan.encoding == "fourier"
    if fourier and not most_fourier:
        return f"Fourier features at width {plan.width}"
    if plan.hidden_layers > (most_fourier if fourier else most):
        return (f"{plan.hidden_layers} hidden layers at width {plan.width}" + (" with Fourier features" if fourier
                else "") + f" (at most {most_fourier if fourier else most})")
    if fourier and plan.fourier_features > STEP_MAX_FOURIER_FEATURES:
        return f"{plan.fourier_features} Fourier features (at most {STEP_MAX_FOURIER_FEATURES})"
    if loss not in STEP_LOSSES:
        return f"loss {loss!r} (it takes {', '.join(STEP_LOSSES)})"
    return None


def step_blocks(plan: KernelPlan) -> tuple[int, int]:
    """(BLOCK_M, num_warps) of the one-kernel step. At width 64, 4 hidden layers, or 3 with more than 16
    Fourier features, take 16 points a tile (at 32 they spilled 8-92 B)."""
    block_m, num_warps = STEP_SHAPES[plan.width][2]
    deep = plan.hidden_layers == 4 or (plan.hidden_layers == 3 and plan.encoding == "fourier"
                                       and plan.fourier_features > 16)
    return (16 if plan.width == 64 and deep else block_m), num_warps


def step_constexprs(plan: KernelPlan, loss: str) -> dict:
    fourier = plan.encoding == "fourier"
    return dict(IN=plan.in_features, IN_PAD=_pad(plan.in_features), ENCODING=plan.encoding, F=plan.fourier_features,
                F_PAD=_pad(plan.fourier_features), K0=plan.first_in,
                K0_PAD=_pad(plan.fourier_features) if fourier else _pad(plan.in_features), WIDTH=plan.width,
                HIDDEN=plan.hidden_layers, OUT=plan.out_features, OUT_PAD=_pad(plan.out_features),
                ACT=plan.activation, OUTPUT=plan.output, LOSS=loss, PRECISION=plan.dot_precision,
                BLOCK_M=step_blocks(plan)[0])


def fused_train_step(coords: torch.Tensor, target: torch.Tensor, fourier_b: torch.Tensor, params: torch.Tensor,
                     plan: KernelPlan, loss: str, programs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean `loss` of the net on (coords, target) and its gradient by the flat params, in one launch.

    `programs` (default: about one per SM) each sum a contiguous chunk of points; their slots are
    added in a fixed order. Raises BackendError for a shape the one kernel does not take.
    """
    reason = step_unsupported_reason(plan, loss)
    if reason is not None:
        raise BackendError(f"the one-kernel training step does not take this net: {reason}")
    _check_tensors(plan, coords, params, fourier_b=fourier_b, target=target)
    n = coords.shape[0]
    if target.shape != (n, plan.out_features):
        raise ValueError(f"target must have shape ({n}, {plan.out_features}); got {tuple(target.shape)}")
    if n == 0:
        return torch.zeros((), device=coords.device), torch.zeros_like(params)
    block_m, num_warps = step_blocks(plan)
    programs = programs or _default_splits(n, block_m, coords.device)
    chunk = _cdiv(_cdiv(n, programs), block_m) * block_m
    programs = _cdiv(n, chunk)
    partial = torch.empty((programs, plan.num_params), dtype=torch.float32, device=coords.device)
    losses = torch.empty((programs,), dtype=torch.float32, device=coords.device)
    scale = 1.0 / (n * plan.out_features)
    _kernels().mlp_train_step_kernel[(programs,)](
        coords, target, fourier_b,
        params, params[plan.hidden_offset - plan.width:], params[plan.hidden_offset:],
        params[plan.out_offset:], params[plan.num_params - plan.out_features:],
        partial, losses, n, chunk, plan.num_params, plan.w0, scale,
        num_warps=num_warps, **step_constexprs(plan, loss),
    )
    return losses.sum() * scale, partial.sum(dim=0)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _default_splits(n: int, block_k: int, device: torch.device) -> int:
    """Weight-gradient programs per layer: about one per SM, at least 4 blocks of points each."""
    programs = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    return max(1, min(programs, _cdiv(n, 4 * block_k)))


class FusedMLPFunction(torch.autograd.Function):
    """coords (N, IN) -> y (N, OUT) through the fused kernels; grads for every parameter."""

    @staticmethod
    def forward(ctx, coords: torch.Tensor, fourier_b: torch.Tensor, plan: KernelPlan, needs_grad: bool,
                *params: torch.Tensor) -> torch.Tensor:
        """needs_grad: whether backward may run (the caller knows: grad mode is off in here)."""
        flat = torch.cat([p.reshape(-1) for p in params])
        y, z = fused_forward(coords, fourier_b, flat, plan, store_z=needs_grad)
        ctx.plan = plan
        ctx.shapes = [p.shape for p in params]
        if needs_grad:
            ctx.save_for_backward(coords, fourier_b, flat, y, z)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        coords, fourier_b, flat, y, z = ctx.saved_tensors
        dflat = fused_backward(coords, fourier_b, flat, y, z, dy.contiguous(), ctx.plan)
        sizes = [math.prod(s) for s in ctx.shapes]
        grads = [g.view(s) if need else None
                 for g, s, need in zip(dflat.split(sizes), ctx.shapes, ctx.needs_input_grad[4:])]
        return (None, None, None, None, *grads)


@lru_cache(maxsize=None)
def _compiled_step_reason(plan: KernelPlan, loss: str, capability: tuple[int, int], shared_limit: int) -> str | None:
    """Why the installed Triton's one-kernel step of `plan` should not train on a GPU of `capability` with
    `shared_limit` bytes of shared memory per block (it cannot launch, or spills too much), or None.
    Compiled once per net, loss and GPU in a process (Triton caches the compile on disk too).

    A step that spills a little still runs: on an H200 under Triton 3.6, with CUDA graphs, steps
    spilling 72 and 204 B per thread took half the split kernels' time and one spilling 2 KB the same,
    but one spilling 24 KB (IEEE fp32) took 7 times as long (docs/kernels.md, "The one-kernel step on a
    GPU"): more than STEP_MAX_SPILL_BYTES and the split kernels train it. Nor can a step run whose
    shared memory exceeds the GPU's: Triton 3.6's tf32x3 step at width 64, 4 layers."""
    import triton

    from .resources import step_resources

    arch = capability[0] * 10 + capability[1]
    try:
        used = step_resources(plan, loss, arch)
    except Exception as exc:  # noqa: BLE001 - no ptxas, another compile API: the measured split kernels train it
        reason = f"its compile for sm_{arch} could not be checked under Triton {triton.__version__} ({exc})"
    else:
        if used["shared_bytes"] > shared_limit:
            reason = (f"it needs {used['shared_bytes']} B of shared memory per block under Triton "
                      f"{triton.__version__} for sm_{arch}, and this GPU has {shared_limit} B")
        elif used["spills"] > STEP_MAX_SPILL_BYTES:
            reason = (f"it spills {used['spills']} B per thread under Triton {triton.__version__} for sm_{arch} "
                      f"(more than {STEP_MAX_SPILL_BYTES} B, where it was slower than the split kernels)")
        else:
            if used["spills"]:
                log.info("the one-kernel training step (width %d, %d hidden layers, %s encoding, %s) spills %d B per "
                         "thread under Triton %s for sm_%d", plan.width, plan.hidden_layers, plan.encoding,
                         plan.precision, used["spills"], triton.__version__, arch)
            return None
    log.warning("the one-kernel training step (width %d, %d hidden layers, %s encoding, %s, %s loss): %s; the "
                "split kernels train this net", plan.width, plan.hidden_layers, plan.encoding, plan.precision, loss,
                reason)
    return reason


@lru_cache(maxsize=None)
def _shared_memory_limit(index: int) -> int:
    """Bytes of shared memory one block may use on CUDA device `index`: the limit Triton checks at launch.
    Cached: the trainer asks every step, and the driver query took most of a millisecond on an H200."""
    from triton.runtime import driver

    return driver.active.utils.get_device_properties(index)["max_shared_mem"]


class FusedCoordMLP(CoordMLP):
    """`CoordMLP` whose forward and backward run the fused Triton kernels.

    Same parameters, buffers and state_dict as `CoordMLP`, so optimizers, optimizer
    switches, weight decay, `reset_parameters` and checkpoints work unchanged.
    `precision` picks the tl.dot inputs: "fp32" (IEEE), "tf32x3", "tf32" (DEFAULT_PRECISION) or "bf16".
    `block_m` and `splits` override the block size and the weight-gradient split (tests, tuning).
    """

    def __init__(self, config: MLPConfig, generator: torch.Generator | None = None,
                 precision: str = DEFAULT_PRECISION, block_m: int | None = None, splits: int | None = None) -> None:
        plan = KernelPlan.from_config(config, precision, block_m, splits)  # raises before any allocation
        super().__init__(config, generator=generator)
        self.plan = plan
        self._step_reasons: dict[tuple[str, torch.device], str | None] = {}

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if coords.shape[-1] != cfg.in_features:
            raise ValueError(f"coords must end in a dimension of {cfg.in_features}; got shape {tuple(coords.shape)}")
        if coords.requires_grad:
            raise RuntimeError("the triton backend computes no gradient for coords; pass coords without requires_grad")
        x = coords.reshape(-1, cfg.in_features).contiguous()
        params = [p for layer in self.layers for p in (layer.weight, layer.bias)]
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        y = FusedMLPFunction.apply(x, self.fourier_b, self.plan, needs_grad, *params)
        return y.reshape(*coords.shape[:-1], cfg.out_features)

    def step_unsupported_reason(self, loss: str) -> str | None:
        """Why `loss_and_grads` cannot train this net with `loss` in one kernel; None when it can.

        On a GPU, also when the installed Triton's step needs more shared memory than the GPU has, or
        spills more than STEP_MAX_SPILL_BYTES: the static table holds for the Triton it was measured with
        (Triton 3.6's tf32x3 step at width 64 does not fit an H200; its fp32 step spills 24 KB).
        """
        device = self.layers[0].weight.device
        key = (loss, device)  # the trainer asks every step: once known, a dict lookup
        if key not in self._step_reasons:
            self._step_reasons[key] = self._step_reason(loss, device)
        return self._step_reasons[key]

    def _step_reason(self, loss: str, device: torch.device) -> str | None:
        reason = step_unsupported_reason(self.plan, loss)
        if reason is None and device.type == "cuda" and not interpreter_requested():
            index = device.index if device.index is not None else torch.cuda.current_device()
            try:
                limit = _shared_memory_limit(index)
            except Exception as exc:  # noqa: BLE001 - another Triton driver API: the split kernels train it
                log.warning("the one-kernel training step: this GPU's shared memory could not be read through "
                            "Triton (%s); the split kernels train this net", exc)
                return f"this GPU's shared memory could not be read through Triton ({exc})"
            reason = _compiled_step_reason(self.plan, loss, torch.cuda.get_device_capability(index), limit)
        return reason

    def loss_and_grads(self, coords: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
        """The mean `loss` on (coords, target), detached, with every parameter's `.grad` set to its
        gradient: forward, loss, backward and the weight gradients in one kernel (`fused_train_step`)."""
        params = [p for layer in self.layers for p in (layer.weight, layer.bias)]
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        x = coords.reshape(-1, self.config.in_features).contiguous()
        value, dflat = fused_train_step(x, target.reshape(-1, self.config.out_features).contiguous(),
                                        self.fourier_b, flat, self.plan, loss)
        for p, g in zip(params, dflat.split([p.numel() for p in params])):
            p.grad = g.view(p.shape)
        return value

    def extra_repr(self) -> str:
        return f"precision={self.plan.precision!r}, block_m={self.plan.block_m}"
