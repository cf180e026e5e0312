#!/usr/bin/env bash
# Train the bundled `demo` cascade, the EF regressor, the LV tracer and the orientation network on simulator v2,
# on the CPU.
# Every job fine-tunes from the shipped bundle (--init-from: the bundle alone is enough to continue) with
# wide domain randomisation, and is resumable: run it again and every job continues from its last
# checkpoint in $RUNS. Each job stops after MINUTES (default: no limit) with a checkpoint, so it can be
# spread over several sessions. Exports go to a candidate bundle ($RUNS/bundle); it replaces assets/weights/demo
# only after `python -m echogen evaluate` shows it is better (docs/RESULTS.md).
#   bash train/train_demo.sh            # everything, in sequence
#   STAGES="regressor tracer" MINUTES=60 bash train/train_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/sim2_1k}
VIDEOS=${VIDEOS:-1000}
RUNS=${RUNS:-runs/demo_v2}
INIT=${INIT:-assets/weights/demo}        # every job starts from this bundle's weights
BUNDLE=${BUNDLE:-$RUNS/bundle}            # a candidate bundle: evaluate it before it replaces the shipped one
MINUTES=${MINUTES:-0}
STAGES=${STAGES:-"regressor tracer orientation base spatial temporal"}
THREADS=${THREADS:-0}
# total optimiser steps per job (batch sizes come from the presets)
declare -A STEPS=([regressor]=4000 [tracer]=3000 [orientation]=4000 [base]=4000 [spatial]=2000 [temporal]=1500)

if [ ! -f "$BUNDLE/manifest.json" ]; then mkdir -p "$(dirname "$BUNDLE")" && cp -r "$INIT" "$BUNDLE"; fi
if [ ! -f "$DATA/FileList.csv" ]; then   # deterministic: the same seed writes the same videos
  $PY -m echogen phantom --out "$DATA" --videos "$VIDEOS" --seed 2026 --workers 2 --masks
fi
for job in $STAGES; do
  if [ "$job" = regressor ]; then
    $PY train/train_regressor.py --data "$DATA" --preset small --out "$RUNS/regressor" --bundle "$BUNDLE" \
      --init-from "$INIT" --steps "${STEPS[$job]}" --minutes "$MINUTES" --threads "$THREADS" --lr 3e-4 \
      --eval-every 250 --val-videos 100 --augment wide
  elif [ "$job" = tracer ]; then
    $PY train/train_tracer.py --data "$DATA" --out "$RUNS/tracer" --bundle "$BUNDLE" \
      --steps "${STEPS[$job]}" --minutes "$MINUTES" --threads "$THREADS"
  elif [ "$job" = orientation ]; then     # from scratch (it learns in minutes); session 17 used data/reg_mix4
    $PY train/train_orient.py --data "$DATA" --out "$RUNS/orientation" --bundle "$BUNDLE" \
      --steps "${STEPS[$job]}" --minutes "$MINUTES" --threads "$THREADS"
  else
    extra=""; [ "$job" != base ] && extra="--max-videos 600"
    $PY train/train_stage.py --data "$DATA" --preset demo --stage "$job" --out "$RUNS/$job" --bundle "$BUNDLE" \
      --init-from "$INIT" --steps "${STEPS[$job]}" --minutes "$MINUTES" --threads "$THREADS" --lr 2e-4 $extra
  fi
done
