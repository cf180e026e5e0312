#!/usr/bin/env bash
# Side environment for the reference implementation (lucidrains/imagen-pytorch 1.22.2, the code the
# paper was built on). It is a benchmark, not a dependency: EchoGen never imports it.
#   bash bench/setup_reference_env.sh            -> /work/main/.ref-venv (gitignored)
#   REF_VENV=/some/dir bash bench/setup_reference_env.sh
# All wheels come from this machine's local stores (pip is configured with them). ~2 minutes.
# omegaconf 2.2.3 is the authors' pin: their scripts read every config with it (bench/make_parity_fixtures.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${REF_VENV:-$ROOT/.ref-venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 imagen-pytorch==1.22.2 omegaconf==2.2.3
# EchoGen's own imports (echogen.nets.unet / config / layers) need only torch, einops, numpy, safetensors.
"$VENV/bin/pip" install -q numpy einops safetensors
# Check: both packages import side by side (imagen reads a T5 config from the hub at import time;
# bench/reference.py patches that, see /work/shared/ECOSYSTEM.md).
PYTHONPATH="$ROOT" "$VENV/bin/python" - <<'PY'
import transformers
transformers.T5Config.from_pretrained = staticmethod(lambda *a, **k: transformers.T5Config(d_model=768))
import torch, imagen_pytorch
from imagen_pytorch.imagen_video import Unet3D
import echogen.nets.unet
from importlib.metadata import version
print("reference env ok: torch", torch.__version__, "imagen-pytorch", version("imagen-pytorch"))
PY
