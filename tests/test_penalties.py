"""The autograd gradient penalty: per-sample norms and mixing, and its gradients against finite
differences in float64."""
import pytest
import torch
from torch import nn

import kernels
from fastgan.penalties import gradient_penalty, interpolate, mlp_gradient_penalty, perturb


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


# --- the analytic MLP penalty against double backward ---------------------------------------------
def mlp(widths, slopes):
    layers = []
    for i, slope in enumerate(slopes):
        layers += [nn.Linear(widths[i], widths[i + 1]), nn.LeakyReLU(slope) if slope else nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 1)).double()


@pytest.mark.parametrize("widths, slopes, batch", [
    ((784, 256, 256), (0.01, 0.01), 64),  # the seed's critic
    ((784, 256, 256), (0.01, 0.01), 1),
    ((10, 7), (0.2,), 5),  # one hidden layer
    ((12, 9, 8, 6), (0.1, 0.0, 0.3), 17),  # three, one of them ReLU
])
def test_analytic_penalty_equals_double_backward(widths, slopes, batch):
    net = mlp(widths, slopes)
    x = torch.randn(batch, widths[0], dtype=torch.float64)
    reference = gradient_penalty(lambda v: net(v).squeeze(1), x)
    weights = [m.weight for m in net if isinstance(m, nn.Linear)]
    expected = torch.autograd.grad(reference, weights)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    layers = [(m.weight, m.bias, s) for m, s in zip(linears[:-1], slopes)]
    analytic = mlp_gradient_penalty(x, layers, linears[-1].weight)
    got = torch.autograd.grad(analytic, weights)
    torch.testing.assert_close(analytic, reference, rtol=1e-12, atol=0)
    for g, e in zip(got, expected):
        assert ((g - e).norm() / e.norm()).item() <= 1e-12


def test_analytic_penalty_gives_biases_no_gradient():
    net = mlp((6, 5, 4), (0.01, 0.01))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    biases = [m.bias for m in linears]
    reference = gradient_penalty(lambda v: net(v).squeeze(1), torch.randn(8, 6, dtype=torch.float64))
    assert all(g is None or not g.any() for g in torch.autograd.grad(reference, biases, allow_unused=True))
    layers = [(m.weight, m.bias, 0.01) for m in linears[:-1]]
    mlp_gradient_penalty(torch.randn(8, 6, dtype=torch.float64), layers, linears[-1].weight).backward()
    assert all(b.grad is None for b in biases) and linears[0].weight.grad.abs().sum() > 0


def test_analytic_penalty_guards_a_zero_gradient():
    net = mlp((6, 5), (0.01,))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linears[-1].weight.zero_()  # D is constant: ∇ₓD = 0 for every sample, so P = 1
    layers = [(linears[0].weight, linears[0].bias, 0.01)]
    penalty = mlp_gradient_penalty(torch.randn(4, 6, dtype=torch.float64), layers, linears[-1].weight)
    penalty.backward()
    assert penalty.item() == 1.0
    assert all(torch.isfinite(m.weight.grad).all() for m in linears)


@pytest.mark.parametrize("arch, analytic", [("mlp", True), ("conv", False)])
def test_critic_penalty_is_analytic_only_for_mlp_critics_with_custom_ops(arch, analytic, monkeypatch):
    from fastgan import penalties
    from fastgan.config import resolve
    from fastgan.models import build_models
    from fastgan.variants import VARIANTS

    _, D = build_models(arch, VARIANTS["wgan_gp"](resolve({"gan": "wgan_gp"})), 96)
    D.double()
    points = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    calls = []
    monkeypatch.setattr(penalties, "mlp_gradient_penalty", lambda *a: calls.append(a) or penalty_reference)
    penalty_reference = gradient_penalty(lambda v: D(v).score, points)
    previous = kernels.get_backend()
    try:
        kernels.set_backend("torch")
        assert penalties.critic_penalty(D, points) == penalty_reference and not calls
        kernels.set_backend("triton")
        penalties.critic_penalty(D, points)
        assert bool(calls) == analytic
    finally:
        kernels.set_backend(previous)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["wgan_gp", "dragan", "gan", "cgan", "acgan", "infogan"])
def test_analytic_penalty_predicts_the_path_critic_penalty_takes(name, arch, backend, monkeypatch):
    """choose_mode asks analytic_penalty (from the settings) whether the critic's penalty can compile;
    critic_penalty decides from the network itself. They must agree on every critic."""
    import fastgan.penalties as penalties
    from fastgan.config import resolve
    from fastgan.models import build_models
    from fastgan.variants import VARIANTS

    variant = VARIANTS[name](resolve({"gan": name, "arch": arch}))
    _, D = build_models(arch, variant, 96)
    taken = []
    analytic = penalties.mlp_gradient_penalty
    monkeypatch.setattr(penalties, "mlp_gradient_penalty", lambda *a: taken.append(1) or analytic(*a))
    kernels.set_backend(backend)
    try:
        penalties.critic_penalty(D, torch.rand(3, 1, 28, 28), torch.randint(10, (3,)))
        expected = penalties.analytic_penalty(arch, variant, torch.device("cpu"))
    finally:
        kernels.set_backend("auto")
    assert bool(taken) == expected
    assert expected == (arch == "mlp" and backend == "triton" and name != "cgan")
