"""Linear + bias + LeakyReLU: the building block of every MLP in fastgan.

Today `linear_leaky_relu` runs the PyTorch reference on every device. The fused Triton GEMM with a
LeakyReLU epilogue slots in here, behind the same signature, and is tested against
`linear_leaky_relu_reference`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def linear_leaky_relu_reference(x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float) -> Tensor:
    """leaky_relu(x @ weight.T + bias): the definition the fused kernel must match."""
    return F.leaky_relu(F.linear(x, weight, bias), negative_slope)


def linear_leaky_relu(x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float) -> Tensor:
    """Fused Linear + bias + LeakyReLU, x: (M, K), weight: (N, K), bias: (N,) -> (M, N)."""
    return linear_leaky_relu_reference(x, weight, bias, negative_slope)


class LinearLeakyReLU(nn.Linear):
    """nn.Linear followed by LeakyReLU, computed by one op (same parameters and init as nn.Linear)."""

    def __init__(self, in_features: int, out_features: int, negative_slope: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        if not (negative_slope > 0 and math.isfinite(negative_slope)):
            # The fused backward recovers the activation mask from the sign of the output.
            raise ValueError(f"negative_slope must be positive, got {negative_slope}")
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return linear_leaky_relu(x, self.weight, self.bias, self.negative_slope)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"
