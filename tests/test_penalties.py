"""The autograd gradient penalty: per-sample norms and mixing, and its gradients against finite
differences in float64."""
import pytest
import torch
from torch import nn

from fastgan.penalties import gradient_penalty, interpolate, perturb


def test_norm_is_per_sample():
    # f(x) = ½‖x‖² has ∇f = x, so the penalty is the mean of (‖x_b‖ − 1)² over samples, which a
    # single norm over the whole batch would not give.
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64) * torch.arange(1, 6, dtype=torch.float64).view(5, 1, 1, 1)
    penalty = gradient_penalty(lambda v: 0.5 * v.square().flatten(1).sum(1), x)
    expected = (x.flatten(1).norm(dim=1) - 1).square().mean()
    torch.testing.assert_close(penalty, expected, rtol=1e-12, atol=0)


def test_matches_finite_difference_input_gradient():
    torch.manual_seed(3)
    critic = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.01), nn.Linear(8, 8), nn.LeakyReLU(0.01), nn.Linear(8, 1)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    f = lambda v: critic(v).squeeze(1)  # noqa: E731
    eps = 1e-6
    grads = torch.zeros_like(x)
    for i in range(x.shape[1]):  # central differences, one input coordinate at a time, all samples at once
        step = torch.zeros_like(x)
        step[:, i] = eps
        grads[:, i] = (f(x + step) - f(x - step)).detach() / (2 * eps)
    expected = (grads.norm(dim=1) - 1).square().mean()
    torch.testing.assert_close(gradient_penalty(f, x), expected, rtol=1e-7, atol=0)


def test_weight_gradients_match_finite_differences():
    # Double backward: d penalty / d weights, checked by gradcheck (central differences, float64).
    torch.manual_seed(4)
    x = torch.randn(3, 5, dtype=torch.float64)
    w1 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(1, 7, dtype=torch.float64, requires_grad=True)

    def penalty(w1, w2):
        return gradient_penalty(lambda v: (torch.tanh(v @ w1.T) @ w2.T).squeeze(1), x)

    assert torch.autograd.gradcheck(penalty, (w1, w2), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradient_reaches_the_critic_weights():
    critic = nn.Linear(3, 1).double()
    gradient_penalty(lambda v: critic(v).squeeze(1), torch.randn(4, 3, dtype=torch.float64)).backward()
    # ∇ₓ of a linear critic is its weight row: the penalty's gradient is 2(‖w‖ − 1)·w/‖w‖.
    w = critic.weight.detach()
    torch.testing.assert_close(critic.weight.grad, 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-12, atol=0)


def test_interpolation_draws_one_alpha_per_sample():
    real, fake = torch.zeros(64, 1, 28, 28), torch.ones(64, 1, 28, 28)
    points = interpolate(real, fake)  # = 1 − α, constant within each sample
    per_sample = points.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample[:, 0].unique().numel() == 64
    assert points.min() > 0 and points.max() <= 1


def test_dragan_perturbation_is_scaled_noise_near_the_data():
    real = torch.randn(64, 1, 28, 28)
    delta = perturb(real, 0.5) - real
    bound = 0.5 * real.std()
    assert (delta >= 0).all() and (delta < bound).all()
    ratio = delta.flatten(1).max(1).values / bound  # α·U: each sample has its own α ∈ [0, 1)
    assert ratio.std() > 0.1
