from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState

from helpers import write_mnist_dir

# Kernel tests need CUDA or Triton's interpreter, which must be switched on before triton is
# imported: without CUDA they run in their own process (test_triton_interpreter.py).
collect_ignore = [] if torch.cuda.is_available() else ["triton"]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one device and precision per process; a test that picks its own (bf16, a
    GPU) must not leave it to the next."""
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """256 real training digits in IDX files: 8 steps per epoch at batch 32."""
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=256)
