"""The seed's MLP networks (CS231n-style), built from fused Linear+LeakyReLU blocks.

D = 784-256-256-1 with LeakyReLU(0.01); G = z-1024-1024-784 with ReLU and Tanh.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fastgan.models.heads import IMAGE_PIXELS, IMAGE_SHAPE, N_CLASSES, DOutput, Head, Heads, one_hot
from kernels import Linear, LinearLeakyReLU

SLOPE = 0.01
HIDDEN_D = 256
HIDDEN_G = 1024
AE_CODE = 64


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.net = nn.Sequential(  # Linear+ReLU is the fused op with slope 0
            LinearLeakyReLU(latent_dim, HIDDEN_G, 0.0),
            LinearLeakyReLU(HIDDEN_G, HIDDEN_G, 0.0),
            Linear(HIDDEN_G, IMAGE_PIXELS), nn.Tanh(),  # kernels.Linear: the same Triton GEMM
        )

    def forward(self, latent: Tensor) -> Tensor:
        return self.net(latent).view(-1, *IMAGE_SHAPE)  # (B, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    def __init__(self, head: Head, conditional: bool = False, q_dims: tuple[int, int] = (0, 0)):
        super().__init__()
        self.conditional = conditional
        in_dim = IMAGE_PIXELS + (N_CLASSES if conditional else 0)
        self.trunk = nn.Sequential(
            LinearLeakyReLU(in_dim, HIDDEN_D, SLOPE),
            LinearLeakyReLU(HIDDEN_D, HIDDEN_D, SLOPE),
        )
        self.heads = Heads(HIDDEN_D, head, q_dims)

    def forward(self, x: Tensor, y: Tensor | None = None) -> DOutput:
        h = x.flatten(1)  # (B, 784)
        if self.conditional:
            h = torch.cat([h, one_hot(y, h.dtype)], dim=1)
        return self.heads(self.trunk(h))


class MLPAutoencoder(nn.Module):
    """Energy-based discriminator (EBGAN, BEGAN): the energy is the reconstruction error."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(LinearLeakyReLU(IMAGE_PIXELS, HIDDEN_D, SLOPE), nn.Linear(HIDDEN_D, AE_CODE))
        self.decoder = nn.Sequential(LinearLeakyReLU(AE_CODE, HIDDEN_D, SLOPE), nn.Linear(HIDDEN_D, IMAGE_PIXELS))

    def forward(self, x: Tensor, y: Tensor | None = None) -> DOutput:
        code = self.encoder(x.flatten(1))
        return DOutput(recon=self.decoder(code).view(-1, *IMAGE_SHAPE), code=code)
