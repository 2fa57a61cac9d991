"""Kernel tests: natively on a GPU, or on the CPU under Triton's interpreter.

On a machine without CUDA these run in a subprocess with TRITON_INTERPRET=1 (set before triton is
imported), started by tests/test_triton_interpreter.py; the main test run does not collect them.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
