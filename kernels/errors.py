"""The one exception type of `steer.kernels`, in a module of its own so every backend can raise it."""

from __future__ import annotations


class BackendError(ValueError):
    """A backend was asked for where it cannot run (device, shape, missing package)."""
