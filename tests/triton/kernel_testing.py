"""Where the kernel tests run: CUDA if present, else the CPU under Triton's interpreter."""
import os

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
