"""Coordinate-MLP backends: the PyTorch reference and (on CUDA) fused Triton kernels.

`build_model(config, backend, device)` is the one entry point the trainer uses.
Every backend returns a module whose parameters are exactly `CoordMLP`'s, so
optimizers, optimizer switches, weight decay and resets work unchanged.
"""

from __future__ import annotations

import torch

from .reference import ACTIVATIONS, ENCODINGS, OUTPUTS, CoordMLP, MLPConfig, reference_forward

BACKENDS = ("auto", "torch", "compile", "triton")


class BackendError(ValueError):
    """A backend was asked for where it cannot run (device, shape, missing package)."""


def resolve_backend(backend: str, config: MLPConfig, device: torch.device | str) -> str:
    """Turn `auto` into a concrete backend, and check that the one asked for can run here."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch"
    if backend in ("triton", "compile"):
        raise BackendError(f"backend {backend!r} is not available yet; use 'torch' or 'auto'")
    return backend


def build_model(
    config: MLPConfig,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[CoordMLP, str]:
    """Build the MLP for `backend` on `device`; returns the module and the resolved backend name."""
    resolved = resolve_backend(backend, config, device)
    model = CoordMLP(config, generator=generator).to(device)
    return model, resolved


__all__ = [
    "ACTIVATIONS", "BACKENDS", "ENCODINGS", "OUTPUTS", "BackendError", "CoordMLP", "MLPConfig",
    "build_model", "reference_forward", "resolve_backend",
]
