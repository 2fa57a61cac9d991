"""pytest-benchmark: the fused Linear+LeakyReLU against eager PyTorch and torch.compile of the same,
and the WGAN-GP critic step with the analytic penalty (PyTorch GEMMs or Triton) against double
backward. Rows of one group are comparable: same run, same machine.

    python -m pytest benchmarks/test_kernels.py --benchmark-columns=median,rounds --benchmark-group-by=group
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from fastgan.config import resolve
from fastgan.models import build_models
from fastgan.penalties import interpolate
from fastgan.variants import VARIANTS
from fastgan.variants.base import Critic

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="Triton kernels run on CUDA")
# (K, N) of the MLP layers the op serves: D 784->256, 256->256; G 96->1024, 1024->1024.
LAYERS = [(784, 256), (256, 256), (96, 1024), (1024, 1024)]


def timed(fn):
    """Wrap fn so each benchmark round waits for the GPU."""
    def run():
        out = fn()
        if CUDA:
            torch.cuda.synchronize()
        return out
    return run


def reference(x, w, b):
    return F.leaky_relu(F.linear(x, w, b), 0.01)


@needs_cuda
@pytest.mark.parametrize("impl", ["eager", "compile", "fused"])
@pytest.mark.parametrize("K, N", LAYERS, ids=[f"K{k}xN{n}" for k, n in LAYERS])
@pytest.mark.parametrize("M", [64, 1024, 8192, 65536], ids=lambda m: f"M{m}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_linear_leaky_relu(benchmark, impl, K, N, M, dtype, mode):
    x = torch.randn(M, K, device=DEVICE, dtype=dtype, requires_grad=mode != "forward")
    w = (torch.randn(N, K, device=DEVICE, dtype=dtype) * K ** -0.5).requires_grad_(mode != "forward")
    b = torch.zeros(N, device=DEVICE, dtype=dtype, requires_grad=mode != "forward")
    op = {"eager": reference, "compile": torch.compile(reference), "fused": lambda x, w, b: kernels.linear_leaky_relu(x, w, b, 0.01)}[impl]
    grad = torch.randn(M, N, device=DEVICE, dtype=dtype)
    previous = kernels.get_backend()
    kernels.set_backend("triton")

    def step():
        out = op(x, w, b)
        if mode != "forward":
            out.backward(grad)
        return out

    try:
        for _ in range(3):  # warm-up: autotuning and compilation stay outside the timed rounds
            step()
        benchmark.group = f"linear_leaky_relu {mode} {str(dtype)[6:]} M={M} K={K} N={N}"
        benchmark(timed(step))
    finally:
        kernels.set_backend(previous)


@pytest.mark.parametrize("impl", ["double_backward", "analytic_torch", pytest.param("analytic_triton", marks=needs_cuda)])
@pytest.mark.parametrize("batch", [64, 4096])
def test_wgan_gp_critic_step(benchmark, impl, batch):
    variant = VARIANTS["wgan_gp"](resolve({"gan": "wgan_gp"}))
    _, D = build_models("mlp", variant, 96)
    D.to(DEVICE)
    real, fake = (torch.rand(batch, 1, 28, 28, device=DEVICE) * 2 - 1 for _ in range(2))
    previous = kernels.get_backend()
    kernels.set_backend("torch" if impl == "double_backward" else "triton")

    def step():
        D.zero_grad(set_to_none=True)
        critic = Critic(D)
        loss = critic(fake).score.mean() - critic(real).score.mean() + 10 * critic.gradient_penalty(interpolate(real, fake))
        loss.backward()

    try:
        if impl == "analytic_torch":
            with kernels.reference_math():
                step()
                benchmark.group = f"wgan_gp critic step, batch {batch}"
                benchmark(timed(step))
        else:
            step()
            benchmark.group = f"wgan_gp critic step, batch {batch}"
            benchmark(timed(step))
    finally:
        kernels.set_backend(previous)
