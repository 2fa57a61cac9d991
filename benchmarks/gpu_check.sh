#!/usr/bin/env bash
# Everything a session with a GPU should run, in one call from the repository root:
#   OUT=results bash benchmarks/gpu_check.sh
# 1. the kernel tests natively on the GPU (all dtypes, large M) and the CPU-suite files that touch
#    the kernels, the penalty and the variants; 2. the kernel benchmarks (a subset that fits in a few
#    minutes). Results and the card's name land in $OUT. On a machine without CUDA it still runs end
#    to end: the CUDA-only tests and rows are skipped.
set -uo pipefail
OUT=${OUT:-gpu_check_results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.
status=0

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

timeout 240 python3 -m pytest -q -p no:cacheprovider tests/triton tests/test_kernel_ops.py tests/test_penalties.py \
  tests/test_variants.py 2>&1 | tee "$OUT/tests.txt" || status=1

timeout 240 python3 -m pytest -q -p no:cacheprovider benchmarks/test_kernels.py \
  -k "wgan_gp or (bf16 and (M64- or M8192 or M65536))" \
  --benchmark-max-time=0.2 --benchmark-columns=median,rounds --benchmark-group-by=group \
  --benchmark-json="$OUT/kernels.json" 2>&1 | tee "$OUT/benchmarks.txt" || status=1

exit $status
