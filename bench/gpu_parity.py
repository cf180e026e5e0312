"""CUDA correctness of the speed options (issue 7), on small networks of both families: float32 on the GPU
vs the CPU, bf16 autocast vs float32, torch.compile (inductor) vs eager, with the compile seconds.

    python3 bench/gpu_parity.py --json OUT.json        (run by bench/gpu_check.sh on a lent GPU)

Each row is the relative error ||got - ref|| / ||ref|| of one guided-denoiser call (CFG batch of 2).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from echogen.eval.bench import stage_inputs  # noqa: E402
from echogen.diffusion.cascade import build_denoiser  # noqa: E402
from echogen.config import StageConfig, get_preset, imagen_test_stage  # noqa: E402
from echogen.device import autocast  # noqa: E402
from echogen.diffusion.guidance import GuidedDenoiser  # noqa: E402


def cases() -> dict:
    demo = get_preset("demo")
    return {"imagen base 4x32x32": imagen_test_stage(False, 4, size=32, dim=16, levels=3),
            "imagen SR 16x32x32": imagen_test_stage(True, 16, size=32, dim=16, levels=3),
            "demo base": demo.stages[0], "demo temporal": demo.stages[2]}


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.no_grad()
def check(name: str, st: StageConfig, dev: torch.device) -> dict:
    torch.manual_seed(0)
    den = build_denoiser(st, get_preset("demo").diffusion).eval()
    for p in den.parameters():   # random init zeroes output layers
        p.add_(torch.randn_like(p) * 0.05)
    inp = stage_inputs(st, batch=1)

    def call(d, device, precision="fp32"):
        cond = {k: v.to(device) for k, v in inp["cond"].items()}
        model = GuidedDenoiser(d, cond, st.guidance)
        with autocast(device, precision):
            out = model(inp["x"].to(device) * 0.8, 0.8)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out.cpu()

    ref = call(den, torch.device("cpu"))
    den = den.to(dev)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    row = {"case": name, "cuda_fp32_vs_cpu": rel(call(den, dev), ref)}
    torch.backends.cudnn.allow_tf32 = True     # torch's default for convolutions
    row["cuda_tf32conv_vs_cpu"] = rel(call(den, dev), ref)
    row["cuda_bf16_vs_cpu"] = rel(call(den, dev, "bf16"), ref)
    eager_bf16 = call(den, dev, "bf16")
    den.net.compile(dynamic=False)
    t0 = time.perf_counter()
    first = call(den, dev, "bf16")
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    row["compiled_bf16_vs_eager_bf16"] = rel(first, eager_bf16)
    row["compiled_bf16_vs_cpu"] = rel(call(den, dev, "bf16"), ref)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    rows = []
    for name, st in cases().items():
        try:
            rows.append(check(name, st, dev))
        except Exception as e:   # noqa: BLE001  (report every case, then fail below)
            rows.append({"case": name, "error": f"{type(e).__name__}: {e}"[:2000]})
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
