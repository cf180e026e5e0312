"""How often the orientation network (echogen.nets.orient) tells a mirrored view from the standard one, and how
often the geometry test (echogen.data.inputs.apex_at_bottom) tells an apex-down display from an upright one.

    python bench/orientation.py --data data/sim2_3k_test --n 200 [--weights assets/weights/demo]
    python bench/orientation.py --files clip.dcm frame.png ...      # files in the standard view (LV on the right)

Every clip (the TEST split of an EchoNet-format dataset, or each file as the app reads it) is judged as given and
mirrored: as a clip (up to 16 frames, the app's and `ef`'s decision) and frame by frame (a single-frame upload),
as written and after an 8 fps / 16-frame / JPEG q50 export. Prints the wrong decisions and the closest calls; then
the same clips and frames upright and upside down: how many are turned wrongly or left apex-down.
"""
import argparse

import cv2
import numpy as np
import torch

from echogen.data.clips import ef_frames
from echogen.data.echonet import load_video, read_filelist
from echogen.data.inputs import apex_at_bottom, load_frames
from echogen.eval.tracer_eval import Degrade
from echogen.nets.orient import MIRRORED_ABOVE, load_orient, p_mirrored

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default=None)
p.add_argument("--n", type=int, default=200, help="first N TEST videos")
p.add_argument("--files", nargs="*", default=[])
p.add_argument("--weights", default="assets/weights/demo", help="a bundle or orientation .safetensors")
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)
model, _ = load_orient(args.weights)


def clips():
    if args.data:
        for r in [r for r in read_filelist(args.data) if r["Split"] == "TEST"][:args.n]:
            v, fps = load_video(args.data, r["FileName"])
            yield r["FileName"], np.asarray(v), float(r.get("FPS") or fps or 50.0)
    for f in args.files:
        frames, info = load_frames(f)
        yield f, ef_frames(frames, 112), float(info.get("fps") or 25.0)


export = Degrade(fps=8, frames=16, jpeg=50)
stats = {k: [] for k in ("clip", "frame", "clip_export", "frame_export")}     # P(correct) of every decision
turns = {k: [0, 0, 0, 0] for k in stats}      # upright turned, upright judged, apex-down left, apex-down judged
for name, v, fps in clips():
    for cond, (x, _) in (("", (v, fps)), ("_export", export.apply(v, fps))):
        for down, y in ((False, x), (True, np.ascontiguousarray(x[:, ::-1]))):
            for k, items in (("clip", [y]), ("frame", y[np.linspace(0, len(y) - 1, min(8, len(y))).round().astype(int)])):
                for item in items:
                    wrong = apex_at_bottom(item) != down
                    turns[k + cond][2 * down] += int(wrong)
                    turns[k + cond][2 * down + 1] += 1
                    if wrong:
                        print(f"  turn wrong: {name} {'apex-down' if down else 'upright'} ({k + cond})")
        for mirrored, y in ((False, x), (True, np.ascontiguousarray(x[:, :, ::-1]))):
            stats["clip" + cond].append((p_mirrored(model, y), name, mirrored))
            for k in np.linspace(0, len(y) - 1, min(8, len(y))).round().astype(int):
                stats["frame" + cond].append((p_mirrored(model, y[k]), f"{name}[{k}]", mirrored))
print(f"{args.weights}: {args.data or ''} {' '.join(args.files)}; read mirrored back when P(mirrored) > "
      f"{MIRRORED_ABOVE:g}")
for k, rows in stats.items():
    std = np.array([p for p, _, m in rows if not m])
    mir = np.array([p for p, _, m in rows if m])
    margin = sorted(rows, key=lambda r: abs(r[0] - MIRRORED_ABOVE))[:3]
    print(f"{k:>13}: standard {len(std)}: mirrored wrongly {(std > MIRRORED_ABOVE).sum()} (max P {std.max():.2f}); "
          f"mirrored {len(mir)}: left as given {(mir <= MIRRORED_ABOVE).sum()} (min P {mir.min():.2f}); closest to the "
          "threshold " + ", ".join(f"{n}{' mirrored' if m else ''} {p:.2f}" for p, n, m in margin))
print("apex-down (geometry, echogen.data.inputs.apex_at_bottom):")
for k, (ut, un, dl, dn) in turns.items():
    print(f"{k:>13}: upright {un}: turned wrongly {ut}; apex-down {dn}: left apex-down {dl}")
