#!/usr/bin/env bash
# One device call: issue 7's GPU checks (bench/gpu_check.sh, BUDGET seconds), then issue 25's synth throughput on
# the GPU (bench/synth_overhead.py, and `echogen synth` under torchrun with one rank: one GPU here).
#   OUT=/some/folder BUDGET=450 bash bench/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-450} bash bench/gpu_check.sh
echo "=== synth overhead $(date -u +%H:%M:%S)"
timeout 70 python3 bench/synth_overhead.py --weights assets/weights/demo-fast --frames assets/examples --n 12 \
  --device cuda --json "$OUT/synth_overhead.json" 2>&1 | tee "$OUT/synth.txt"
echo "=== torchrun synth $(date -u +%H:%M:%S)"
timeout 70 torchrun --nproc_per_node=1 -m echogen -- synth --weights assets/weights/demo-fast --frames assets/examples \
  --n 32 --samples-per-frame 8 --ef uniform:10,90 --out /tmp/synth_gpu --device cuda 2>&1 | grep -v "synth r0" \
  | tee -a "$OUT/synth.txt"
echo "done $(date -u +%H:%M:%S)"
