"""Adam as Triton launches sized to the memory traffic; its reference is torch.optim.Adam.

At batch 64 the optimizer step is a measured cost: torch's fused Adam walks the tensors in chunks of
65,536 elements, one thread block each, so G's 1.9 M parameters keep ~30 of an H100's 132 SMs busy
and D's 0.27 M about 5 (DESIGN.md: 68–87 µs for both against a ~15 µs bandwidth floor). Here every
BLOCK elements of a tensor get their own program: one launch per parameter tensor (a network's
weights and biases: six for the MLP G). One launch per network would need tuple or pointer-table
arguments; tuples of tensors fail to bind in Triton 3.6 (measured on the H200 image), and a table
of addresses would be a host-to-device copy every step.

Math and state follow torch's fused Adam (`exp_avg`, `exp_avg_sq`, a float32 `step` per parameter
on the device), so checkpoints are interchangeable with torch.optim.Adam and the step is
CUDA-graph capturable.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.dispatch import runs_triton, use_custom_ops

BLOCK = 1024


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
def _adam_kernel(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, step_ptr, numel,
                 lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
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


def adam_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
              steps: list[Tensor], lr: float, beta1: float, beta2: float, eps: float) -> None:
    """One Adam step, in place, for contiguous float32 tensors on one device: steps += 1 (one
    multi-tensor add), then one launch per tensor."""
    torch._foreach_add_(steps, 1)
    log_beta1, log_beta2 = math.log(beta1), math.log(beta2)
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        _adam_kernel[(triton.cdiv(p.numel(), BLOCK),)](p, g, m, v, step, p.numel(), lr, beta1, beta2,
                                                      log_beta1, log_beta2, eps, BLOCK=BLOCK)


class Adam(torch.optim.Adam):
    """torch.optim.Adam whose step is `adam_step` where fastgan's kernels run (CUDA tensors with
    custom ops on; any tensor under TRITON_INTERPRET=1), and torch's own step elsewhere or for
    options the kernel does not have (amsgrad, weight decay, maximize, tensor lr, a grad scaler)."""

    def _kernel_applies(self, group: dict, params: list[Tensor], kwargs: dict) -> bool:
        plain = not (group["amsgrad"] or group["weight_decay"] or group["maximize"] or isinstance(group["lr"], Tensor)
                     or kwargs)
        return plain and bool(params) and use_custom_ops(params[0].device) and runs_triton(params[0]) and all(
            p.dtype == torch.float32 and p.is_contiguous() and p.grad.is_contiguous() and not p.grad.is_sparse
            for p in params)

    @torch.no_grad()
    def step(self, closure=None, **kwargs):  # kwargs: grad_scale / found_inf from a GradScaler
        if closure is not None:
            raise ValueError("fastgan's Adam takes no closure")
        with_grads = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        if not all(self._kernel_applies(group, params, kwargs) for group, params in zip(self.param_groups, with_grads)):
            return super().step(**kwargs)
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
