"""Render a phantom heart to B-mode-like frames: sector, speckle that moves with the tissue, valves.

The ED anatomy ("material") is rasterised once on a 2x canvas as echogenicity x speckle amplitude;
each frame pulls every screen pixel back to the canvas through the heart's inverse map
(anatomy.inverse_map) and samples it with cv2.remap. Speckle is thus a property of the tissue and
does not flicker. Depth attenuation, lateral fall-off, gain and near-field clutter live in screen
space (they belong to the probe, not the heart).
"""
from __future__ import annotations

import cv2
import numpy as np

from echogen.data.phantom.anatomy import Heart, chambers, cycle, inverse_map, lv_size, profile, sway

SIZE = 112
SCALE = 2         # canvas pixels per screen pixel
PAD = 16          # canvas margin around the screen (screen px)
CANVAS = (SIZE + 2 * PAD) * SCALE


def _to_canvas(xy: np.ndarray) -> np.ndarray:
    return (np.asarray(xy) + PAD) * SCALE


def _fill(mask: np.ndarray, poly: np.ndarray) -> None:
    pts = np.round(_to_canvas(poly) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)


def _fix4(p) -> tuple:
    """Screen point -> fixed-point (shift=4) point on the 4x layer (pixel centres aligned)."""
    return tuple(int(x) for x in np.round((np.asarray(p) * 4 + 1.5) * 16))


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-sd low-frequency random field."""
    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return f / (f.std() + 1e-6)


def speckle(rng: np.random.Generator, shape, lateral: float = 1.9, axial: float = 1.0) -> np.ndarray:
    """Fully developed speckle: |PSF * complex white noise|, Rayleigh distributed with mean 1.
    The PSF is wider laterally than axially, as for a phased array."""
    re = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), lateral, sigmaY=axial)
    im = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), lateral, sigmaY=axial)
    a = np.sqrt(re * re + im * im)
    return a / a.mean()


def material(h: Heart, rng: np.random.Generator) -> np.ndarray:
    """ED echogenicity x speckle on the (CANVAS, CANVAS) canvas, float32."""
    ch = chambers(h)
    blood = np.zeros((CANVAS, CANVAS), np.uint8)
    for k in ("lv", "la", "rv", "ra"):
        _fill(blood, ch[k])
    # heart coordinates of every canvas pixel
    g = np.arange(CANVAS, dtype=np.float32) / SCALE - PAD
    X, Y = np.meshgrid(g, g)
    A, u, v = np.asarray(h.apex), h.u, h.v
    s = (X - A[0]) * u[0] + (Y - A[1]) * u[1]
    n = (X - A[0]) * v[0] + (Y - A[1]) * v[1]
    # wall thickness: LV wall and septum thick, RV free wall thinner, atrial walls thin
    septum_n = -(h.W_ed * 0.95 + h.wall * 1.15)
    hmap = np.where(n < septum_n - 2.0, 0.6 * h.wall, h.wall)
    hmap = np.where(s > h.L_ed + 2.0, 2.2, hmap).astype(np.float32)
    dist = cv2.distanceTransform((1 - blood).astype(np.uint8), cv2.DIST_L2, 5) / SCALE
    heart = (dist < hmap).astype(np.uint8)
    k = int(2 * h.wall * SCALE) | 1
    heart = cv2.morphologyEx(heart, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    heart = np.maximum(heart, blood)
    out_d = cv2.distanceTransform((1 - heart).astype(np.uint8), cv2.DIST_L2, 5) / SCALE
    lf = _smooth_noise(rng, blood.shape, 10.0 * SCALE)
    lf2 = _smooth_noise(rng, blood.shape, 4.0 * SCALE)
    # echogenicity levels (before display compression)
    e_out = np.clip(0.07 + 0.06 * lf + 0.05 * lf2, 0.005, 0.4)
    e_myo = np.clip(0.30 + 0.10 * lf + 0.10 * lf2 + 0.18 * (np.abs(n + h.W_ed + 0.6 * h.wall) < h.wall), 0.08, 0.9)
    e_peri = np.clip(0.55 + 0.25 * lf2 + 0.35 * (s > h.L_ed + 5), 0.2, 1.2)
    peri_w = np.clip(0.3 + 1.5 * (n > 0) + 3.5 * (s > h.L_ed + 5), 0.3, 4.0)  # lateral and bottom brighter
    echo = np.where(out_d < peri_w, e_peri * np.exp(-out_d / 2.0), e_out)
    echo = np.where(heart > 0, e_myo, echo)
    echo = np.where(blood > 0, 0.035 * np.clip(1.0 + 0.3 * lf2, 0.3, 2.0), echo).astype(np.float32)
    for p in ch["hinges"].values():  # fibrous annulus: small bright spots
        cv2.circle(echo, tuple(int(c) for c in np.round(_to_canvas(p))), int(1.2 * SCALE), 0.7, -1)
    echo = cv2.GaussianBlur(echo, (0, 0), 2.2)
    return echo * (0.3 + 0.7 * speckle(rng, blood.shape, 3.4, 1.6))  # some compounding


class Scene:
    """Everything per video that does not change from frame to frame."""

    def __init__(self, h: Heart, rng: np.random.Generator):
        self.h = h
        self.tex = material(h, rng)
        g = np.arange(SIZE, dtype=np.float32)
        X, Y = np.meshgrid(g, g)
        A, u, v = np.asarray(h.apex, np.float32), h.u.astype(np.float32), h.v.astype(np.float32)
        self.s0 = (X - A[0]) * u[0] + (Y - A[1]) * u[1]
        self.n0 = (X - A[0]) * v[0] + (Y - A[1]) * v[1]
        # probe: sector mask, depth attenuation with imperfect TGC, lateral fall-off, gain
        dx, dy = X - h.probe[0], Y - h.probe[1]
        r = np.hypot(dx, dy)
        th = np.arctan2(dx, np.maximum(dy, 1e-3))
        mask = np.clip(h.radius - r, 0, 1) * np.clip((h.half_angle - np.abs(th)) * np.maximum(r, 1) + 0.5, 0, 1)
        mask *= (dy > 0)
        depth = r / h.radius
        att = np.exp(-h.atten * depth) * (1.0 + 0.25 * np.exp(-((depth - 0.45) / 0.25) ** 2))
        lat = 1.0 - 0.45 * (np.abs(th) / h.half_angle) ** 3
        self.gain = (h.gain * att * lat * mask).astype(np.float32)
        self.mask = mask.astype(np.float32)
        # near-field clutter and reverberation: fixed to the probe, so not warped
        clut = speckle(rng, (SIZE, SIZE), 1.2, 0.7) * np.exp(-r / 9.0) * h.clutter
        clut += 0.12 * h.clutter * speckle(rng, (SIZE, SIZE), 2.5, 1.0) * np.exp(-r / 35.0)
        self.clutter = clut.astype(np.float32)

    def frame(self, t: float) -> np.ndarray:
        """One frame at time t (s) as float32 (SIZE, SIZE) in [0, 1]."""
        h = self.h
        c, o = cycle(t, h)
        c, o = float(c), float(o)
        off = sway(h, c)
        s = self.s0 - (off[0] * h.u[0] + off[1] * h.u[1])
        n = self.n0 - (off[0] * h.v[0] + off[1] * h.v[1])
        s_ed, n_ed = inverse_map(h, s, n, c)
        mx = ((h.apex[0] + s_ed * h.u[0] + n_ed * h.v[0] + PAD) * SCALE).astype(np.float32)
        my = ((h.apex[1] + s_ed * h.u[1] + n_ed * h.v[1] + PAD) * SCALE).astype(np.float32)
        img = cv2.remap(self.tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        img += self.leaflets(c, o, off)
        img = img * self.gain + self.clutter
        return (1.0 - np.exp(-1.5 * img)) * self.mask

    def leaflets(self, c: float, o: float, off: np.ndarray) -> np.ndarray:
        """Mitral and tricuspid leaflets: hinged at the annulus, closed across it in systole, swung
        toward the apex when open (o = 1)."""
        h = self.h
        L, W = lv_size(h, c)
        L, W = float(L), float(W)
        A = np.asarray(h.apex) + off
        u, v = h.u, h.v
        layer = np.zeros((SIZE * 4, SIZE * 4), np.uint8)
        ann = 0.8 * W
        # tricuspid hinges: material points pushed forward through the cross-axis map
        s_t = (h.L_ed - 2.0) * L / h.L_ed
        rho = float(profile(s_t / L, h.shape))
        rv_c = -(h.W_ed * 0.95 + h.wall * 1.15 + h.rv_width)
        def fwd_n(n_ed):
            return -np.sqrt(max(n_ed ** 2 - (h.W_ed ** 2 - W ** 2) * rho ** 2, 0.0))
        valves = [
            (L, -ann, ann, 0.58, 0.42, 1.0),  # mitral: (s, septal n, lateral n, leaflet lengths..., sign)
            (s_t, fwd_n(rv_c + h.rv_width * 0.85), fwd_n(rv_c - h.rv_width * 0.85), 0.5, 0.45, -1.0),
        ]
        for s_v, n_a, n_b, la, lb, sgn in valves:
            pa, pb = A + s_v * u + n_a * v, A + s_v * u + n_b * v
            width = abs(n_b - n_a)
            mid = 0.5 * (pa + pb) - 0.12 * width * u
            for p, length, side in ((pa, la, -sgn), (pb, lb, sgn)):
                closed = mid - p
                closed /= np.linalg.norm(closed) + 1e-6
                opened = -u + 0.12 * side * v
                d = (1 - o) * closed + o * opened
                d /= np.linalg.norm(d) + 1e-6
                q = p + d * length * width
                cv2.line(layer, _fix4(p), _fix4(q), 255, 5, cv2.LINE_AA, shift=4)
        small = cv2.resize(layer, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32) * (0.4 / 255.0)

    def render(self) -> np.ndarray:
        """The whole video as uint8 (T, SIZE, SIZE)."""
        t = np.arange(self.h.n_frames) / self.h.fps
        out = np.empty((len(t), SIZE, SIZE), np.uint8)
        for i, ti in enumerate(t):
            out[i] = np.clip(self.frame(ti) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out
