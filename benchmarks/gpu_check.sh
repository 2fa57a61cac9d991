#!/usr/bin/env bash
# Everything a session with a GPU should run, in one call from the repository root (at most 580 s
# of steps; give the call a 600 s limit):
#   OUT=results bash benchmarks/gpu_check.sh
# 1. the GPU tests: Triton kernels natively (all dtypes, large M), the ops and penalties, graph and
#    compile modes against eager, no host sync in the step;
# 2. the throughput table against the seed's loop: gan and wgan_gp eager and graph at batch 64;
# 3. the seed's command end to end (50 epochs of 60,000 at batch 64) for gan and wgan_gp;
# 4. gan's graph at large batch in bf16 and fp32, then the other variants in graph mode;
# 5. a kernel profile of gan's and wgan_gp's graphed iteration at batch 64 ($OUT/profile_*/kernels.txt).
# Each step has its own time limit (they add up to 580 s), most wanted first.
# Compile-mode rows are slow to warm up (inductor compiles each loss and its backward); run them apart:
#   python3 -m benchmarks.throughput --mode compile
# Results, logs and the card's name land in $OUT. Without CUDA it still runs end to end: the
# CUDA-only tests are skipped and the table has CPU rows.
set -uo pipefail
OUT=${OUT:-gpu_check_results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}. PYTHONUNBUFFERED=1
export TRITON_CACHE_AUTOTUNING=1  # autotuning results on disk: each benchmark process reuses the last one's
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
# One fixed kernel config (FASTGAN_AUTOTUNE=0): autotuning every test shape would take the budget.
parallel=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
FASTGAN_AUTOTUNE=0 timeout 150 python3 -m pytest -q -p no:cacheprovider $parallel --maxfail=10 tests/triton \
  tests/test_kernel_ops.py tests/test_penalties.py tests/test_modes.py 2>&1 | tee "$OUT/tests.txt" || status=1

echo "== throughput: batch 64 against the seed's loop" | tee -a "$OUT/log.txt"
# (An H200 run with 75 s here finished only gan's rows: warm-up, capture and autotuning dominate.)
timeout 150 python3 -m benchmarks.throughput --gan gan wgan_gp --mode eager graph --seconds 0.3 \
  --json "$OUT/throughput_64.json" 2>&1 | tee -a "$OUT/log.txt" || status=1

echo "== the seed's command end to end" | tee -a "$OUT/log.txt"
if python3 -c "import torch; raise SystemExit(not torch.cuda.is_available())"; then seed="--epochs 50"; else seed="--epochs 1 --images 640"; fi
timeout 70 python3 -m benchmarks.seed_command --gan gan wgan_gp $seed --json "$OUT/seed_command.json" \
  > "$OUT/seed_command.log" 2>&1 || status=1
grep -E "^[a-z_]+: [0-9]+ epochs" "$OUT/seed_command.log" | tee -a "$OUT/log.txt"

echo "== throughput: large-batch graph, then the other variants" | tee -a "$OUT/log.txt"
timeout 60 python3 -m benchmarks.throughput --gan gan --mode graph --precision bf16 no $large --seconds 0.3 \
  --no-reference --json "$OUT/throughput_large.json" 2>&1 | tee -a "$OUT/log.txt" || status=1
timeout 90 python3 -m benchmarks.throughput --gan lsgan wgan dragan cgan acgan ebgan began infogan --mode graph \
  --seconds 0.2 --no-reference --json "$OUT/throughput_variants.json" 2>&1 | tee -a "$OUT/log.txt" || status=1

echo "== profile: where a batch-64 iteration's time goes" | tee -a "$OUT/log.txt"
for gan in gan wgan_gp; do
  timeout 30 python3 -m benchmarks.profile_step --gan $gan --iterations 20 --out "$OUT/profile_$gan" \
    > "$OUT/profile_$gan.log" 2>&1 || status=1
  head -3 "$OUT/profile_$gan/kernels.txt" 2>/dev/null | tee -a "$OUT/log.txt"
done

exit $status
