"""Realism statistics: real apical echo DICOM(s) vs phantom v1 vs phantom v2 (issue 19, item 1).

    python bench/sim_realism.py [--videos 12] [--frames 6] [--dicom extra.dcm ...] \
        [--fig docs/sim_vs_real.png] [--json out.json]

Every frame is taken at 112x112 (real DICOM frames through `echogen.data.inputs.prepare_array`, the app's
own preparation; phantom frames as written). Per frame, inside the sector (convex hull of the pixels lit in
any frame of the clip, eroded 3 px; beam geometry = apex from the two straight sector edges):
- intensity: mean, sd, 10/50/90th percentiles of the grey levels inside the sector;
- speckle size: full width at half maximum of the autocorrelation of the high-passed image
  (I - Gaussian(I, 3 px)) along the beam (radial) and across it (tangential), over tissue pixels
  (local mean > 20) at 15-90 % of the depth, in screen px;
- blood/myocardium contrast (no labels on the real clip, so one label-free rule for all): on the image
  smoothed with a 2 px Gaussian over the sector core, "tissue" = mean above the 80th percentile,
  "blood" = mean below the 20th, Michelson (t - b) / (t + b) and the difference t - b in grey levels;
- sharpness with depth: mean gradient magnitude / mean intensity in the near, mid and far third of the
  15-90 % depth range, and the far/near ratio; mean intensity far/near.
Only pydicom's examples_ybr_color.dcm (SonoSite, apical 4-chamber, 30 frames) is a cardiac clip among
the DICOMs at hand: pydicom-data's ultrasound files are small-parts, abdominal and obstetric, pass
them with --dicom to see them, they are not cardiac references. No EchoNet-Dynamic clip is used.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np


METRICS = [  # key, label, higher-level group
    ("mean", "mean grey (sector)"), ("sd", "sd grey"), ("p10", "10th pct"), ("p50", "median"),
    ("p90", "90th pct"), ("speckle_ax", "speckle FWHM along beam (px)"),
    ("speckle_lat", "speckle FWHM across beam (px)"), ("michelson", "tissue/blood Michelson"),
    ("t_minus_b", "tissue - blood (grey)"), ("sharp_near", "sharpness near"), ("sharp_mid", "sharpness mid"),
    ("sharp_far", "sharpness far"), ("sharp_far_near", "sharpness far/near"),
    ("bright_far_near", "brightness far/near"),
]


def sector_mask(frames: np.ndarray) -> np.ndarray:
    m = (frames.max(0) > 3).astype(np.uint8)
    n, lab, st, _ = cv2.connectedComponentsWithStats(m)
    if n > 1:
        m = (lab == 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    hull = cv2.convexHull(cv2.findNonZero(m))  # a sector is convex: dark regions inside it count
    m = np.zeros_like(m)
    cv2.fillConvexPoly(m, hull, 1)
    return cv2.erode(m, np.ones((7, 7), np.uint8))


def apex_of(mask: np.ndarray) -> tuple[float, float, float]:
    """(x, y, radius) of the sector: lines through its left and right edges in its upper 60 %."""
    ys = np.nonzero(mask.any(1))[0]
    y0, y1 = ys.min(), ys.max()
    rows = np.arange(y0, y0 + int(0.6 * (y1 - y0)) + 1)
    left = np.array([np.nonzero(mask[y])[0].min() for y in rows])
    right = np.array([np.nonzero(mask[y])[0].max() for y in rows])
    try:
        bl, al = np.polyfit(rows, left, 1)
        br, ar = np.polyfit(rows, right, 1)
        y = (ar - al) / (bl - br) if abs(bl - br) > 0.05 else y0 - 5.0
        x = al + bl * y
        if not (-60 < y <= y0 + 2):
            raise ValueError
    except (ValueError, np.linalg.LinAlgError):
        x, y = float(np.mean(np.nonzero(mask[y0])[0])), float(y0 - 2)
    yy, xx = np.nonzero(mask)
    return float(x), float(y), float(np.percentile(np.hypot(xx - x, yy - y), 99))


def _autocorr_width(hp, pts, dirs, lags):
    """FWHM (px) of the correlation of hp at pts with hp shifted along dirs."""
    x0 = pts[:, 0].astype(np.float32)[None]
    y0 = pts[:, 1].astype(np.float32)[None]
    a = hp[pts[:, 1], pts[:, 0]].astype(np.float64)
    a = a - a.mean()
    rho = []
    for lag in lags:
        mx = (x0 + lag * dirs[:, 0][None]).astype(np.float32)
        my = (y0 + lag * dirs[:, 1][None]).astype(np.float32)
        b = cv2.remap(hp, mx, my, cv2.INTER_LINEAR)[0].astype(np.float64)
        b = b - b.mean()
        rho.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12)))
    rho = np.array(rho)
    k = int(np.argmax(rho < 0.5)) if (rho < 0.5).any() else len(rho) - 1
    if k == 0:
        return 0.0
    l0, l1, r0, r1 = lags[k - 1], lags[k], rho[k - 1], rho[k]
    return float(2 * (l0 + (r0 - 0.5) * (l1 - l0) / max(r0 - r1, 1e-9)))


def frame_stats(img: np.ndarray, mask: np.ndarray, apex) -> dict:
    """Statistics of one uint8 (112, 112) frame inside its sector mask."""
    f = img.astype(np.float32)
    ax, ay, R = apex
    yy, xx = np.mgrid[:f.shape[0], :f.shape[1]].astype(np.float32)
    r = np.hypot(xx - ax, yy - ay)
    inside = mask > 0
    v = f[inside]
    out = {"mean": float(v.mean()), "sd": float(v.std()), "p10": float(np.percentile(v, 10)),
           "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90))}
    out["hist"] = np.histogram(v, bins=32, range=(0, 256))[0] / len(v)
    core = inside & (r > 0.15 * R) & (r < 0.9 * R)
    # speckle size along / across the beam
    hp = f - cv2.GaussianBlur(f, (0, 0), 3.0)
    local = cv2.GaussianBlur(f, (0, 0), 3.0)
    sel = core & (local > 20) & (cv2.erode(mask, np.ones((9, 9), np.uint8)) > 0)
    ys, xs = np.nonzero(sel)
    if len(xs) > 50:
        pts = np.stack([xs, ys], 1)
        d = np.stack([xs - ax, ys - ay], 1).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-6
        t = np.stack([-d[:, 1], d[:, 0]], 1)
        lags = np.arange(0, 8.01, 0.25)
        out["speckle_ax"] = _autocorr_width(hp, pts, d, lags)
        out["speckle_lat"] = _autocorr_width(hp, pts, t, lags)
    else:
        out["speckle_ax"] = out["speckle_lat"] = float("nan")
    # label-free tissue / blood contrast
    sm = cv2.GaussianBlur(f, (0, 0), 2.0)[core]
    lo, hi = np.percentile(sm, [20, 80])
    tis, bl = float(sm[sm >= hi].mean()), float(sm[sm <= lo].mean())
    out["michelson"] = (tis - bl) / (tis + bl + 1e-6)
    out["t_minus_b"] = tis - bl
    # sharpness and brightness with depth
    g = cv2.GaussianBlur(f, (0, 0), 0.7)
    gm = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
    edges = np.linspace(0.15, 0.9, 4) * R
    sharp, bright = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        band = inside & (r >= a) & (r < b)
        m = float(f[band].mean()) if band.any() else np.nan
        sharp.append(float(gm[band].mean()) / (m + 1e-6) if band.any() else np.nan)
        bright.append(m)
    out["sharp_near"], out["sharp_mid"], out["sharp_far"] = sharp
    out["sharp_far_near"] = sharp[2] / (sharp[0] + 1e-9)
    out["bright_far_near"] = bright[2] / (bright[0] + 1e-9)
    return out


def clip_stats(frames: np.ndarray, pick) -> list[dict]:
    mask = sector_mask(frames)
    apex = apex_of(mask)
    return [frame_stats(frames[i], mask, apex) for i in pick]


def summarise(stats: list[dict]) -> dict:
    out = {k: float(np.nanmean([s[k] for s in stats])) for k, _ in METRICS}
    out["hist"] = np.mean([s["hist"] for s in stats], 0).tolist()
    out["n_frames"] = len(stats)
    return out


def real_frames(path) -> np.ndarray:
    from echogen.data.inputs import load_frames, prepare_array

    fr, info = load_frames(path)
    return np.stack([(prepare_array(f, regions=info.get("regions")) * 255 + 0.5).astype(np.uint8) for f in fr])


def sim_clips(sim: str, videos: int, seed: int):
    from echogen.data.phantom import make_video

    for i in range(videos):
        yield make_video(seed, i, sim=sim)[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=12, help="phantom videos per simulator")
    ap.add_argument("--frames", type=int, default=6, help="frames per phantom video")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--dicom", nargs="*", default=[], help="extra real DICOMs (reported separately)")
    ap.add_argument("--fig", default=None, help="write the real | v1 | v2 figure here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from pydicom.data import get_testdata_file

    ref = get_testdata_file("examples_ybr_color.dcm")
    groups: dict = {}
    real = real_frames(ref)
    groups["real"] = summarise(clip_stats(real, range(len(real))))
    examples = {"real": [real[8], real[25]]}
    for extra in args.dicom:
        fr = real_frames(extra)
        groups[f"other:{Path(extra).name}"] = summarise(clip_stats(fr, range(len(fr))))
    for sim in ("v1", "v2"):
        st, ex = [], []
        for j, v in enumerate(sim_clips(sim, args.videos, args.seed)):
            pick = np.linspace(0, len(v) - 1, args.frames).astype(int)
            st += clip_stats(v, pick)
            if j < 3:
                ex.append(v[len(v) // 3])
        groups[sim] = summarise(st)
        examples[sim] = ex
    real_s = groups["real"]
    print(f"{'metric':34s} {'real':>8s} {'v1':>8s} {'v2':>8s}  v1/real v2/real")
    for k, lab in METRICS:
        r, a, b = real_s[k], groups["v1"][k], groups["v2"][k]
        print(f"{lab:34s} {r:8.3f} {a:8.3f} {b:8.3f}  {a / r:6.2f}  {b / r:6.2f}{'' if abs(b / r - 1) <= 0.25 else '  *'}")
    within = sum(abs(groups["v2"][k] / real_s[k] - 1) <= 0.25 for k, _ in METRICS)
    print(f"v2 within 25% of real: {within}/{len(METRICS)}; v1: "
          f"{sum(abs(groups['v1'][k] / real_s[k] - 1) <= 0.25 for k, _ in METRICS)}/{len(METRICS)}")
    for name, g in groups.items():
        if name.startswith("other:"):
            print(name, {k: round(g[k], 3) for k, _ in METRICS})
    if args.json:
        Path(args.json).write_text(json.dumps(groups, indent=1))
    if args.fig:
        figure(args.fig, examples, groups)
    return 0


def figure(path, examples, groups) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("real", 0), ("real", 1), ("v1", 0), ("v1", 1), ("v2", 0), ("v2", 1), ("v2", 2)]
    fig = plt.figure(figsize=(14, 8.2))
    gs = fig.add_gridspec(2, len(cols), height_ratios=[1.0, 1.55], hspace=0.12, wspace=0.04)
    for j, (g, i) in enumerate(cols):
        ax = fig.add_subplot(gs[0, j])
        ax.imshow(examples[g][i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title({"real": "real (pydicom A4C)", "v1": "phantom v1", "v2": "phantom v2"}[g], fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(gs[1, :3])
    x = np.arange(32) * 8 + 4
    for g, c in (("real", "k"), ("v1", "tab:blue"), ("v2", "tab:red")):
        ax.plot(x, groups[g]["hist"], c, label=f"{g} ({groups[g]['n_frames']} frames)")
    ax.set_xlabel("grey level inside the sector")
    ax.set_ylabel("fraction of sector pixels")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("intensity histogram inside the sector", fontsize=9)
    ax = fig.add_subplot(gs[1, 3:])
    ax.axis("off")
    rows = [[lab, f"{groups['real'][k]:.3g}", f"{groups['v1'][k]:.3g}", f"{groups['v2'][k]:.3g}",
             f"{groups['v1'][k] / groups['real'][k]:.2f}", f"{groups['v2'][k] / groups['real'][k]:.2f}"]
            for k, lab in METRICS]
    t = ax.table(cellText=rows, colLabels=["metric", "real", "v1", "v2", "v1/real", "v2/real"], loc="center",
                 colWidths=[0.4, 0.12, 0.12, 0.12, 0.12, 0.12])
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.2)
    for r, (k, _) in enumerate(METRICS, start=1):
        ok = abs(groups["v2"][k] / groups["real"][k] - 1) <= 0.25
        t[r, 5].set_facecolor("#d8f0d8" if ok else "#f6d5d5")
    fig.suptitle("Real apical 4-chamber echo vs phantom v1 vs phantom v2 at 112x112 (bench/sim_realism.py; "
                 "green: v2 within 25 % of real)", fontsize=10)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    raise SystemExit(main())
