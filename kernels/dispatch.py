"""Which implementation the ops use: `--kernels auto|triton|torch`.

- torch:  the plain PyTorch references, autograd by PyTorch (double backward included).
- triton: fastgan's custom ops and analytic formulas everywhere. Their kernels are Triton on CUDA
          tensors (and under TRITON_INTERPRET=1); on other tensors the ops compute their reference
          math, so their autograd formulas are exercised on any machine.
- auto:   triton for CUDA tensors, torch for everything else.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import Tensor

from kernels._triton import AVAILABLE as TRITON_AVAILABLE

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# FASTGAN_AUTOTUNE=0: one fixed config per kernel instead of autotuning (tests: each new shape would
# otherwise compile and time every config).
AUTOTUNE = os.environ.get("FASTGAN_AUTOTUNE", "1") != "0"

BACKENDS = ("auto", "triton", "torch")
_backend = "auto"
_reference_math = False


def set_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose from {', '.join(BACKENDS)}")
    _backend = name


def get_backend() -> str:
    return _backend


def use_custom_ops(device: torch.device) -> bool:
    """Whether fastgan's ops and analytic formulas are used for tensors on `device`."""
    return _backend == "triton" or (_backend == "auto" and device.type == "cuda")


def runs_triton(t: Tensor) -> bool:
    """Whether a custom op launches its Triton kernel for t: on CUDA tensors, and on CPU tensors under
    the interpreter (tests), where triton is installed; otherwise it computes its PyTorch reference."""
    return (t.is_cuda or INTERPRET) and not _reference_math and TRITON_AVAILABLE


@contextlib.contextmanager
def reference_math() -> Iterator[None]:
    """Inside this block the custom ops compute their PyTorch reference even on CUDA, so a benchmark
    can time the same formulas with and without the Triton kernels."""
    global _reference_math
    previous, _reference_math = _reference_math, True
    try:
        yield
    finally:
        _reference_math = previous
