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
    """Accelerate keeps one device and precision per process, and fastgan.train allows TF32 for the
    process; a test that changes them (bf16, a GPU, a run in this process) must not leave them to the
    next (a CUDA test comparing fp32 numbers would get TF32 products)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    AcceleratorState._reset_state(True)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """256 real training digits in IDX files: 8 steps per epoch at batch 32."""
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=256)
