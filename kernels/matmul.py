"""One Triton GEMM with the fusions fastgan's networks need, and its PyTorch reference.

    C = act(mask_a(A) @ B + bias)        A: (M, K), B: (K, N), C: (M, N), fp32 accumulation

- `leaky_relu`: bias and LeakyReLU applied to the fp32 accumulator (the fused Linear forward);
- `mask_a`: A ⊙ lrelu'(S) on the fly, S shaped like A: the LeakyReLU backward folded into the
  backward GEMMs, with the mask recovered from the sign of the saved output S (slope > 0);
- `mask_out`: C ⊙ lrelu'(S), S shaped like C: the mask products of the analytic penalty chain;
- `rowsum`: also returns A's (masked) row sums, which is the bias gradient of the weight GEMM.

Strides are passed through, so transposed operands cost no copy. On a CUDA tensor (or any tensor
under TRITON_INTERPRET=1) the Triton kernel runs; elsewhere the reference does.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from kernels._triton import AUTOTUNE_CACHE, tl, triton
from kernels.dispatch import AUTOTUNE, INTERPRET, runs_triton



def lrelu_grad_mask(s: Tensor, slope: float) -> Tensor:
    """lrelu'(h) read from s = lrelu(h) (or h itself): 1 where positive, else the slope."""
    return torch.where(s > 0, s.new_ones(()), s.new_full((), slope))  # in s's dtype: float64 stays exact


def fused_matmul_reference(a: Tensor, b: Tensor, bias: Tensor | None = None, leaky_relu: bool = False,
                           mask_a: Tensor | None = None, mask_out: Tensor | None = None, slope: float = 0.01,
                           rowsum: bool = False) -> tuple[Tensor, Tensor | None]:
    """What the kernel computes, in PyTorch, at the inputs' precision (float64 stays float64)."""
    if mask_a is not None:
        a = a * lrelu_grad_mask(mask_a, slope)
    sums = a.sum(1) if rowsum else None
    c = a @ b
    if bias is not None:
        c = c + bias
    if leaky_relu:
        c = torch.nn.functional.leaky_relu(c, slope)
    if mask_out is not None:
        c = c * lrelu_grad_mask(mask_out, slope)
    return c, sums


# --- the kernel -----------------------------------------------------------------------------------
def _configs() -> list[triton.Config]:
    if INTERPRET:  # the interpreter cannot benchmark several configs; one is enough to test the code
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 4}, num_warps=4, num_stages=1)]
    if not AUTOTUNE:
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4)]
    # Tiles for fastgan's shapes: K in {96, 100, 256, 784, 1024}, N in {256, 784, 1024}, M from 64 to 65,536.
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (16, 64, 64, 4, 4), (32, 64, 64, 4, 4), (64, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 128, 64, 4, 3),
            (128, 64, 32, 4, 4), (128, 128, 32, 8, 3), (128, 128, 64, 8, 3), (128, 256, 32, 8, 3), (256, 128, 32, 8, 3),
        ]
    ]


@triton.autotune(configs=_configs(), key=["M", "N", "K", "PROLOGUE_MASK", "EPILOGUE", "OUT_DTYPE", "PRECISION"],
                 **AUTOTUNE_CACHE)
@triton.jit
def _fused_matmul_kernel(
    a_ptr, b_ptr, c_ptr, s_ptr, bias_ptr, rowsum_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn, stride_s0, stride_s1,
    slope,
    PROLOGUE_MASK: tl.constexpr,  # A <- A * lrelu'(S), S indexed like A
    EPILOGUE: tl.constexpr,  # 0: none, 1: (+bias) then LeakyReLU, 2: C <- C * lrelu'(S), S indexed like C
    HAS_BIAS: tl.constexpr,
    ROWSUM: tl.constexpr,  # write the row sums of (masked) A
    OUT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,  # "ieee" or "tf32" for fp32 operands
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped ordering: consecutive programs share rows of A, so its tiles are reused from L2.
    pid = tl.program_id(0)
    num_pid_m, num_pid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_pid_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_pid_n)) % group_size
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        a_mask = (offs_m[:, None] < M) & (ks[None, :] < K)
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + ks[None, :] * stride_ak, mask=a_mask, other=0.0)
        if PROLOGUE_MASK:
            s = tl.load(s_ptr + offs_m[:, None] * stride_s0 + ks[None, :] * stride_s1, mask=a_mask, other=0.0)
            a = tl.where(s > 0, a, a * slope)
        if ROWSUM:
            sums += tl.sum(a.to(tl.float32), axis=1)
        b_mask = (ks[:, None] < K) & (offs_n[None, :] < N)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + offs_n[None, :] * stride_bn, mask=b_mask, other=0.0)
        acc = tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)

    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if EPILOGUE == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        acc = tl.where(acc > 0, acc, acc * slope)
    if EPILOGUE == 2:
        s = tl.load(s_ptr + offs_m[:, None] * stride_s0 + offs_n[None, :] * stride_s1, mask=c_mask, other=0.0)
        acc = tl.where(s > 0, acc, acc * slope)
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, acc.to(OUT_DTYPE), mask=c_mask)
    if ROWSUM:
        tl.store(rowsum_ptr + offs_m, sums.to(OUT_DTYPE), mask=(offs_m < M) & (pid_n == 0))


_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float64: tl.float64}


def launch_fused_matmul(a: Tensor, b: Tensor, c: Tensor, *, bias: Tensor | None = None, leaky_relu: bool = False,
                        mask_a: Tensor | None = None, mask_out: Tensor | None = None, slope: float = 0.01,
                        rowsum: Tensor | None = None) -> None:
    """Run the kernel into the given output buffers (c: (M, N); rowsum: (M,) when wanted)."""
    (M, K), (K2, N) = a.shape, b.shape
    assert K == K2 and c.shape == (M, N), f"shapes {tuple(a.shape)} @ {tuple(b.shape)} -> {tuple(c.shape)}"
    assert not (leaky_relu and mask_out is not None) and not (mask_a is not None and mask_out is not None)
    assert a.dtype == b.dtype and a.device == b.device == c.device
    s = mask_a if mask_a is not None else mask_out
    if s is not None:
        assert s.shape == (a.shape if mask_a is not None else c.shape)
    precision = "tf32" if a.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 and not INTERPRET else "ieee"
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    wrap_triton(_fused_matmul_kernel)[grid](
        a, b, c, s if s is not None else c, bias if bias is not None else c, rowsum if rowsum is not None else c,
        M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        s.stride(0) if s is not None else 0, s.stride(1) if s is not None else 0,
        slope,
        PROLOGUE_MASK=mask_a is not None, EPILOGUE=1 if leaky_relu else 2 if mask_out is not None else 0,
        HAS_BIAS=bias is not None, ROWSUM=rowsum is not None, OUT_DTYPE=_TL_DTYPES[c.dtype], PRECISION=precision,
    )


# --- the op ---------------------------------------------------------------------------------------
@triton_op("fastgan::matmul_mask_out", mutates_args={})
def matmul_mask_out(a: Tensor, b: Tensor, s: Tensor, slope: float) -> Tensor:
    """(a @ b) ⊙ lrelu'(s): a GEMM of the analytic gradient-penalty chain with its mask fused."""
    if not runs_triton(a):
        return fused_matmul_reference(a, b, mask_out=s, slope=slope)[0]
    c = torch.empty(a.shape[0], b.shape[1], device=a.device, dtype=a.dtype)
    launch_fused_matmul(a, b, c, mask_out=s, slope=slope)
    return c
