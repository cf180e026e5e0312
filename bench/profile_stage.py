"""Where a stage's forward spends its time: torch.profiler, grouped by op, for one EchoGen stage.

    .venv/bin/python bench/profile_stage.py --preset demo --stage base [--frames N] [--threads 1]
    .venv/bin/python bench/profile_stage.py --preset 2SCM --stage spatiotemporal --frames 4 --shapes

glibc's malloc is tuned as `python -m echogen` tunes it (echogen.device.tune_cpu_malloc) unless
--default-malloc.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from echogen.eval.bench import stage_inputs  # noqa: E402
from echogen.diffusion.cascade import build_denoiser  # noqa: E402
from echogen.config import get_preset  # noqa: E402
from echogen.diffusion.guidance import GuidedDenoiser  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--stage", default="base")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--shapes", action="store_true", help="also the top ops grouped by input shape")
    ap.add_argument("--default-malloc", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not a.default_malloc:
        from echogen.device import tune_cpu_malloc
        tune_cpu_malloc()
    cfg = get_preset(a.preset)
    st = cfg.stage(a.stage)
    den = build_denoiser(st, cfg.diffusion).eval()
    inp = stage_inputs(st, 1, a.frames)
    model = GuidedDenoiser(den, inp["cond"], st.guidance, st.dynamic_threshold)
    with torch.no_grad():
        model(inp["x"], 1.0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=a.shapes) as prof:
            for _ in range(3):
                model(inp["x"], 1.0)
    print(f"# {a.preset}/{a.stage} frames {a.frames or st.frames}, threads {a.threads}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    if a.shapes:
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
