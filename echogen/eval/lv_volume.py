"""LV geometry from masks: EchoNet tracings -> masks, masks -> single-plane method-of-disks volumes,
and ED / ES / EF from a per-frame area curve. Pure numpy + OpenCV; no network here (echogen.nets.tracer).

Conventions (EchoNet-Dynamic): image coordinates x right, y down, pixel centres at integers. A tracing is
(1 + n_disks, 4) rows X1, Y1, X2, Y2: row 0 the LV long axis (apex to mitral-annulus midpoint, either
order), rows 1.. chords perpendicular to it; the LV cavity is the polygon through the chord ends.

Method of disks (single plane, as echogen.data.echonet.volume_from_tracing): V = pi/4 * sum d_i^2 * L / n, with L the
long axis and d_i the cavity width across it at the disk centres (i + 0.5) / n * L from the apex. From a
mask the long axis runs from the apex (the end nearest the top of the image: the transducer of an apical
view) to the middle of the base; widths are integrals of the mask across the axis (sub-pixel with a soft
mask).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

N_DISKS = 20
MIN_FALL = 0.03     # a beat's LV area must fall by this share of its ED area (EF ~4.5 %): less is a wiggle of the trace
SUPERSAMPLE = 4


# ------------------------------------------------------------------------------ tracings -> masks
def tracing_polygon(coords: np.ndarray) -> np.ndarray:
    """(K, 2) polygon of the LV cavity from an EchoNet tracing: apex end of the long axis, one side's
    chord ends, base end of the long axis, the other side's chord ends back to the apex."""
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 4 or c.shape[0] < 3:
        raise ValueError(f"tracing must be (1 + n_disks, 4) with n_disks >= 2, got shape {c.shape}")
    p0, p1 = c[0, :2], c[0, 2:]
    side1, side2 = c[1:, :2], c[1:, 2:]
    first_mid = (side1[0] + side2[0]) / 2
    if np.hypot(*(p0 - first_mid)) <= np.hypot(*(p1 - first_mid)):
        start, end = p0, p1
    else:
        start, end = p1, p0
    return np.concatenate([start[None], side1, end[None], side2[::-1]])


def polygon_mask(poly: np.ndarray, shape: tuple, soft: bool = False) -> np.ndarray:
    """Rasterise a polygon (x, y in pixel-centre coordinates) by 4x4 supersampling with an exact
    point-in-polygon test: the covered fraction of each pixel (soft=True, float32) or the pixels at least
    half covered (bool). Unbiased: the soft mask's sum is the polygon's area to ~0.1 %."""
    from matplotlib.path import Path as MplPath

    h, w = shape
    s = SUPERSAMPLE
    poly = np.asarray(poly, dtype=np.float64)
    frac = np.zeros((h, w), np.float32)
    x0, y0 = np.floor(poly.min(0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 > x0 and y1 > y0:
        off = (np.arange(s) + 0.5) / s - 0.5                    # sub-pixel centres within a pixel
        gx = (np.arange(x0, x1)[:, None] + off[None]).ravel()
        gy = (np.arange(y0, y1)[:, None] + off[None]).ravel()
        X, Y = np.meshgrid(gx, gy)
        inside = MplPath(poly).contains_points(np.stack([X.ravel(), Y.ravel()], 1)).reshape(X.shape)
        frac[y0:y1, x0:x1] = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return frac if soft else frac >= 0.5


def tracing_mask(coords: np.ndarray, shape: tuple = (112, 112), scale: float = 1.0, soft: bool = False) -> np.ndarray:
    """The LV cavity mask (H, W) of an EchoNet tracing; scale multiplies the coordinates (e.g. to a
    frame resized from the tracing's resolution)."""
    return polygon_mask(tracing_polygon(coords) * scale, shape, soft)


# ------------------------------------------------------------------------------ masks -> volumes
def _largest_component(m: np.ndarray) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 2:
        return m.astype(bool)
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of img at (x, y) (zero outside)."""
    return cv2.remap(img.astype(np.float32), x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def disks_from_mask(mask: np.ndarray, n_disks: int = N_DISKS, step: float = 0.25) -> dict | None:
    """Method of disks on an LV cavity mask (H, W), bool or soft in [0, 1] (a soft mask's widths are
    sub-pixel). Returns {"volume", "length", "diameters" (n,), "apex" (x, y), "base" (x, y), "area"},
    volume in pixel^3, or None for an empty mask. Only the largest connected blob counts."""
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    blob = _largest_component(m >= 0.5)
    if blob.sum() < 3:
        return None
    soft = np.where(cv2.dilate(blob.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0, m, 0.0).astype(np.float32)
    ys, xs = np.nonzero(blob)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c = pts.mean(0)
    evals, evecs = np.linalg.eigh(np.cov((pts - c).T) + 1e-9 * np.eye(2))
    u = evecs[:, 1]
    if u[1] < 0:                      # point from the apex (top) to the base (bottom)
        u = -u
    # refine (a few rounds): apex = the top tip along u; base midpoint = the middle of the basal cross-section
    # (the last 8 % along u), so a flat, tilted base gives its middle, not a corner
    for _ in range(4):
        s = (pts - c) @ u
        vv = (pts - c) @ np.array([-u[1], u[0]])
        apex = pts[s <= s.min() + 1.0].mean(0)
        span = s.max() - s.min()
        band = s >= s.max() - max(1.0, 0.08 * span)
        mid_v = 0.5 * (vv[band].min() + vv[band].max())
        base = c + s[band].mean() * u + mid_v * np.array([-u[1], u[0]])
        u_new = (base - apex) / max(np.hypot(*(base - apex)), 1e-9)
        if np.allclose(u_new, u, atol=1e-4):
            break
        u = u_new
    v = np.array([-u[1], u[0]])
    # sub-pixel ends: where the mask integral along the axis line starts and stops
    h, w = m.shape
    reach = float(np.hypot(h, w))
    t = np.arange(-reach, reach, step)
    line = apex[None] + t[:, None] * u[None]
    prof = _sample(soft, line[:, 0], line[:, 1]).ravel()
    inside = prof >= 0.5
    if not inside.any():
        return None
    # the run of the profile that contains the apex pixel (t = 0)
    k0 = int(np.argmin(np.abs(t)))
    if not inside[k0]:
        k0 = int(np.flatnonzero(inside)[np.argmin(np.abs(np.flatnonzero(inside) - k0))])
    lo = k0
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = k0
    while hi < len(t) - 1 and inside[hi + 1]:
        hi += 1

    def crossing(i_in, i_out):                # linear interpolation of the 0.5 crossing
        a, b = prof[i_in], prof[i_out]
        return t[i_in] + (t[i_out] - t[i_in]) * (a - 0.5) / max(a - b, 1e-9)

    t0 = crossing(lo, lo - 1) if lo > 0 else t[lo]
    t1 = crossing(hi, hi + 1) if hi < len(t) - 1 else t[hi]
    length = float(t1 - t0)
    a0 = apex + t0 * u
    centres = a0[None] + ((np.arange(n_disks) + 0.5) / n_disks * length)[:, None] * u[None]
    across = np.arange(-reach / 2, reach / 2, step)
    xs_ = centres[:, None, 0] + across[None, :] * v[0]
    ys_ = centres[:, None, 1] + across[None, :] * v[1]
    diam = _sample(soft, xs_.ravel(), ys_.ravel()).reshape(xs_.shape).sum(1) * step
    volume = float(np.pi / 4.0 * np.sum(diam ** 2) * length / n_disks)
    return {"volume": volume, "length": length, "diameters": diam, "apex": tuple(a0),
            "base": tuple(a0 + length * u), "area": float(soft.sum())}


def volume_from_mask(mask: np.ndarray, n_disks: int = N_DISKS, scale: float = 1.0) -> float:
    """Single-plane method-of-disks volume of a mask, in (scale * pixel)^3 (0 for an empty mask)."""
    d = disks_from_mask(mask, n_disks)
    return 0.0 if d is None else d["volume"] * scale ** 3


# ------------------------------------------------------------------------------ area curve -> ED / ES
def smooth_curve(a: np.ndarray, fps: float) -> np.ndarray:
    """A centred moving average over ~0.08 s (no smoothing below ~19 fps)."""
    a = np.asarray(a, dtype=np.float64)
    k = int(round(0.08 * fps)) if fps > 0 else 1
    k = max(1, k) | 1
    if k == 1 or len(a) < k:
        return a.copy()
    ker = np.ones(k)
    # at the ends, the average of the samples that exist (edge padding would drag the extrema inwards)
    return np.convolve(a, ker, mode="same") / np.convolve(np.ones(len(a)), ker, mode="same")


def _extrema(a: np.ndarray, w: int, kind: str) -> list[int]:
    out = []
    for i in range(len(a)):
        win = a[max(0, i - w):i + w + 1]
        if (kind == "max" and a[i] >= win.max()) or (kind == "min" and a[i] <= win.min()):
            if not out or i - out[-1] > w:          # plateaus: keep the first
                out.append(i)
    return out


def beats_from_curve(area: np.ndarray, fps: float) -> list[tuple[int, int]]:
    """(ED, ES) frame pairs from an LV area curve: ED at a local maximum (over +-0.25 s), ES at the local
    minimum that follows it within 0.08-0.6 s, or else the one before it within 0.1-0.8 s (the previous
    beat's ES, when the clip ends during systole); both windows reach one frame further (at 8 fps a maximum can
    sit a frame off the true ED). One beat per end-systole: an ES claimed by two maxima (a one-cycle loop's
    first and last frames; a clip's last ED before a systole the clip cuts off) keeps the ED before it, else
    the fuller LV; one systole is not two beats. Extrema at the first or last frame are not used (the curve may
    go on beyond the clip), except a maximum there that is a full LV (within ED_FULL of the curve's range of its
    highest value, the rule the loop cutter uses, echogen.data.loops): a clip that starts at end-diastole, as
    generated clips often do, has its first beat's ED at frame 0, and without it a 1.3 s clip was read from its
    second, partial systole alone. Falls back to the global maximum and minimum when no beat is found (e.g. a
    clip shorter than a systole)."""
    from echogen.data.loops import ED_FULL

    a = smooth_curve(area, fps)
    n = len(a)
    if n < 2:
        return []
    f = fps if fps > 0 else 25.0
    w = max(1, int(round(0.25 * f)))
    inner = lambda idx: [i for i in idx if 0 < i < n - 1]  # noqa: E731
    maxima = _extrema(a, w, "max")
    full = a.max() - ED_FULL * np.ptp(a)
    edge = [i for i in maxima if i in (0, n - 1) and a[i] >= full]      # a full LV at the clip's first / last frame
    peaks, troughs = sorted(inner(maxima) + edge), inner(_extrema(a, w, "min"))
    by_es = {}                   # one beat per end-systole: (kind, area at ED, ED); kind 1 = the ES follows the ED
    for p in peaks:
        after = [q for q in troughs if 0.08 * f <= q - p <= 0.6 * f + 1]
        before = [q for q in troughs if 0.1 * f <= p - q <= 0.8 * f + 1]
        cand = (after[0], (1, a[p], p)) if after else (before[-1], (0, a[p], p)) if before else None
        if cand and (cand[0] not in by_es or cand[1][:2] > by_es[cand[0]][:2]):
            by_es[cand[0]] = cand[1]
    beats = [(ed, es) for es, (_, _, ed) in sorted(by_es.items(), key=lambda kv: kv[1][2])]
    if not beats:
        beats = [(int(np.argmax(a)), int(np.argmin(a)))]
    # refine each frame to the raw extremum within the smoothing window (the average shifts extrema at the ends)
    raw = np.asarray(area, dtype=np.float64)
    r = max(1, int(round(0.08 * f))) // 2

    def refine(i, fn):
        lo = max(0, i - r)
        return lo + int(fn(raw[lo:i + r + 1]))
    return [(refine(ed, np.argmax), refine(es, np.argmin)) for ed, es in beats]


def implausible_frames(area, found, fps: float, volume=None) -> np.ndarray:
    """Frames (T,) bool whose traced LV cannot be this heart's LV, so they must not set ED, ES or a volume:
    no cavity found; an area under 30 % or over 250 % of the clip's median traced area (a trace that
    collapsed or leaked into the next chamber: an LV at EF 85 % still keeps ~45 % of its median area); a
    method-of-disks volume (when given) under 10 % or over 400 % of the median volume (a thin sliver keeps
    area but has no volume; at EF 90 % the ESV is still ~20 % of the median volume); or,
    at >= 15 fps, a one-frame spike: a frame that differs from BOTH neighbours in the same direction by more
    than max(35 % of the curve's 5-95 % range, 15 % of the median area) (40 ms apart, the LV cannot jump
    out and back). Below 15 fps neighbouring frames may legitimately straddle a whole systole: no spike test."""
    a = np.asarray(area, np.float64)
    bad = ~np.asarray(found, bool)
    if bad.all():
        return bad
    med = float(np.median(a[~bad]))
    bad = bad | (a < 0.3 * med) | (a > 2.5 * med)
    if volume is not None:
        vol = np.asarray(volume, np.float64)
        vmed = float(np.median(vol[np.asarray(found, bool)]))
        bad = bad | (vol < 0.1 * vmed) | (vol > 4.0 * vmed)
    if fps >= 15 and len(a) >= 5 and (~bad).sum() >= 5:
        ok = ~bad
        rng = float(np.percentile(a[ok], 95) - np.percentile(a[ok], 5))
        tol = max(0.35 * rng, 0.15 * med)
        for i in range(1, len(a) - 1):
            if ok[i] and ok[i - 1] and ok[i + 1]:
                d0, d1 = a[i] - a[i - 1], a[i] - a[i + 1]
                if d0 * d1 > 0 and min(abs(d0), abs(d1)) > tol:
                    bad[i] = True
    return bad


def fill_frames(values, bad) -> np.ndarray:
    """values (T,) with the `bad` frames replaced by linear interpolation between the nearest good ones
    (held flat beyond the first / last good frame)."""
    v = np.asarray(values, np.float64).copy()
    bad = np.asarray(bad, bool)
    if bad.any() and (~bad).any():
        i = np.arange(len(v))
        v[bad] = np.interp(i[bad], i[~bad], v[~bad])
    return v


def ef_from_volumes(volumes: np.ndarray, area: np.ndarray, fps: float) -> dict:
    """EF from per-frame volumes with ED / ES found on the area curve: one EF per beat; the median beat is
    reported (the upper median for an even count), so EF = (EDV - ESV) / EDV of the EDV and ESV reported.
    Beats whose ESV exceeds their EDV (the method of disks disagreeing with the area ranking: a broken
    tracing) are dropped, and so are beats whose area falls less than half as far as the deepest beat's or
    less than a quarter of the curve's whole range (a wiggle of the curve, not a contraction, also when it is
    the only "beat" found), and so are beats whose area falls by less than MIN_FALL of its ED area (no heart
    that beats contracts so little: the wiggle of a still LV's trace); with none left the EF is NaN and "why"
    says which rule left none. Returns {"ef", "edv", "esv", "ed", "es", "beats": [(ed, es, ef), ...], "why"}
    (NaN when undefined; "why" empty when an EF was found)."""
    vol = np.asarray(volumes, dtype=np.float64)
    a = np.asarray(area, dtype=np.float64)
    beats = beats_from_curve(a, fps)
    rows = []
    for ed, es in beats:
        edv, esv = _peak_value(vol, ed, fps, max), _peak_value(vol, es, fps, min)
        if edv > 0 and 0.0 <= 100.0 * (edv - esv) / edv < 100.0:      # ESV > EDV: a broken tracing, not a beat
            rows.append((int(ed), int(es), 100.0 * (edv - esv) / edv))
    why = "" if rows else "no beat with ESV below EDV: the traced volumes do not follow the LV area"
    if rows:                     # a wiggle of the curve is not a beat: keep beats whose area falls at least half as
        drop = [a[ed] - a[es] for ed, es, _ in rows]      # far as the deepest one's (a weak heart keeps its beats)
        span = float(np.ptp(smooth_curve(a, fps)))        # and a quarter of the whole curve's range
        rows = [r for r, d in zip(rows, drop) if d >= 0.5 * max(drop) and d >= 0.25 * span]
        if not rows:
            why = "no beat: the traced LV area drifts more than it falls and rises"
        falls = [(a[ed] - a[es]) / a[ed] if a[ed] > 0 else 0.0 for ed, es, _ in rows]
        rows = [r for r, f in zip(rows, falls) if f >= MIN_FALL]
        if falls and not rows:
            why = (f"no contraction: the traced LV area falls by {100 * max(falls):.1f} % of its size at most "
                   f"(under {100 * MIN_FALL:.0f} %: a still LV)")
    if not rows:
        return {"ef": math.nan, "edv": math.nan, "esv": math.nan, "ed": -1, "es": -1, "beats": [], "why": why}
    efs = np.array([r[2] for r in rows])
    k = int(np.argsort(efs)[len(efs) // 2])          # the median beat (upper median for an even count)
    ed, es, ef = rows[k]                             # its EF, EDV and ESV: the numbers shown agree with each other
    return {"ef": float(ef), "edv": _peak_value(vol, ed, fps, max), "esv": _peak_value(vol, es, fps, min),
            "ed": ed, "es": es, "beats": rows, "why": ""}


def _peak_value(vol: np.ndarray, i: int, fps: float, pick) -> float:
    """vol[i], or below ~20 fps the extremum of the parabola through frames i-1, i, i+1 when it lies within
    half a frame of i (at 8 fps the true ED / ES can fall up to 62 ms between two frames; sampling would
    read the volume there too small / too large and the EF too low)."""
    v = float(vol[i])
    if not 0 < fps < 20 or i <= 0 or i >= len(vol) - 1:
        return v
    a, b, c = float(vol[i - 1]), v, float(vol[i + 1])
    den = a - 2 * b + c
    if den == 0 or min(a, c) <= 0:
        return v
    off = 0.5 * (a - c) / den
    if abs(off) > 0.5:
        return v
    top = b - 0.25 * (a - c) * off
    return float(pick(v, top))          # only ever moves the reading towards the extremum
