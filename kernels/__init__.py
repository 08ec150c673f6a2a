"""Coordinate-MLP backends: the PyTorch reference and (on CUDA) fused Triton kernels.

`build_model(config, backend, device)` is the one entry point the trainer uses.
Every backend returns a module whose parameters are exactly `CoordMLP`'s, so
optimizers, optimizer switches, weight decay and resets work unchanged.

    torch    CoordMLP, the plain PyTorch reference
    compile  CompiledCoordMLP: torch.compile of the reference (any device)
    triton   FusedCoordMLP: fused Triton kernels (CUDA; CPU only under TRITON_INTERPRET=1)
    auto     triton on CUDA when triton is installed and the shape is supported, else torch

Importing this package imports neither torch nor triton: the option values (BACKENDS,
PRECISIONS, DEFAULT_PRECISION, ...) and BackendError are plain Python, so `steer.spec`
and every `steer --help` stay fast; the other names load torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .choices import ACTIVATIONS, BACKENDS, DEFAULT_PRECISION, ENCODINGS, OUTPUTS, PRECISIONS
from .errors import BackendError

if TYPE_CHECKING:
    from .backends import build_model, precision_fault, resolve_backend
    from .compiled import CompiledCoordMLP
    from .fused import FusedCoordMLP, interpreter_requested, triton_importable, unsupported_reason
    from .reference import CoordMLP, MLPConfig, reference_forward

# The names that need torch, and the module each comes from (imported on first use, PEP 562).
_NEEDS_TORCH = {
    "build_model": "backends", "precision_fault": "backends", "resolve_backend": "backends",
    "CompiledCoordMLP": "compiled",
    "FusedCoordMLP": "fused", "interpreter_requested": "fused", "triton_importable": "fused",
    "unsupported_reason": "fused",
    "CoordMLP": "reference", "MLPConfig": "reference", "reference_forward": "reference",
}


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_TORCH:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NEEDS_TORCH[name]}", __name__), name)
    globals()[name] = value  # once: later lookups don't come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NEEDS_TORCH})


__all__ = [
    "ACTIVATIONS", "BACKENDS", "DEFAULT_PRECISION", "ENCODINGS", "OUTPUTS", "PRECISIONS", "BackendError",
    "CompiledCoordMLP", "CoordMLP", "FusedCoordMLP", "MLPConfig", "build_model", "precision_fault",
    "reference_forward", "resolve_backend",
]
