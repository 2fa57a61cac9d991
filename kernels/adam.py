"""Adam as Triton launches sized to the memory traffic; its reference is torch.optim.Adam.

At batch 64 the optimizer step is a measured cost: torch's fused Adam walks the tensors in chunks of
65,536 elements, one thread block each, so G's 1.9 M parameters keep ~30 of an H100's 132 SMs busy
and D's 0.27 M about 5 (DESIGN.md: 68–87 µs for both against a ~15 µs bandwidth floor). Here every
BLOCK elements of a tensor get their own program, and one launch covers up to SLOTS tensors: a whole
MLP network (six or eight weights and biases) per launch. The slots are spelled out as arguments
because tuples of tensors fail to bind in Triton 3.6 (measured on the H200 image).

Math and state follow torch's fused Adam (`exp_avg`, `exp_avg_sq`, a float32 `step` per parameter
on the device), so checkpoints are interchangeable with torch.optim.Adam and the step is
CUDA-graph capturable.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from kernels._triton import tl, triton
from kernels.dispatch import runs_triton, use_custom_ops

BLOCK = 1024
SLOTS = 8  # tensors per launch: each MLP network's weights and biases (6 or 8) in one


@triton.jit
def _one_minus_exp(x):
    """1 - exp(x) for x <= 0, without the cancellation near 0: the bias correction 1 - beta2**step is
    0.001 at step 1 for beta2 = 0.999, where 1 - exp(x) keeps only the digits the GPU's fast exp
    leaves after the leading 0.999 (an H200 run: 52 of 200,704 weights 1.6e-7 away from
    torch.optim.Adam after 20 steps). Near 0, its Taylor series (truncation below 1e-9 relative
    for x > -0.1)."""
    series = -x * (1 + x * (0.5 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x / 720)))))
    return tl.where(x > -0.1, series, 1 - tl.exp(x))


@triton.jit
def _adam_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, step_ptr, numel, block,
                lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK: tl.constexpr):
    """Block `block` (BLOCK elements) of one tensor."""
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    p = tl.load(param_ptr + offs, mask=mask)
    g = tl.load(grad_ptr + offs, mask=mask).to(tl.float32)
    m = tl.load(exp_avg_ptr + offs, mask=mask)
    v = tl.load(exp_avg_sq_ptr + offs, mask=mask)
    step = tl.load(step_ptr)  # already incremented for this step
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bias_correction1 = _one_minus_exp(step * log_beta1)  # 1 - beta1 ** step
    bias_correction2 = _one_minus_exp(step * log_beta2)
    denom = tl.sqrt(v) / tl.sqrt(bias_correction2) + eps
    p = p - (lr / bias_correction1) * m / denom
    tl.store(param_ptr + offs, p, mask=mask)
    tl.store(exp_avg_ptr + offs, m, mask=mask)
    tl.store(exp_avg_sq_ptr + offs, v, mask=mask)


# Up to SLOTS tensors per launch, each slot spelled out as (param, grad, exp_avg, exp_avg_sq, step,
# numel): Triton has no array-of-pointers argument short of a table of addresses on the device, which
# would have to be rewritten whenever autograd hands out new gradient buffers (every eager step).
# Programs 0.. run through slot 0's blocks, then slot 1's, and so on; an unused slot has numel 0.
@triton.jit
def _adam_kernel(p0, g0, m0, v0, s0, n0, p1, g1, m1, v1, s1, n1, p2, g2, m2, v2, s2, n2,
                 p3, g3, m3, v3, s3, n3, p4, g4, m4, v4, s4, n4, p5, g5, m5, v5, s5, n5,
                 p6, g6, m6, v6, s6, n6, p7, g7, m7, v7, s7, n7,
                 lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    e0 = tl.cdiv(n0, BLOCK)  # e_k: blocks of slots 0..k
    e1 = e0 + tl.cdiv(n1, BLOCK)
    e2 = e1 + tl.cdiv(n2, BLOCK)
    e3 = e2 + tl.cdiv(n3, BLOCK)
    e4 = e3 + tl.cdiv(n4, BLOCK)
    e5 = e4 + tl.cdiv(n5, BLOCK)
    e6 = e5 + tl.cdiv(n6, BLOCK)
    if pid < e0:
        _adam_block(p0, g0, m0, v0, s0, n0, pid, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    elif pid < e1:
        _adam_block(p1, g1, m1, v1, s1, n1, pid - e0, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    elif pid < e2:
        _adam_block(p2, g2, m2, v2, s2, n2, pid - e1, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    elif pid < e3:
        _adam_block(p3, g3, m3, v3, s3, n3, pid - e2, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    elif pid < e4:
        _adam_block(p4, g4, m4, v4, s4, n4, pid - e3, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    elif pid < e5:
        _adam_block(p5, g5, m5, v5, s5, n5, pid - e4, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    elif pid < e6:
        _adam_block(p6, g6, m6, v6, s6, n6, pid - e5, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)
    else:
        _adam_block(p7, g7, m7, v7, s7, n7, pid - e6, lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK)


def _log(beta: float) -> float:
    """ln beta; -inf for beta 0, where the bias correction 1 - beta**step is 1."""
    return math.log(beta) if beta > 0 else -math.inf


def adam_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
              steps: list[Tensor], lr: float, beta1: float, beta2: float, eps: float) -> None:
    """One Adam step, in place, for contiguous float32 tensors on one device: steps += 1 (one
    multi-tensor add), then one launch per SLOTS tensors."""
    torch._foreach_add_(steps, 1)
    hyper = (lr, beta1, beta2, _log(beta1), _log(beta2), eps)
    tensors = list(zip(params, grads, exp_avgs, exp_avg_sqs, steps))
    for first in range(0, len(tensors), SLOTS):
        chunk = tensors[first:first + SLOTS]
        blocks = sum(triton.cdiv(p.numel(), BLOCK) for p, *_ in chunk)
        if blocks == 0:
            continue
        args = [a for p, *state in chunk for a in (p, *state, p.numel())]
        args += [*chunk[0], 0] * (SLOTS - len(chunk))  # unused slots: no blocks
        _adam_kernel[(blocks,)](*args, *hyper, BLOCK=BLOCK)


class Adam(torch.optim.Adam):
    """torch.optim.Adam whose step is `adam_step` where fastgan's kernels run (CUDA tensors with
    custom ops on; any tensor under TRITON_INTERPRET=1), and torch's own step elsewhere or for
    options the kernel does not have (amsgrad, weight decay, maximize, tensor lr, a grad scaler)."""

    def _kernel_applies(self, group: dict, params: list[Tensor]) -> bool:
        # A GradScaler (fp16) hands a fused optimizer its scale and inf flag as these two attributes,
        # and leaves the unscaling and the skipping of overflowed steps to it.
        scaled = getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None
        plain = not (group["amsgrad"] or group["weight_decay"] or group["maximize"] or isinstance(group["lr"], Tensor)
                     or scaled)
        return plain and bool(params) and use_custom_ops(params[0].device) and runs_triton(params[0]) and all(
            p.dtype == torch.float32 and p.is_contiguous() and p.grad.is_contiguous() and not p.grad.is_sparse
            for p in params)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("fastgan's Adam takes no closure")
        with_grads = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        if not all(self._kernel_applies(group, params) for group, params in zip(self.param_groups, with_grads)):
            return super().step()
        for group, params in zip(self.param_groups, with_grads):
            states = [self._state_for(p) for p in params]
            beta1, beta2 = group["betas"]
            adam_step(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                      [s["exp_avg_sq"] for s in states], [s["step"] for s in states],
                      group["lr"], beta1, beta2, group["eps"])
        return None

    def _state_for(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:  # torch's layout for a fused/capturable Adam: the step count on the device
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state
