"""Choosing and building a backend: `resolve_backend` and `build_model` (see the package docstring)."""

from __future__ import annotations

import importlib.metadata
import logging

import torch

from .choices import BACKENDS, DEFAULT_PRECISION, PRECISIONS
from .compiled import CompiledCoordMLP
from .errors import BackendError
from .fused import FusedCoordMLP, interpreter_requested, triton_importable, unsupported_reason
from .reference import BF16CoordMLP, CoordMLP, MLPConfig

log = logging.getLogger(__name__)


# Precisions whose compiled kernels faulted on a GPU under a Triton release: the triton backend refuses
# them there (a fault poisons the worker's CUDA context, so every later trial of that worker would fail
# too), and `auto` takes torch. Keyed by (major.minor, precision); the value says what was seen.
KNOWN_FAULTS = {
    ("3.6", "tf32x3"): "an illegal memory access in the forward kernel (width 64, 3 hidden layers, Fourier "
                       "features) in every GPU run so far: NVIDIA H200, torch 2.11, 2026-11-26",
}


def precision_fault(precision: str, triton_version: str | None = None) -> str | None:
    """Why `precision` is refused on a GPU under `triton_version` (default: the installed one), or None."""
    if triton_version is None:
        try:
            triton_version = importlib.metadata.version("triton")
        except importlib.metadata.PackageNotFoundError:
            return None
    release = ".".join(triton_version.split(".")[:2])
    seen = KNOWN_FAULTS.get((release, precision))
    if seen is None:
        return None
    usable = ", ".join(p for p in PRECISIONS if (release, p) not in KNOWN_FAULTS)
    return (f"precision {precision!r} is refused under Triton {triton_version}: its kernels faulted with {seen}; "
            f"use {usable} (tf32 is the default and within 0.1 dB of fp32), or another Triton")


def resolve_backend(backend: str, config: MLPConfig, device: torch.device | str,
                    precision: str = DEFAULT_PRECISION) -> str:
    """Turn `auto` into a concrete backend, and check that the one asked for can run here."""
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        usable = device.type == "cuda" and triton_importable() and unsupported_reason(config) is None
        if usable and (fault := precision_fault(precision)) is not None:
            log.warning("backend 'auto' takes torch: %s", fault)
            usable = False
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
        if device.type == "cuda" and (fault := precision_fault(precision)) is not None:
            raise BackendError(fault)
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
    accumulation always). The torch backend takes "bf16" too (autocast, `BF16CoordMLP`: the
    fast option on CPUs with AVX512-BF16 or AMX) and computes the others in fp32; `compile`
    ignores it.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    resolved = resolve_backend(backend, config, device, precision)
    if resolved == "triton":
        model: CoordMLP = FusedCoordMLP(config, generator=generator, precision=precision)
    elif resolved == "compile":
        model = CompiledCoordMLP(config, generator=generator)
    elif precision == "bf16":
        model = BF16CoordMLP(config, generator=generator)
    else:
        model = CoordMLP(config, generator=generator)
    return model.to(device), resolved
