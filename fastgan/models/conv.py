"""infoGAN-style 28x28 convolutional networks (the architecture of the seed's source code).

G: fc 1024 -> fc 128*7*7 -> deconv 64 -> deconv 1, BatchNorm + ReLU, Tanh out.
D: conv 64 -> conv 128 -> fc 1024, LeakyReLU(0.2), BatchNorm unless the critic carries a gradient
penalty (the penalty is per sample; BatchNorm would couple the samples of a batch).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fastgan.models.heads import N_CLASSES, DOutput, Head, Heads, one_hot
from kernels import LinearLeakyReLU

SLOPE = 0.2
FC = 1024
AE_CODE = 32


def _norm(batchnorm: bool, cls: type[nn.Module], n: int) -> nn.Module:
    return cls(n) if batchnorm else nn.Identity()


def init_dcgan_(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases, as the seed's source code initialises these nets."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ConvGenerator(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, FC), nn.BatchNorm1d(FC), nn.ReLU(),
            nn.Linear(FC, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),
        )
        init_dcgan_(self)

    def forward(self, latent: Tensor) -> Tensor:
        return self.deconv(self.fc(latent).view(-1, 128, 7, 7))  # (B, 1, 28, 28)


class ConvDiscriminator(nn.Module):
    def __init__(self, head: Head, conditional: bool = False, q_dims: tuple[int, int] = (0, 0), batchnorm: bool = True):
        super().__init__()
        self.conditional = conditional
        in_channels = 1 + (N_CLASSES if conditional else 0)  # labels enter as constant planes
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 64, 4, 2, 1), nn.LeakyReLU(SLOPE),
            nn.Conv2d(64, 128, 4, 2, 1), _norm(batchnorm, nn.BatchNorm2d, 128), nn.LeakyReLU(SLOPE),
        )
        if batchnorm:
            self.fc = nn.Sequential(nn.Linear(128 * 7 * 7, FC), nn.BatchNorm1d(FC), nn.LeakyReLU(SLOPE))
        else:
            self.fc = LinearLeakyReLU(128 * 7 * 7, FC, SLOPE)
        self.heads = Heads(FC, head, q_dims)
        init_dcgan_(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> DOutput:
        if self.conditional:
            planes = one_hot(y, x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, planes], dim=1)  # (B, 11, 28, 28)
        return self.heads(self.fc(self.conv(x).flatten(1)))


class ConvAutoencoder(nn.Module):
    """The seed's EBGAN/BEGAN discriminator: conv 64 -> fc code 32 -> fc -> deconv."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(SLOPE), nn.Flatten(), nn.Linear(64 * 14 * 14, AE_CODE),
        )
        self.decoder = nn.Sequential(
            nn.Linear(AE_CODE, 64 * 14 * 14), nn.BatchNorm1d(64 * 14 * 14), nn.ReLU(),
            nn.Unflatten(1, (64, 14, 14)), nn.ConvTranspose2d(64, 1, 4, 2, 1),
        )
        init_dcgan_(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> DOutput:
        code = self.encoder(x)
        return DOutput(recon=self.decoder(code), code=code)
