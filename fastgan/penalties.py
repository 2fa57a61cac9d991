"""Gradient penalties: where they are evaluated, and their value.

Two implementations of P = mean_b (‖∇ₓD(x̂_b)‖₂ − 1)²:
- `gradient_penalty`, the reference: autograd's double backward (`create_graph=True`). Works for any
  critic; slow, and torch.compile cannot trace it.
- `mlp_gradient_penalty`, analytic, for MLP critics with LeakyReLU/ReLU hidden layers: the
  activation derivative is piecewise constant, so ∇ₓD and P's weight gradients are plain matrix
  products (the chain in DESIGN.md). It compiles and graph-captures; its GEMMs are fastgan's
  custom ops (mask products and the row norm fused in Triton on CUDA).
`critic_penalty` picks: analytic where the critic allows it and custom ops are on, else autograd.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor, nn

import kernels
from kernels.matmul import lrelu_grad_mask

if TYPE_CHECKING:
    from fastgan.variants.base import Variant


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


class _MLPPenalty(torch.autograd.Function):
    """P for the critic D(x) = lrelu(... lrelu(x W₀ᵀ + b₀) ...) w_outᵀ + b_out.

    Forward, with mᵢ = lrelu'(hᵢ) read from the sign of layer i's output aᵢ:
        u_{L-1} = m_{L-1} ⊙ w_out,   uᵢ = (u_{i+1} W_{i+1}) ⊙ mᵢ,   g = u₀ W₀,   c = dP/dg
    Backward, e starting at c:  dWᵢ = uᵢᵀ e,  e ← (e Wᵢᵀ) ⊙ mᵢ;  finally dw_out = Σ_b e.
    Biases only move the masks: their gradient is zero.
    """

    @staticmethod
    def forward(ctx, points: Tensor, slopes: tuple[float, ...], w_out: Tensor, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        x = points.flatten(1)  # (B, in)
        acts, a = [], x
        for w, b, slope in zip(weights, biases, slopes):
            a = kernels.linear_leaky_relu(a, w, b, slope)
            acts.append(a)
        us = [lrelu_grad_mask(acts[-1], slopes[-1]) * w_out]  # (B, H_{L-1})
        for i in range(len(weights) - 2, -1, -1):
            us.insert(0, kernels.matmul_mask_out(us[0], weights[i + 1], acts[i], slopes[i]))
        c, per_sample = kernels.penalty_norm(us[0], weights[0], 2.0 / x.shape[0])
        ctx.slopes, ctx.n_layers, ctx.has_bias = slopes, len(weights), [b is not None for b in biases]
        ctx.save_for_backward(c, *us, *acts, *weights)
        return per_sample.mean()

    @staticmethod
    def backward(ctx, grad: Tensor):
        n = ctx.n_layers
        c, us, acts, weights = ctx.saved_tensors[0], ctx.saved_tensors[1:1 + n], ctx.saved_tensors[1 + n:1 + 2 * n], ctx.saved_tensors[1 + 2 * n:]
        e = c * grad  # dP/dg, (B, in)
        grads = []
        for i in range(n):
            grads += [us[i].T @ e, None]  # dWᵢ, dbᵢ = 0 (None)
            e = kernels.matmul_mask_out(e, weights[i].T, acts[i], ctx.slopes[i])
        return (None, None, e.sum(0, keepdim=True), *grads)


def mlp_gradient_penalty(points: Tensor, layers: Sequence[tuple[Tensor, Tensor | None, float]], w_out: Tensor) -> Tensor:
    """Analytic P for hidden layers [(weight, bias, slope)] (slope ≥ 0; 0 is ReLU) and output row
    w_out (1, H). Not differentiable w.r.t. the points (x̂ is detached in a D step)."""
    params = [t for w, b, _ in layers for t in (w, b)]
    return _MLPPenalty.apply(points.detach(), tuple(s for _, _, s in layers), w_out, *params)


def _unwrap(module: nn.Module) -> nn.Module:
    while True:  # DDP keeps the network in .module, torch.compile in ._orig_mod
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def analytic_penalty(arch: str, variant: "Variant", device: torch.device) -> bool:
    """Whether critic_penalty takes the analytic path for this variant's critic on this device."""
    return arch == "mlp" and variant.head != "autoencoder" and not variant.d_sees_label and kernels.use_custom_ops(device)


def critic_penalty(D: nn.Module, points: Tensor, y: Tensor | None = None) -> Tensor:
    """P for D's score: analytic for an unconditional MLP critic when custom ops are on (see
    kernels.dispatch), autograd's double backward otherwise."""
    from fastgan.models.mlp import MLPDiscriminator

    net = _unwrap(D)
    if isinstance(net, MLPDiscriminator) and not net.conditional and kernels.use_custom_ops(points.device):
        layers = [(layer.weight, layer.bias, layer.negative_slope) for layer in net.trunk]
        return mlp_gradient_penalty(points, layers, net.heads.score.weight)
    return gradient_penalty(lambda x: D(x, y).score, points)


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
