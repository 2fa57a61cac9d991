"""triton, or, where it is not installed (no wheels for macOS or Windows), a stand-in under which the
kernel modules still import: their launches raise, `AVAILABLE` is False, dispatch.runs_triton() says
no, and every op computes its PyTorch reference, so fastgan trains on the CPU there."""
from __future__ import annotations

import inspect
from typing import Any, Callable

try:
    import triton
    import triton.language as tl

    AVAILABLE = True
    # Autotuning results kept on disk beside Triton's compiled kernels, where this Triton can (3.6 and
    # 3.8 can): a new process reuses them instead of timing every config of every shape at start-up.
    AUTOTUNE_CACHE: dict[str, Any] = (
        {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {})
except ImportError:
    import logging

    AVAILABLE = False
    AUTOTUNE_CACHE = {}
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # "Triton not available", once per op

    class _Kernel:
        def __init__(self, fn: Callable):
            self.name = fn.__name__

        def __getitem__(self, grid: Any):
            raise RuntimeError(f"{self.name}: triton is not installed")

    class _Triton:
        @staticmethod
        def jit(fn: Callable) -> _Kernel:
            return _Kernel(fn)

        @staticmethod
        def autotune(**kwargs: Any) -> Callable[[_Kernel], _Kernel]:
            return lambda kernel: kernel

        @staticmethod
        def Config(*args: Any, **kwargs: Any) -> None:  # noqa: N802 (triton's name)
            return None

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-a // b)

    class _Language:
        def __getattr__(self, name: str) -> str:  # tl.float32 and the like in module-level tables
            return name

    triton, tl = _Triton(), _Language()  # type: ignore[assignment]

__all__ = ["AUTOTUNE_CACHE", "AVAILABLE", "tl", "triton"]
