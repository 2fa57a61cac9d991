"""Runs tests/triton under Triton's CPU interpreter in a fresh process (TRITON_INTERPRET=1 must be
set before triton is imported). On a machine with CUDA the main run collects tests/triton itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests/triton runs natively on this GPU machine")
def test_triton_kernels_under_the_interpreter():
    here = Path(__file__).parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "triton")],
        capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=here.parent, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
