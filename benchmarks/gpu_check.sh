#!/usr/bin/env bash
# Everything a session with a GPU should run, in one call from the repository root (about 5 minutes):
#   OUT=results bash benchmarks/gpu_check.sh
# 1. the GPU tests: Triton kernels natively (all dtypes, large M), the ops and penalties, graph and
#    compile modes against eager, no host sync in the step;
# 2. the throughput table against the seed's loop (batch 64: eager, graph; large-batch bf16 graph);
# 3. compile-mode rows (slowest to warm up, so last) and a subset of the kernel benchmarks.
# Results, logs and the card's name land in $OUT. Without CUDA it still runs end to end: the
# CUDA-only tests are skipped and the table has CPU rows.
set -uo pipefail
OUT=${OUT:-gpu_check_results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. PYTHONUNBUFFERED=1
status=0
if python3 -c "import torch; raise SystemExit(not torch.cuda.is_available())"; then
  large="--batch 16384 32768"
else
  large="--batch 1024"  # a CPU: small sizes
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, triton, accelerate; print('torch', torch.__version__, 'triton', triton.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"

echo "== tests" | tee -a "$OUT/log.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider -x --maxfail=5 tests/triton tests/test_kernel_ops.py \
  tests/test_penalties.py tests/test_modes.py 2>&1 | tee "$OUT/tests.txt" || status=1

echo "== throughput, batch 64 and large-batch graph" | tee -a "$OUT/log.txt"
timeout 120 python3 -m benchmarks.throughput --gan gan wgan_gp --mode eager graph --seconds 0.5 \
  --json "$OUT/throughput_64.json" 2>&1 | tee -a "$OUT/log.txt" || status=1
timeout 90 python3 -m benchmarks.throughput --gan gan --mode graph --precision no bf16 $large --seconds 0.5 \
  --no-reference --json "$OUT/throughput_large.json" 2>&1 | tee -a "$OUT/log.txt" || status=1

echo "== compile mode" | tee -a "$OUT/log.txt"
timeout 150 python3 -m benchmarks.throughput --gan gan wgan_gp --mode compile --seconds 0.5 --no-reference \
  --json "$OUT/throughput_compile.json" 2>&1 | tee -a "$OUT/log.txt" || status=1

exit $status
