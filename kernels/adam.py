"""Adam as one Triton launch over every parameter of a network; its reference is torch.optim.Adam.

At batch 64 the optimizer step is a measured cost: torch's fused Adam walks the tensors in chunks of
65,536 elements, one thread block each, so G's 1.9 M parameters keep ~30 of an H100's 132 SMs busy
and D's 0.27 M about 5 (DESIGN.md: 68–87 µs for both against a ~15 µs bandwidth floor). This kernel
gives every BLOCK elements of every tensor its own program: the whole network in one launch, as
many programs as the memory traffic needs.

The tensors are passed as tuples (one pointer each, no copy into a flat buffer) and the block
layout is compile-time, so the kernel is specialised to a network's shapes. Math and state follow
torch's fused Adam (`exp_avg`, `exp_avg_sq`, a float32 `step` per parameter on the device), so
checkpoints are interchangeable with torch.optim.Adam and the step is CUDA-graph capturable.
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
def _adam_kernel(params, grads, exp_avgs, exp_avg_sqs, steps,
                 starts: tl.constexpr, numels: tl.constexpr, N_TENSORS: tl.constexpr,
                 lr, beta1, beta2, log_beta1, log_beta2, eps, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    for i in tl.static_range(N_TENSORS):  # programs starts[i] .. starts[i+1]-1 update tensor i
        if (pid >= starts[i]) & (pid < starts[i + 1]):
            offs = (pid - starts[i]) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < numels[i]
            p = tl.load(params[i] + offs, mask=mask)
            g = tl.load(grads[i] + offs, mask=mask).to(tl.float32)
            m = tl.load(exp_avgs[i] + offs, mask=mask)
            v = tl.load(exp_avg_sqs[i] + offs, mask=mask)
            step = tl.load(steps[i])  # already incremented for this step
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            bias_correction1 = 1 - tl.exp(step * log_beta1)  # 1 - beta1 ** step
            bias_correction2 = 1 - tl.exp(step * log_beta2)
            denom = tl.sqrt(v) / tl.sqrt(bias_correction2) + eps
            p = p - (lr / bias_correction1) * m / denom
            tl.store(params[i] + offs, p, mask=mask)
            tl.store(exp_avgs[i] + offs, m, mask=mask)
            tl.store(exp_avg_sqs[i] + offs, v, mask=mask)


def adam_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
              steps: list[Tensor], lr: float, beta1: float, beta2: float, eps: float) -> None:
    """One Adam step, in place, for contiguous float32 tensors on one device: steps += 1, then one launch."""
    torch._foreach_add_(steps, 1)
    starts = [0]
    for p in params:
        starts.append(starts[-1] + triton.cdiv(p.numel(), BLOCK))
    _adam_kernel[(starts[-1],)](
        tuple(params), tuple(grads), tuple(exp_avgs), tuple(exp_avg_sqs), tuple(steps),
        tuple(starts), tuple(p.numel() for p in params), len(params),
        lr, beta1, beta2, math.log(beta1), math.log(beta2), eps, BLOCK=BLOCK,
    )


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
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not self._kernel_applies(group, params, kwargs):
                return super().step(**kwargs)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
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
