"""One factory for G and D of any (architecture, variant) pair."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from fastgan.models.conv import ConvAutoencoder, ConvDiscriminator, ConvGenerator
from fastgan.models.heads import IMAGE_SHAPE, N_CLASSES, DOutput, Head
from fastgan.models.mlp import MLPAutoencoder, MLPDiscriminator, MLPGenerator

if TYPE_CHECKING:
    from fastgan.variants.base import Variant

ARCHS = ("mlp", "conv")


def noise(n: int, dim: int, device: torch.device | str | None = None,
          generator: torch.Generator | None = None) -> Tensor:
    """U[-1, 1] inputs of G, (n, dim): its noise z, infogan's continuous codes. Drawn where
    `generator` lives (a seeded CPU generator gives the same grid on any device), else on `device`
    in one kernel; returned on `device`."""
    where = generator.device if generator is not None else device
    return torch.empty(n, dim, device=where).uniform_(-1, 1, generator=generator).to(device)


def build_models(arch: str, variant: "Variant", z_dim: int) -> tuple[nn.Module, nn.Module]:
    """G maps a latent vector (noise plus the variant's codes) to (B, 1, 28, 28) images in [-1, 1];
    D maps images (and labels, if the variant conditions D) to a `DOutput`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    latent_dim = z_dim + variant.code_dim()
    if arch == "mlp":
        G = MLPGenerator(latent_dim)
        if variant.head == "autoencoder":
            return G, MLPAutoencoder()
        return G, MLPDiscriminator(variant.head, variant.d_sees_label, variant.q_dims())
    G = ConvGenerator(latent_dim)
    if variant.head == "autoencoder":
        return G, ConvAutoencoder()
    batchnorm = not variant.gradient_penalty
    return G, ConvDiscriminator(variant.head, variant.d_sees_label, variant.q_dims(), batchnorm)


__all__ = ["ARCHS", "DOutput", "Head", "IMAGE_SHAPE", "N_CLASSES", "build_models", "noise"]
