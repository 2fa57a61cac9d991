"""Which implementation the ops use: `--kernels auto|triton|torch`.

- torch:  the plain PyTorch references, autograd by PyTorch (double backward included).
- triton: fastgan's custom ops and analytic formulas everywhere. Their kernels are Triton on CUDA
          tensors (and under TRITON_INTERPRET=1); on other tensors the ops compute their reference
          math, so their autograd formulas are exercised on any machine.
- auto:   triton for CUDA tensors, torch for everything else.
"""
from __future__ import annotations

from torch import Tensor

BACKENDS = ("auto", "triton", "torch")
_backend = "auto"


def set_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose from {', '.join(BACKENDS)}")
    _backend = name


def get_backend() -> str:
    return _backend


def use_custom_ops(t: Tensor) -> bool:
    return _backend == "triton" or (_backend == "auto" and t.is_cuda)
