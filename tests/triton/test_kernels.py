"""Each Triton kernel against its PyTorch reference (computed in float64 on the same inputs), on
fresh random inputs of awkward shapes, values and every gradient, with tolerances set by dtype."""
import pytest
import torch
import triton
import triton.language as tl

from kernel_testing import DEVICE, INTERPRET
from kernels.linear_leaky_relu import _forward, linear_leaky_relu_reference
from kernels.matmul import (_fused_matmul_kernel, fused_matmul_reference, launch_fused_matmul, lrelu_grad_mask,
                            matmul_mask_out)
from kernels.penalty_norm import penalty_norm, penalty_norm_reference

pytestmark = pytest.mark.skipif(not (INTERPRET or DEVICE == "cuda"), reason="needs CUDA or TRITON_INTERPRET=1")

# max |actual − expected| ≤ TOL · max |expected|: fp32 exact-ish, fp16/bf16 a few output roundings.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
# The interpreter computes bf16 dots wrongly; it runs fp32 and fp16. The GPU runs all three.
DTYPES = [torch.float32, torch.float16] + ([] if INTERPRET else [torch.bfloat16])
if DEVICE == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means IEEE fp32 here; tf32 has its own test
# (M, K, N): batch 1, M not a multiple of any block, N = 1, K = 784; the GPU adds the real layer shapes.
SHAPES = [(1, 784, 3), (37, 20, 1), (33, 50, 40)]
if not INTERPRET:
    SHAPES += [(64, 784, 256), (1024, 256, 256), (8192, 1024, 784), (65536, 96, 1024), (4099, 100, 1024)]


def assert_close(actual, expected, dtype, what="", reduction=1):
    """TOL[dtype] for sums of up to 1,024 products; beyond, it grows as √(length): fp32 accumulation
    error grows that way (an H200 run: the weight gradient at M = 65,536 is a 65,536-long sum, error
    1.003e-5 of its scale)."""
    tol = TOL[dtype] * max(1.0, (reduction / 1024) ** 0.5)
    err = (actual.double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    assert err <= tol * max(scale, 1e-30), f"{what}: max error {err:.3e} vs scale {scale:.3e} (tol {tol:.2e})"


def rand(*shape, dtype, scale=1.0):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype)


def reference_gradients(out, grad, x, w, b, slope, dtype):
    """(grad x, grad weight, grad bias) in float64 for the function the op defines: the LeakyReLU
    mask read from the sign of the op's own output. Where the exact pre-activation is within
    rounding of zero, the rounded output's sign can differ from the float64 one, and over millions
    of elements some do: an H200 run found single elements off by (1 - slope)·g·W at M = 65,536
    when the reference took the float64 mask (reproduced in fp32 PyTorch on a CPU: one flip, 2.3e-2).
    So the mask may differ from the float64 one only there, and the gradients follow the op's mask."""
    x64, w64 = x.detach().double(), w.detach().double()
    h64 = x64 @ w64.T + (b.detach().double() if b is not None else 0)
    mask = lrelu_grad_mask(out.detach().double(), slope)
    decided = h64.abs() > TOL[dtype] * h64.abs().max()
    assert torch.equal(mask[decided], lrelu_grad_mask(h64, slope)[decided]), "mask differs where the sign is clear"
    grad_h = grad.double() * mask
    return grad_h @ w64, grad_h.T @ x64, grad_h.sum(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("M, K, N", SHAPES)
@pytest.mark.parametrize("bias, slope", [(True, 0.2), (False, 0.01), (True, 0.0), (True, 1.0)],
                         ids=["bias", "no-bias", "relu", "linear"])
def test_linear_leaky_relu_forward_and_gradients(M, K, N, dtype, bias, slope):
    x = rand(M, K, dtype=dtype).requires_grad_()
    w = rand(N, K, dtype=dtype, scale=K ** -0.5).requires_grad_()
    b = rand(N, dtype=dtype).requires_grad_() if bias else None
    out = _forward(x, w, b, slope)
    grad = rand(M, N, dtype=dtype)
    out.backward(grad)
    ref = linear_leaky_relu_reference(x.detach().double(), w.detach().double(),
                                      b.detach().double() if bias else None, slope)
    assert out.dtype == dtype and out.shape == (M, N)
    assert_close(out, ref, dtype, "out")
    ref_x, ref_w, ref_b = reference_gradients(out, grad, x, w, b, slope, dtype)
    assert_close(x.grad, ref_x, dtype, "grad x")
    assert_close(w.grad, ref_w, dtype, "grad weight", reduction=M)  # sums over the batch
    if bias:
        assert_close(b.grad, ref_b, dtype, "grad bias", reduction=M)


@pytest.mark.parametrize("wanted", ["x", "weights"])
def test_backward_skips_the_gradients_not_asked_for(wanted):
    """Frozen weights or an input without grad: the remaining gradients still match the reference."""
    M, K, N = 45, 33, 70
    x = rand(M, K, dtype=torch.float32).requires_grad_(wanted == "x")
    w = rand(N, K, dtype=torch.float32).requires_grad_(wanted == "weights")
    b = rand(N, dtype=torch.float32).requires_grad_(wanted == "weights")
    g = rand(M, N, dtype=torch.float32)
    out = _forward(x, w, b, 0.2)
    got = torch.autograd.grad(out, [t for t in (x, w, b) if t.requires_grad], g)
    ref_x, ref_w, ref_b = reference_gradients(out, g, x, w, b, 0.2, torch.float32)
    for a, e in zip(got, [ref_x] if wanted == "x" else [ref_w, ref_b]):
        assert_close(a, e, torch.float32, f"grad wrt {wanted}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_output_element_is_written(dtype):
    # Poisoned buffers: an element the kernel does not write stays NaN and fails.
    M, K, N = 37, 30, 21
    a, b = rand(M, K, dtype=dtype), rand(K, N, dtype=dtype)
    s = rand(M, K, dtype=dtype)
    c = torch.full((M, N), float("nan"), device=DEVICE, dtype=dtype)
    sums = torch.full((M,), float("nan"), device=DEVICE, dtype=dtype)
    launch_fused_matmul(a, b, c, mask_a=s, slope=0.1, rowsum=sums)
    ref_c, ref_sums = fused_matmul_reference(a.double(), b.double(), mask_a=s.double(), slope=0.1, rowsum=True)
    assert_close(c, ref_c, dtype, "masked-A product")
    assert_close(sums, ref_sums, dtype, "row sums")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("M, K, N", [(1, 20, 5), (45, 33, 70)])
def test_matmul_mask_out(M, K, N, dtype):
    a, b, s = rand(M, K, dtype=dtype), rand(K, N, dtype=dtype), rand(M, N, dtype=dtype)
    expected = fused_matmul_reference(a.double(), b.double(), mask_out=s.double(), slope=0.01)[0]
    assert_close(matmul_mask_out(a, b, s, 0.01), expected, dtype, "masked product")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B, H, D", [(1, 16, 5), (19, 30, 50), (40, 64, 784)])
def test_penalty_norm(B, H, D, dtype):
    u, w = rand(B, H, dtype=dtype), rand(H, D, dtype=dtype, scale=H ** -0.5)
    u[0] = 0  # a zero gradient: the guard must give c = 0 and penalty 1, not NaN
    c, pen = penalty_norm(u, w, 2.0 / B)
    ref_c, ref_pen = penalty_norm_reference(u.double(), w.double(), 2.0 / B)
    assert_close(c, ref_c, dtype, "c")
    assert_close(pen, ref_pen, dtype, "per-sample penalty")
    assert torch.equal(c[0], torch.zeros_like(c[0])) and pen[0].item() == 1.0


def test_block_geometry_does_not_change_results():
    # Same BLOCK_K (same summation order), different tiles and grouping: demand bit equality.
    M, K, N = 50, 64, 40
    a, b = rand(M, K, dtype=torch.float32), rand(K, N, dtype=torch.float32)
    outs = []
    for bm, bn, group in [(16, 16, 1), (32, 64, 4), (64, 16, 8)]:
        c = torch.full((M, N), float("nan"), device=DEVICE)
        grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
        _fused_matmul_kernel.fn[grid](
            a, b, c, c, c, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
            0, 0, 0.01, PROLOGUE_MASK=False, EPILOGUE=0, HAS_BIAS=False, ROWSUM=False, OUT_DTYPE=tl.float32,
            PRECISION="ieee", BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=16, GROUP_M=group)
        outs.append(c)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.skipif(DEVICE != "cuda", reason="tf32 is a GPU mode")
def test_tf32_forward():
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        x, w = rand(512, 784, dtype=torch.float32), rand(256, 784, dtype=torch.float32, scale=784 ** -0.5)
        expected = linear_leaky_relu_reference(x.double(), w.double(), None, 0.01)
        err = (_forward(x, w, None, 0.01).double() - expected).abs().max() / expected.abs().max()
        assert err < 5e-3  # tf32 keeps 10 mantissa bits
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


@pytest.mark.parametrize("widths, batch", [((50, 30, 20), 19)] + ([] if INTERPRET else [((784, 256, 256), 64)]))
def test_analytic_penalty_on_the_kernels_equals_double_backward(widths, batch):
    """The kernels composed as the analytic penalty runs them (forward GEMMs, masked products, the row
    norm, the backward chain) against autograd's double backward in float64 on the same fp32 weights."""
    import kernels
    from fastgan.penalties import gradient_penalty, mlp_gradient_penalty
    from kernels.dispatch import runs_triton

    sizes = [*widths, 1]
    weights = [rand(n, k, dtype=torch.float32, scale=k ** -0.5).requires_grad_() for k, n in zip(sizes, sizes[1:])]
    biases = [rand(n, dtype=torch.float32, scale=0.1).requires_grad_() for n in widths[1:]]
    x = rand(batch, widths[0], dtype=torch.float32)
    kernels.set_backend("triton")
    try:
        assert runs_triton(x)  # else this compares the reference with itself
        penalty = mlp_gradient_penalty(x, [(w, b, 0.2) for w, b in zip(weights, biases)], weights[-1])
        grads = torch.autograd.grad(penalty, weights)
    finally:
        kernels.set_backend("auto")
    w64 = [w.detach().double().cpu().requires_grad_() for w in weights]
    b64 = [b.detach().double().cpu() for b in biases]

    def critic(v):
        for w, b in zip(w64, b64):
            v = torch.nn.functional.leaky_relu(v @ w.T + b, 0.2)
        return (v @ w64[-1].T).squeeze(1)

    reference = gradient_penalty(critic, x.double().cpu())
    expected = torch.autograd.grad(reference, w64)
    # P and its gradients are sums over the batch and every layer's width of fp32 products
    reduction = batch * max(widths)
    assert_close(penalty.cpu().reshape(1), reference.reshape(1), torch.float32, "penalty", reduction)
    for i, (g, e) in enumerate(zip(grads, expected)):
        assert_close(g.cpu(), e, torch.float32, f"dP/dW{i}", reduction)
