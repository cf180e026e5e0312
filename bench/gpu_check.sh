#!/usr/bin/env bash
# Issue 7's GPU checks as ONE prepared run (a lent GPU has ~15 minutes, start included). From the repo root:
#   OUT=/some/folder bash bench/gpu_check.sh        # the device tool sets OUT
# Needs only torch, numpy, einops, safetensors, tqdm (the device image has them; no gradio/pydicom).
# Writes under $OUT: env.txt, log.txt and results.json, which holds each step's JSON under its name: parity,
# <preset>_<precision> per paper preset (112x112, the preset's full frame counts), 2SCM_bf16_compiled
# (merged after every step: the device tool returns at most 8 files). Steps run in order of importance, each under its own
# time limit cut to what is left of BUDGET seconds (default 540, inside the device tool's 600 s per command);
# a step that would get under 20 s is skipped. The JSON of finished steps is kept.
# The paper presets are the networks the authors trained (issue 20): EF cross-attention at every level of
# 1SCM, 2SCM and 4SCM's first three stages (18.74 / 19.04 / 28.06 M parameters), none outside the bottleneck
# in 4SCM spatial (19.80 M). GPU numbers taken before that change are for other networks.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for the results}
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PARTS=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

BUDGET=${BUDGET:-540}
step() {  # step SECONDS NAME command...
  local limit=$1 name=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo "=== $name: skipped, ${left}s of the budget left"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "=== $name: rc $rc in $((SECONDS - t0)) s"
  $PY -c "import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); pathlib.Path(sys.argv[2]).write_text(json.dumps(
{p.stem: json.loads(p.read_text()) for p in sorted(d.glob('*.json'))}, indent=1))" "$PARTS" "$OUT/results.json"
}

{ nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  date -u; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

bench() {  # bench LIMIT PRESET PRECISION [extra args]
  local limit=$1 preset=$2 prec=$3; shift 3
  step "$limit" "$preset $prec $*" $PY -m echogen bench --preset "$preset" --device cuda --precision "$prec" \
    --repeats 3 --warmup 1 "$@" --json "$PARTS/${preset}_${prec}.json"
}
# 0. the presets are the trained networks (parameter counts and cross-attention levels; seconds, CPU)
step 60 presets $PY - "$PARTS/presets.json" <<'PYEOF'
import json, sys
from echogen.diffusion.cascade import build_denoiser
from echogen.config import get_preset
want = {"1SCM": [18743800], "2SCM": [19039360, 28060090], "4SCM": [19039360, 28060090, 28060090, 19803409]}
out = {}
for name, counts in want.items():
    c = get_preset(name)
    got = [sum(p.numel() for p in build_denoiser(s, c.diffusion).net.parameters()) for s in c.stages]
    out[name] = {"params": got, "expected": counts, "ok": got == counts,
                 "cross_attn": [s.network_options["layer_cross_attns"] for s in c.stages]}
    print(name, out[name])
json.dump(out, open(sys.argv[1], "w"))
sys.exit(0 if all(v["ok"] for v in out.values()) else 1)
PYEOF
# 1. seconds per video of each paper preset at the default precision (bf16 autocast), one measured whole video
bench 90 1SCM bf16 --no-e2e
bench 180 2SCM bf16 --e2e
bench 90 4SCM bf16 --no-e2e
# 2. correctness of the options on small networks (float32 GPU vs CPU, bf16, inductor)
step 120 parity $PY bench/gpu_parity.py --json "$PARTS/parity.json"
# 3. float32 for comparison, then torch.compile on the 2SCM cascade
for preset in 1SCM 2SCM 4SCM; do bench 90 $preset fp32 --no-e2e; done
step 180 "2SCM bf16 compiled" $PY -m echogen bench --preset 2SCM --device cuda --precision bf16 --compile \
  --repeats 5 --warmup 2 --no-e2e --no-memory --json "$PARTS/2SCM_bf16_compiled.json"
echo "done $(date -u +%H:%M:%S)"
