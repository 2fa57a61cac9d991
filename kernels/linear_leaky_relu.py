"""Linear + bias + LeakyReLU: the building block of every MLP in fastgan.

    out = leaky_relu(x @ weight.T + bias)      x: (M, K), weight: (N, K), bias: (N,)

Forward: one GEMM with bias and LeakyReLU on the fp32 accumulator. Backward: the activation's
derivative is recovered from the sign of the saved output (slope >= 0: out > 0 exactly where h > 0), and
multiplied into the A operand of both backward GEMMs as it is loaded; the bias gradient is the row
sum the weight GEMM computes on the way. No pre-activation is stored.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.library import triton_op

from kernels import dispatch
from kernels.dispatch import runs_triton
from kernels.matmul import launch_fused_matmul, lrelu_grad_mask


def linear_leaky_relu_reference(x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float) -> Tensor:
    """leaky_relu(x @ weight.T + bias): the definition the fused op must match (slope 1: the Linear alone)."""
    out = F.linear(x, weight, bias)
    return out if negative_slope == 1 else F.leaky_relu(out, negative_slope)


# --- forward and backward ops ---------------------------------------------------------------------
@triton_op("fastgan::linear_leaky_relu", mutates_args={})
def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float) -> Tensor:
    if not runs_triton(x):
        return linear_leaky_relu_reference(x, weight, bias, negative_slope)
    out = torch.empty(x.shape[0], weight.shape[0], device=x.device, dtype=x.dtype)
    launch_fused_matmul(x, weight.T, out, bias=bias, leaky_relu=True, slope=negative_slope)
    return out


@triton_op("fastgan::linear_leaky_relu_backward", mutates_args={})
def _backward(grad_out: Tensor, out: Tensor, x: Tensor, weight: Tensor, negative_slope: float,
              needs_x_grad: bool, needs_weight_grad: bool, needs_bias_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(grad x, grad weight, grad bias); a gradient that is not needed comes back empty (no GEMM):
    the input of a network's first layer, a frozen network's weights."""
    grad_out = grad_out.contiguous()
    empty = lambda: grad_out.new_empty(0)  # noqa: E731  (a fresh one per output: outputs may not alias)
    if not runs_triton(x):
        grad_h = grad_out * lrelu_grad_mask(out, negative_slope)
        return (grad_h @ weight if needs_x_grad else empty(), grad_h.T @ x if needs_weight_grad else empty(),
                grad_h.sum(0) if needs_bias_grad else empty())
    grad_x, grad_w, grad_b = empty(), empty(), empty()
    # dx = (g ⊙ m) @ W ;  dW = (g ⊙ m)^T @ x, whose row sums are db. Slope 1 (a plain Linear): m = 1,
    # so the GEMMs skip reading out.
    mask, mask_t = (out, out.T) if negative_slope != 1 else (None, None)
    if needs_x_grad:
        grad_x = torch.empty_like(x)
        launch_fused_matmul(grad_out, weight, grad_x, mask_a=mask, slope=negative_slope)
    if needs_weight_grad or needs_bias_grad:
        grad_w = torch.empty_like(weight)  # the bias gradient comes with the weight GEMM
        grad_b = torch.empty(weight.shape[0] if needs_bias_grad else 0, device=x.device, dtype=x.dtype)
        launch_fused_matmul(grad_out.T, x, grad_w, mask_a=mask_t, slope=negative_slope,
                            rowsum=grad_b if needs_bias_grad else None)
    return grad_x, grad_w, grad_b


def _setup_context(ctx, inputs, output):
    x, weight, bias, negative_slope = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.negative_slope, ctx.has_bias = negative_slope, bias is not None


def _autograd_backward(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
    grad_x, grad_w, grad_b = _backward(grad_out, out, x, weight, ctx.negative_slope, needs_x, needs_w,
                                       needs_b and ctx.has_bias)
    return grad_x if needs_x else None, grad_w if needs_w else None, grad_b if needs_b and ctx.has_bias else None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def _setup_double_backward(ctx, inputs, output):
    grad_out, out, x, weight, negative_slope = inputs[:5]
    ctx.save_for_backward(grad_out, out, x, weight)
    ctx.negative_slope = negative_slope


def _given(t: Tensor | None) -> bool:
    return t is not None and t.numel() > 0


def _double_backward(ctx, grad_grad_x, grad_grad_w, grad_grad_b):
    """The backward is linear in (grad_out, x, weight) for a fixed mask, and the mask is piecewise
    constant in out: this is what autograd's double backward through a gradient penalty needs."""
    grad_out, out, x, weight = ctx.saved_tensors
    mask = lrelu_grad_mask(out, ctx.negative_slope)
    grad_h = grad_out * mask
    d_grad_h = torch.zeros_like(grad_out)
    d_x = d_weight = None
    if _given(grad_grad_x):  # grad_x = grad_h @ W
        d_grad_h = d_grad_h + grad_grad_x @ weight.T
        d_weight = grad_h.T @ grad_grad_x
    if _given(grad_grad_w):  # grad_w = grad_h^T @ x
        d_grad_h = d_grad_h + x @ grad_grad_w.T
        d_x = grad_h @ grad_grad_w
    if _given(grad_grad_b):  # grad_b = grad_h.sum(0)
        d_grad_h = d_grad_h + grad_grad_b
    return d_grad_h * mask, None, d_x, d_weight, None, None, None, None


_backward.register_autograd(_double_backward, setup_context=_setup_double_backward)


# --- what the models call -------------------------------------------------------------------------
def linear_leaky_relu(x: Tensor, weight: Tensor, bias: Tensor | None, negative_slope: float) -> Tensor:
    """Fused Linear + bias + LeakyReLU, x: (..., K) -> (..., N). Uses the custom op when the kernel
    backend says so (see kernels.dispatch), else the PyTorch reference."""
    if not dispatch.use_custom_ops(x.device):
        return linear_leaky_relu_reference(x, weight, bias, negative_slope)
    if torch.is_autocast_enabled(x.device.type):  # the op is not autocast-aware: cast as F.linear would
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return linear_leaky_relu(x, weight, bias, negative_slope)
    lead = x.shape[:-1]
    out = _forward(x.reshape(-1, x.shape[-1]), weight, bias, negative_slope)
    return out.reshape(*lead, weight.shape[0])


class LinearLeakyReLU(nn.Linear):
    """nn.Linear followed by LeakyReLU (ReLU for slope 0), computed by one op (same parameters and
    init as nn.Linear)."""

    def __init__(self, in_features: int, out_features: int, negative_slope: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        if not (negative_slope >= 0 and math.isfinite(negative_slope)):
            # The fused backward recovers the activation mask from the sign of the output, which
            # holds for any slope >= 0 (0 is ReLU: out > 0 exactly where h > 0).
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return linear_leaky_relu(x, self.weight, self.bias, self.negative_slope)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"


class Linear(LinearLeakyReLU):
    """nn.Linear through the same op and Triton GEMM: LeakyReLU with slope 1 is the identity, and
    its backward's mask is all ones. Why: on an H200 at batch 64, cuBLAS ran G's 1024→784 output
    layer as 13 TF32 tiles of 64x64 in 17.5 µs, where the Triton GEMMs of G's other layers averaged
    6.3 µs (benchmarks.profile_step)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, 1.0, bias)

    def extra_repr(self) -> str:
        return nn.Linear.extra_repr(self)


__all__ = ["Linear", "LinearLeakyReLU", "linear_leaky_relu", "linear_leaky_relu_reference"]
