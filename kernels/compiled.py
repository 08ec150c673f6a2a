"""The `compile` backend: the reference forward through `torch.compile`.

`CompiledCoordMLP` is a `CoordMLP` (same parameters, buffers, state_dict); only its
forward differs. The compiled function is created once per process, on first use, so
building the module stays cheap and nothing is compiled at import time.

Dynamo caches graphs per code object and guards on the config (activation, w0, ...):
every distinct config seen in one process costs a recompile, and past dynamo's
recompile limit (8 by default) the forward falls back to eager for new configs.
"""

from __future__ import annotations

import torch

from .reference import CoordMLP, reference_forward

_compiled_forward = None


def compiled_reference_forward():
    """torch.compile(reference_forward), created on first call."""
    global _compiled_forward
    if _compiled_forward is None:
        _compiled_forward = torch.compile(reference_forward)
    return _compiled_forward


class CompiledCoordMLP(CoordMLP):
    """`CoordMLP` whose forward runs `torch.compile` of `reference_forward`."""

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return compiled_reference_forward()(self, coords)
