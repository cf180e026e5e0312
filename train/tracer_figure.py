"""Figure: the LV tracer's contour on frames of one or more clips, with the LV volume curve and ED / ES.

  python train/tracer_figure.py --tracer runs/tracer/tracer.safetensors --out docs/tracer_example.png \
      --video clip1.avi [--video clip2.dcm ...] [--title "..." ...]
"""
import argparse
import sys
from pathlib import Path


import cv2  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from echogen.data.clips import read_frames, to_model_frames  # noqa: E402
from echogen.eval.lv_volume import disks_from_mask  # noqa: E402
from echogen.nets.tracer import load_tracer, trace_video  # noqa: E402


def overlay(frame: np.ndarray, prob: np.ndarray, thr: float) -> np.ndarray:
    img = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_NEAREST)
    m = cv2.resize((prob >= thr).astype(np.uint8), (224, 224), interpolation=cv2.INTER_NEAREST)
    cnt, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, cnt, -1, (255, 40, 40), 1)
    d = disks_from_mask(prob)
    if d is not None:
        a, b = np.array(d["apex"]) * 2 + 0.5, np.array(d["base"]) * 2 + 0.5
        cv2.line(img, tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b), (255, 220, 0), 1)
    return img


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracer", required=True)
    p.add_argument("--video", action="append", required=True)
    p.add_argument("--title", action="append", default=[])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    model, cfg = load_tracer(args.tracer)
    n = len(args.video)
    fig, axes = plt.subplots(n, 4, figsize=(13, 3.4 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    for row, path in enumerate(args.video):
        raw, fps = read_frames(Path(path))
        frames = to_model_frames(raw, cfg.size)
        res = trace_video(model, frames, fps if fps > 0 else 25.0)
        idx = res["frames"]
        title = args.title[row] if row < len(args.title) else Path(path).name
        picks = [("ED", res["ed"]), ("ES", res["es"])] if res["ed"] >= 0 else [("frame 0", 0), ("middle", len(idx) // 2)]
        picks.append(("last", len(idx) - 1))
        for k, (lab, i) in enumerate(picks):
            ax = axes[row, k]
            ax.imshow(overlay(frames[idx[i]], res["probs"][i], cfg.threshold))
            ax.set_title(f"{lab} (frame {idx[i]})", fontsize=9)
            ax.axis("off")
        ax = axes[row, 3]
        t = np.arange(len(idx)) / res["fps"]
        ax.plot(t, res["volume"] / 1000.0, "k-", lw=1.2, label="LV volume (method of disks)")
        for ed, es, _ in res["beats"]:
            ax.axvline(t[ed], color="tab:red", lw=0.8)
            ax.axvline(t[es], color="tab:blue", lw=0.8)
        ef = "failed: " + res["failed"] if res["failed"] else f"EF {res['ef']:.1f} % (tracing)"
        ax.set_title(f"{title}\n{ef}, confidence {res['confidence']:.2f}", fontsize=8)
        ax.set_xlabel("s (red ED, blue ES)")
        ax.set_ylabel("10^3 px^3")
    meta = getattr(model, "meta", {})
    fig.suptitle(f"LV tracer trained on {meta.get('trained_on', '?')} (step {meta.get('steps', '?')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
