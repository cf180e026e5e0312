"""Which heart cycle the loop cutter picks from generated clips, and whether it is a whole beat.

    python bench/loop_cycles.py --data data/cal_v1 data/cal_v2 --n 6 --efs 25 45 65 --seeds 2 \
        [--weights assets/weights/demo-fast] [--cache runs/loop_cycles/clips.npz]

Frames: frame 0 of the first N TEST videos of each dataset. Each (frame, EF, seed) is one cascade sample (cached
in --cache, so the cutter can be re-measured without sampling again); its last stage is traced by the LV tracer
of --tracer (echogen.nets.tracer.trace_video), and the loop is cut as the app cuts it (echogen.data.loops.
seamless_loop on the traced LV area). Per clip: the loop's frames and seconds, its share of the clip's LV-area
swing (max - min inside the loop / max - min of the clip: a whole beat holds both end-diastole and end-systole,
so about 1), and the EF traced on the loop (repeated to 3 cycles) against the EF traced on the whole clip.
Prints one row per clip and a summary.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from echogen.data.echonet import load_video, read_filelist
from echogen.data.loops import seamless_loop
from echogen.diffusion.cascade import Cascade
from echogen.nets.tracer import load_tracer, trace_video
from echogen.teaching.gate import tracer_reader

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", nargs="+", required=True)
p.add_argument("--weights", default="assets/weights/demo-fast")
p.add_argument("--tracer", default="assets/weights/demo", help="bundle with the LV tracer that cuts the loops")
p.add_argument("--n", type=int, default=6)
p.add_argument("--efs", type=float, nargs="+", default=[25, 45, 65])
p.add_argument("--seeds", type=int, default=2)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--cache", default="runs/loop_cycles/clips.npz", help="generated clips (written once, then reused)")
args = p.parse_args()
torch.set_num_threads(args.threads)
tracer, tcfg = load_tracer(args.tracer)
area_of = tracer_reader(args.tracer).area          # the LV-area function `generate` and the pools cut loops with

cache = Path(args.cache)
if cache.is_file():
    z = np.load(cache, allow_pickle=False)
    clips, labels, fps = z["clips"], list(z["labels"]), float(z["fps"])
else:
    cascade = Cascade.load(args.weights)
    clips, labels = [], []
    for root in args.data:
        rows = [r for r in read_filelist(root) if r["Split"] == "TEST"][: args.n]
        for r in rows:
            frame = load_video(root, r["FileName"])[0][0].astype(np.float32) / 255
            for ef in args.efs:
                for seed in range(args.seeds):
                    out = cascade.sample(frame, ef, seed=seed)[-1]
                    clips.append((out.video[0, 0].numpy() * 255 + 0.5).astype(np.uint8))
                    labels.append(f"{Path(root).name}/{r['FileName']} EF {ef:g} seed {seed}")
                    fps = out.fps
                    print(labels[-1], flush=True)
    clips = np.stack(clips)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, clips=clips, labels=np.array(labels), fps=fps)


rows = []
for clip, label in zip(clips, labels):
    v = clip.astype(np.float32) / 255
    whole = trace_video(tracer, v, fps, tcfg)
    cut = seamless_loop(v, fps, tracer=area_of)
    a = np.asarray(cut.area, float)
    swing = float(np.ptp(a[cut.start:cut.stop]) / max(np.ptp(a), 1e-9)) if cut.complete else float("nan")
    loop_ef = trace_video(tracer, np.concatenate([cut.video] * 3), fps, tcfg)["ef"] \
        if cut.complete else float("nan")
    rows.append((cut.frames if cut.complete else 0, swing, whole["ef"], loop_ef))
    print(f"{label:44s} loop {cut.frames if cut.complete else '-':>3} fr ({cut.frames / fps if cut.complete else 0:.2f} s) "
          f"swing {swing:.2f} EF loop {loop_ef:5.1f} clip {whole['ef']:5.1f}  {cut.method}", flush=True)

r = np.array(rows, float)
done = r[:, 0] > 0
print(f"\n{len(r)} clips, {done.sum()} cut to one cycle; loop frames median {np.median(r[done, 0]):.0f} "
      f"(min {r[done, 0].min():.0f}); swing < 0.7 in {(r[done, 1] < 0.7).sum()}")
ok = done & np.isfinite(r[:, 2]) & np.isfinite(r[:, 3])
d = r[ok, 3] - r[ok, 2]
print(f"EF loop - clip over {ok.sum()} clips: mean {d.mean():+.1f}, mean |diff| {np.abs(d).mean():.1f}, "
      f"> 10 points in {(np.abs(d) > 10).sum()}")
