"""Coordinate-MLP backends: the PyTorch reference and (on CUDA) fused Triton kernels.

`build_model(config, backend, device)` is the one entry point the trainer uses.
Every backend returns a module whose parameters are exactly `CoordMLP`'s, so
optimizers, optimizer switches, weight decay and resets work unchanged.

    torch    CoordMLP, the plain PyTorch reference
    compile  CompiledCoordMLP: torch.compile of the reference (any device)
    triton   FusedCoordMLP: fused Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1)
    auto     triton on CUDA when triton is installed and the shape is supported, else torch

Importing this package does not import triton.
"""

from __future__ import annotations

import torch

from .compiled import CompiledCoordMLP
from .errors import BackendError
from .fused import (
    DEFAULT_PRECISION, PRECISIONS, FusedCoordMLP, interpreter_requested, triton_importable, unsupported_reason,
)
from .reference import ACTIVATIONS, ENCODINGS, OUTPUTS, CoordMLP, MLPConfig, reference_forward

BACKENDS = ("auto", "torch", "compile", "triton")


def resolve_backend(backend: str, config: MLPConfig, device: torch.device | str) -> str:
    """Turn `auto` into a concrete backend, and check that the one asked for can run here."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        usable = device.type == "cuda" and triton_importable() and unsupported_reason(config) is None
        return "triton" if usable else "torch"
    if backend == "triton":
        reason = unsupported_reason(config)
        if reason is not None:
            raise BackendError(reason)
        if not triton_importable():
            raise BackendError("backend 'triton' needs the 'triton' package, which is not installed")
        if device.type != "cuda" and not interpreter_requested():
            raise BackendError(
                f"backend 'triton' needs a CUDA device; got device '{device}' "
                "(use backend 'auto' or 'torch' on the CPU; tests set TRITON_INTERPRET=1 to interpret the kernels)"
            )
    return backend


def build_model(
    config: MLPConfig,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    precision: str = DEFAULT_PRECISION,
) -> tuple[CoordMLP, str]:
    """Build the MLP for `backend` on `device`; returns the module and the resolved backend name.

    `precision` (one of PRECISIONS: "fp32", "tf32x3", "tf32", "bf16"; DEFAULT_PRECISION when
    not given) is the input precision of the triton backend's matrix products (fp32
    accumulation always); the other backends ignore it.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    resolved = resolve_backend(backend, config, device)
    if resolved == "triton":
        model: CoordMLP = FusedCoordMLP(config, generator=generator, precision=precision)
    elif resolved == "compile":
        model = CompiledCoordMLP(config, generator=generator)
    else:
        model = CoordMLP(config, generator=generator)
    return model.to(device), resolved


__all__ = [
    "ACTIVATIONS", "BACKENDS", "DEFAULT_PRECISION", "ENCODINGS", "OUTPUTS", "PRECISIONS", "BackendError",
    "CompiledCoordMLP", "CoordMLP", "FusedCoordMLP", "MLPConfig", "build_model", "reference_forward",
    "resolve_backend",
]
