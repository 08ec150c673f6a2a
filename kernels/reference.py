"""The coordinate MLP in plain PyTorch: the reference every backend must match.

    coords (N, 2) in [-1, 1]
      -> encoding: none (N, 2) | fourier (N, 2F) = [sin(2pi x B^T), cos(2pi x B^T)]
      -> hidden_layers x [Linear(width) -> ReLU | sin(w0 * .)]
      -> Linear(out_features) -> sigmoid | identity
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .choices import ACTIVATIONS, ENCODINGS, OUTPUTS


@dataclass(frozen=True)
class MLPConfig:
    width: int = 64
    hidden_layers: int = 2  # the seeds' 2-64-64-3 net has 2
    activation: str = "relu"
    w0: float = 30.0  # SIREN frequency, used when activation == "sine"
    encoding: str = "none"
    fourier_features: int = 16  # F: the encoding has 2F features
    fourier_sigma: float = 10.0  # std of the Fourier frequency matrix B
    output: str = "sigmoid"
    in_features: int = 2
    out_features: int = 3

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.width < 1 or self.hidden_layers < 1:
            raise ValueError(f"width and hidden_layers must be >= 1, got {self.width}, {self.hidden_layers}")

    @property
    def encoded_features(self) -> int:
        return 2 * self.fourier_features if self.encoding == "fourier" else self.in_features


class CoordMLP(nn.Module):
    """Pixel coordinates -> RGB. Parameters: `layers[i].weight/bias`; buffer `fourier_b`."""

    def __init__(self, config: MLPConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        dims = [config.encoded_features] + [config.width] * config.hidden_layers + [config.out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("fourier_b", torch.zeros(config.fourier_features, config.in_features))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every weight (and the Fourier matrix) from `generator`.

        ReLU nets use PyTorch's default Linear init; sine nets use SIREN's
        (Sitzmann et al. 2020): U(-1/fan_in, 1/fan_in) for the first layer,
        U(-sqrt(6/fan_in)/w0, sqrt(6/fan_in)/w0) after it.
        """
        cfg = self.config
        device = self.layers[0].weight.device
        self.fourier_b.copy_(
            torch.randn(self.fourier_b.shape, generator=generator).to(device) * cfg.fourier_sigma
        )
        for i, layer in enumerate(self.layers):
            fan_in = layer.in_features
            if cfg.activation == "sine":
                bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / cfg.w0
            else:
                bound = 1.0 / math.sqrt(fan_in)  # what nn.Linear's kaiming_uniform(a=sqrt(5)) gives
            for p in (layer.weight, layer.bias):
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator).to(device))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        if self.config.encoding == "none":
            return coords
        proj = 2.0 * math.pi * coords @ self.fourier_b.t()  # (N, F)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)  # (N, 2F)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return reference_forward(self, coords)


class BF16CoordMLP(CoordMLP):
    """CoordMLP whose matrix products take bf16 inputs: the torch backend's `precision="bf16"`.

    The parameters stay fp32 (the optimizer and the state_dict are unchanged); each layer's
    input and weight are rounded to bf16 for the product (whose result torch also rounds to
    bf16), and bias, activation and output stay fp32, close to the fused kernels' bf16. Not
    autocast: that also runs the activations on bf16 values, and sin(w0 * z) with 8 bits of
    z cost a sine net 3.2 dB on the quick study. Only a CPU with AVX512-BF16 or AMX can be
    faster at it; elsewhere bf16 is emulated and slower than fp32.
    """

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return reference_forward(self, coords, matmul_dtype=torch.bfloat16)


def reference_forward(model: CoordMLP, coords: torch.Tensor, matmul_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The plain PyTorch forward pass, (N, 2) -> (N, out_features).

    `matmul_dtype` rounds the inputs of the matrix products to it (the result comes back in
    it and is taken back to fp32 before the bias). The first layer without an encoding has 2 inputs: it stays fp32, as in the fused
    kernels, which compute it as exact outer products; a sine net's phase starts there.
    """
    cfg = model.config
    h = model.encode(coords)
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        if matmul_dtype is None or (i == 0 and cfg.encoding == "none"):
            z = layer(h)
        else:
            z = torch.nn.functional.linear(h.to(matmul_dtype), layer.weight.to(matmul_dtype)).float() + layer.bias
        if i < last:
            h = torch.sin(cfg.w0 * z) if cfg.activation == "sine" else torch.relu(z)
    return torch.sigmoid(z) if cfg.output == "sigmoid" else z
