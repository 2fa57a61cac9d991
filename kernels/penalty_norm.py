"""The last GEMM of the analytic gradient penalty, with the per-sample norm in its epilogue.

    g = u @ W                      u: (B, H), W: (H, D); g = ∇ₓD, one row per sample
    penalty_b = (‖g_b‖ − 1)²       c = coef · (‖g‖ − 1)/‖g‖ · g        (c = 0 where ‖g‖ = 0)

With coef = 2/B, c is d mean_b(penalty_b) / dg, the input of the chain's backward. One program owns
whole rows of g (BLOCK_D ≥ D), so the norm needs no second pass and g never reaches memory.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op, wrap_triton

from kernels._triton import AUTOTUNE_CACHE, tl, triton
from kernels.dispatch import AUTOTUNE, INTERPRET, runs_triton
from kernels.matmul import _TL_DTYPES


def penalty_norm_reference(u: Tensor, w: Tensor, coef: float) -> tuple[Tensor, Tensor]:
    """(c, per-sample penalty) in PyTorch, at the inputs' precision."""
    g = u @ w
    norm = g.norm(dim=1, keepdim=True)
    scale = torch.where(norm > 0, coef * (norm - 1) / norm, torch.zeros_like(norm))
    return g * scale, (norm.squeeze(1) - 1).square()


def _configs() -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_B": 16, "BLOCK_H": 16}, num_warps=4, num_stages=1)]
    if not AUTOTUNE:
        return [triton.Config({"BLOCK_B": 32, "BLOCK_H": 16}, num_warps=8, num_stages=1)]
    # A whole row of g per program: for D = 784 a (BLOCK_H, 1024) tile of W per stage, so few stages
    # keep shared memory within an H100's 227 KB. Each fits at D = 784 (tests/test_kernels_hopper.py;
    # 64 rows did not: 256 KB).
    return [triton.Config({"BLOCK_B": bb, "BLOCK_H": bh}, num_warps=w, num_stages=s)
            for bb, bh, w, s in [(16, 16, 4, 3), (16, 32, 4, 2), (32, 16, 8, 2), (32, 32, 8, 1)]]


@triton.autotune(configs=_configs(), key=["B", "H", "D"], **AUTOTUNE_CACHE)
@triton.jit
def _penalty_norm_kernel(
    u_ptr, w_ptr, c_ptr, pen_ptr,
    B, H, D,
    stride_ub, stride_uh, stride_wh, stride_wd, stride_cb, stride_cd,
    coef,
    OUT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_d = tl.arange(0, BLOCK_D)
    offs_h = tl.arange(0, BLOCK_H)
    g = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + offs_h
        u = tl.load(u_ptr + offs_b[:, None] * stride_ub + hs[None, :] * stride_uh,
                    mask=(offs_b[:, None] < B) & (hs[None, :] < H), other=0.0)
        w = tl.load(w_ptr + hs[:, None] * stride_wh + offs_d[None, :] * stride_wd,
                    mask=(hs[:, None] < H) & (offs_d[None, :] < D), other=0.0)
        g = tl.dot(u, w, g, input_precision=PRECISION)
    norm = tl.sqrt(tl.sum(g * g, axis=1))  # (BLOCK_B,); padded columns are zero
    scale = tl.where(norm > 0, coef * (norm - 1) / tl.where(norm > 0, norm, 1.0), 0.0)
    out_mask = (offs_b[:, None] < B) & (offs_d[None, :] < D)
    tl.store(c_ptr + offs_b[:, None] * stride_cb + offs_d[None, :] * stride_cd, (g * scale[:, None]).to(OUT_DTYPE), mask=out_mask)
    tl.store(pen_ptr + offs_b, ((norm - 1) * (norm - 1)).to(OUT_DTYPE), mask=offs_b < B)


def launch_penalty_norm(u: Tensor, w: Tensor, c: Tensor, pen: Tensor, coef: float) -> None:
    (B, H), (H2, D) = u.shape, w.shape
    assert H == H2 and c.shape == (B, D) and pen.shape == (B,) and u.dtype == w.dtype
    precision = "tf32" if u.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 and not INTERPRET else "ieee"
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]),)  # noqa: E731
    wrap_triton(_penalty_norm_kernel)[grid](
        u, w, c, pen, B, H, D,
        u.stride(0), u.stride(1), w.stride(0), w.stride(1), c.stride(0), c.stride(1),
        coef, OUT_DTYPE=_TL_DTYPES[c.dtype], PRECISION=precision, BLOCK_D=triton.next_power_of_2(D),
    )


@triton_op("fastgan::penalty_norm", mutates_args={})
def penalty_norm(u: Tensor, w: Tensor, coef: float) -> tuple[Tensor, Tensor]:
    """(c, per-sample penalty) for g = u @ w; see the module docstring."""
    if not runs_triton(u):
        return penalty_norm_reference(u, w, coef)
    c = torch.empty(u.shape[0], w.shape[1], device=u.device, dtype=u.dtype)
    pen = torch.empty(u.shape[0], device=u.device, dtype=u.dtype)
    launch_penalty_norm(u, w, c, pen, coef)
    return c, pen
