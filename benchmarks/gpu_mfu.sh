#!/bin/bash
# MFU of the base recipe on one accelerator, in bfloat16, at the largest batch that fits.
#
#   benchmarks/gpu_mfu.sh OUT_DIR [BATCH ...]        (default batches: 128 256 512)
#
# CONFIG=configs/cpu_debug.py tries the script on a small config.
#
# For each batch (crops of 2.01 s), `benchmarks.train_step` with configs/default.py in
# bfloat16 (10 timed steps, no FLOP cross-check compile); a batch that does not fit fails alone.
# Then `benchmarks.step_parts` (the profile: each component's forward + backward) at the largest
# batch that ran, and the same train step with the blocks unrolled (scan_layers=False).
# Figures go to OUT_DIR/*.json and *.log; a summary is printed.
set -u
out=${1:?usage: benchmarks/gpu_mfu.sh OUT_DIR [BATCH ...]}
shift
[ $# -gt 0 ] || set -- 128 256 512
batches=("$@")
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
export PYTHONUNBUFFERED=1
common=(--config="${CONFIG:-configs/default.py}" --config.model.dtype=bfloat16)

largest=""
for b in "${batches[@]}"; do
  timeout 180 python -m benchmarks.train_step "${common[@]}" --config.batch_size="$b" \
    --steps=10 --cross_check_flops=False --json="$out/train_step_b$b.json" >"$out/train_step_b$b.log" 2>&1
  rc=$?
  echo "== train_step batch $b: exit $rc"
  grep -E "^(device|batch_size|compile_seconds|step_seconds|examples_per_sec|achieved_flops_per_sec|mfu|peak_memory_gib|model_flops_per_step) " "$out/train_step_b$b.log"
  if [ $rc -eq 0 ]; then largest=$b; else grep -m3 -iE "resource_exhausted|out of memory|error" "$out/train_step_b$b.log"; fi
done
[ -n "$largest" ] || { echo "no batch ran"; exit 1; }

echo "== step_parts at batch $largest"
timeout 240 python -m benchmarks.step_parts "${common[@]}" --config.batch_size="$largest" \
  --repeats=5 --json="$out/step_parts_b$largest.json" >"$out/step_parts_b$largest.log" 2>&1
echo "exit $?"
grep -A12 "^part " "$out/step_parts_b$largest.log"

echo "== train_step batch $largest, blocks unrolled"
timeout 180 python -m benchmarks.train_step "${common[@]}" --config.batch_size="$largest" \
  --config.model.scan_layers=False --steps=10 --cross_check_flops=False \
  --json="$out/train_step_b${largest}_unrolled.json" >"$out/train_step_b${largest}_unrolled.log" 2>&1
echo "exit $?"
grep -E "^(compile_seconds|step_seconds|examples_per_sec|mfu|peak_memory_gib) " "$out/train_step_b${largest}_unrolled.log"
