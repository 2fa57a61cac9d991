"""The custom ops' autograd formulas (float64, reference path), dispatch by --kernels, autocast,
and torch.compile(fullgraph=True) through the ops and the analytic penalty."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from fastgan.config import resolve
from fastgan.models import build_models
from fastgan.variants import VARIANTS
from fastgan.variants.base import Critic
from kernels.linear_leaky_relu import _forward


@pytest.fixture
def backend():
    previous = kernels.get_backend()
    yield kernels.set_backend
    kernels.set_backend(previous)


@pytest.mark.parametrize("M, K, N", [(1, 7, 1), (6, 5, 4), (9, 13, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_op_gradients_and_second_derivatives(M, K, N, bias):
    x = torch.randn(M, K, dtype=torch.float64, requires_grad=True)
    w = torch.randn(N, K, dtype=torch.float64, requires_grad=True)
    b = torch.randn(N, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    op = (lambda x, w, b: _forward(x, w, b, 0.1)) if bias else (lambda x, w: _forward(x, w, None, 0.1))
    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)  # double backward, for conv critics' autograd penalty


@pytest.mark.parametrize("wanted", ["x", "weights", "x+weights"])
def test_op_computes_only_the_gradients_asked_for(wanted):
    """A first layer's input and a frozen network's weights need no gradient: they get None, and the
    ones asked for equal the reference's."""
    x = torch.randn(9, 7, dtype=torch.float64, requires_grad="x" in wanted)
    w = torch.randn(5, 7, dtype=torch.float64, requires_grad="weights" in wanted)
    b = torch.randn(5, dtype=torch.float64, requires_grad="weights" in wanted)
    g = torch.randn(9, 5, dtype=torch.float64)
    inputs = [t for t in (x, w, b) if t.requires_grad]
    got = torch.autograd.grad(_forward(x, w, b, 0.1), inputs, g)
    expected = torch.autograd.grad(F.leaky_relu(F.linear(x, w, b), 0.1), inputs, g)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_op_matches_the_reference_in_float64():
    x, w, b = torch.randn(10, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    assert torch.equal(_forward(x, w, b, 0.01), F.leaky_relu(F.linear(x, w, b), 0.01))


def test_backend_chooses_the_custom_op_or_the_reference(backend):
    x, w = torch.randn(4, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    backend("torch")
    assert "LeakyRelu" in type(kernels.linear_leaky_relu(x, w, None, 0.1).grad_fn).__name__
    backend("triton")
    assert "LeakyRelu" not in type(kernels.linear_leaky_relu(x, w, None, 0.1).grad_fn).__name__
    backend("auto")  # no CUDA here: the reference
    assert "LeakyRelu" in type(kernels.linear_leaky_relu(x, w, None, 0.1).grad_fn).__name__
    with pytest.raises(ValueError, match="unknown kernel backend"):
        backend("cuda")


def test_op_follows_autocast_like_linear(backend):
    backend("triton")
    x, w, b = torch.randn(4, 8), torch.randn(3, 8), torch.randn(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, ref = kernels.linear_leaky_relu(x, w, b, 0.01), F.leaky_relu(F.linear(x, w, b), 0.01)
    assert fused.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(fused, ref)


def test_slope_must_not_be_negative():
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        kernels.LinearLeakyReLU(3, 2, -0.1)


def test_slope_zero_is_relu_with_its_gradient():
    x = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    out = _forward(x, w, None, 0.0)
    out.backward(torch.ones_like(out))
    x_ref, w_ref = x.detach().requires_grad_(), w.detach().requires_grad_()
    torch.relu(x_ref @ w_ref.T).backward(torch.ones_like(out))
    assert torch.equal(out, torch.relu(x.detach() @ w.detach().T))
    assert torch.equal(x.grad, x_ref.grad) and torch.equal(w.grad, w_ref.grad)


def _critic_and_inputs():
    variant = VARIANTS["wgan_gp"](resolve({"gan": "wgan_gp"}))
    _, D = build_models("mlp", variant, 96)
    real, fake, points = (torch.randn(16, 1, 28, 28) for _ in range(3))
    return D, (real, fake, points)


def _d_loss(D):
    def loss(real, fake, points):
        critic = Critic(D)
        return critic(fake).score.mean() - critic(real).score.mean() + 10 * critic.gradient_penalty(points)
    return loss


def _loss_and_grads(D, fn, inputs):
    D.zero_grad()
    loss = fn(*inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in D.parameters()]


@pytest.mark.parametrize("compile_backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_analytic_penalty_d_step_matches_eager(compile_backend, backend):
    # Double backward cannot be compiled; the analytic penalty through the custom ops can, whole.
    backend("triton")
    D, inputs = _critic_and_inputs()
    eager = _loss_and_grads(D, _d_loss(D), inputs)
    compiled = _loss_and_grads(D, torch.compile(_d_loss(D), fullgraph=True, backend=compile_backend), inputs)
    torch._dynamo.reset()
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    for c, e in zip(compiled[1], eager[1]):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-6)


def test_compiled_critic_forward_backward_matches_eager(backend):
    backend("triton")
    D, (real, _, _) = _critic_and_inputs()
    fn = lambda x: D(x).score.square().mean()  # noqa: E731
    eager = _loss_and_grads(D, fn, (real,))
    compiled = _loss_and_grads(D, torch.compile(fn, fullgraph=True, backend="aot_eager"), (real,))
    torch._dynamo.reset()
    assert torch.equal(compiled[0], eager[0])
    assert all(torch.equal(c, e) for c, e in zip(compiled[1], eager[1]))
