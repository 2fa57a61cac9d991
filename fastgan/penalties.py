"""Gradient penalties: where they are evaluated, and their value.

`gradient_penalty` is the reference: autograd's double backward (`create_graph=True`). It works for
any critic but is slow and torch.compile cannot trace it; the analytic MLP path (no double
backward) is checked against it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def gradient_penalty(critic: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    """mean_b (‖∇ₓ critic(x̂_b)‖₂ − 1)², one norm per sample, differentiable w.r.t. the critic's weights.

    `critic` maps (B, ...) to (B,) and must treat samples independently (no BatchNorm), so the
    gradient of the summed scores is each sample's own gradient.
    """
    points = points.detach().requires_grad_(True)
    scores = critic(points)
    (grad,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)  # (B,)
    return (norms - 1).square().mean()


def _per_sample_uniform(x: Tensor) -> Tensor:
    """One U[0, 1) draw per sample, shaped to broadcast over the sample's other dims."""
    return torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)


def interpolate(real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP's x̂ = αx + (1−α)G(z), α ~ U[0, 1) drawn per sample."""
    alpha = _per_sample_uniform(real)
    return fake + alpha * (real - fake)


def perturb(real: Tensor, scale: float) -> Tensor:
    """DRAGAN's x̂ = x + α·(scale·std(x)·U[0, 1)): points near the data, α ~ U[0, 1) per sample."""
    alpha = _per_sample_uniform(real)
    return real + alpha * (scale * real.std() * torch.rand_like(real))
