"""What a discriminator returns, and the heads that turn its features into that."""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

Head = Literal["critic", "class", "info", "autoencoder"]
N_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28


class DOutput(NamedTuple):
    """Named outputs, so no loss ever reads the wrong column of a packed tensor."""

    score: Tensor | None = None  # (B,) adversarial logit or critic value
    cls: Tensor | None = None  # (B, 10) class logits (acgan)
    q_cat: Tensor | None = None  # (B, n_cat) categorical-code logits (infogan's Q)
    q_cont: Tensor | None = None  # (B, n_cont) continuous-code estimates (infogan's Q)
    recon: Tensor | None = None  # (B, 1, 28, 28) reconstruction (autoencoder D)
    code: Tensor | None = None  # (B, C) autoencoder embedding (ebgan's pull-away term)


class Heads(nn.Module):
    """Linear heads on the discriminator's feature vector: the score plus what the variant needs."""

    def __init__(self, features: int, head: Head, q_dims: tuple[int, int] = (0, 0)):
        super().__init__()
        if head == "autoencoder":
            raise ValueError("an autoencoder discriminator has no linear heads")
        self.score = nn.Linear(features, 1)
        self.cls = nn.Linear(features, N_CLASSES) if head == "class" else None
        self.n_cat, self.n_cont = q_dims if head == "info" else (0, 0)
        self.q = nn.Linear(features, self.n_cat + self.n_cont) if head == "info" else None

    def forward(self, h: Tensor) -> DOutput:
        score = self.score(h).squeeze(1)
        cls = self.cls(h) if self.cls is not None else None
        q_cat = q_cont = None
        if self.q is not None:
            q_cat, q_cont = self.q(h).split([self.n_cat, self.n_cont], dim=1)
        return DOutput(score=score, cls=cls, q_cat=q_cat, q_cont=q_cont)


def one_hot(y: Tensor, dtype: torch.dtype) -> Tensor:
    return nn.functional.one_hot(y, N_CLASSES).to(dtype)
