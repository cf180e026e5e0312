"""Apical 4-chamber heart geometry, its cardiac cycle, and the LV tracings (EchoNet convention).

Coordinates are screen pixels of the 112x112 frame, (x right, y down). The heart has its own frame:
origin at the LV endocardial apex A, `u` = unit vector from apex to the mitral annulus (down the long
axis), `v` = unit vector across it pointing to the LV lateral wall (screen right). A point is
p = A + s*u + n*v.

Motion model. The ED anatomy is drawn once (the "material" frame). Each frame's screen pixel is pulled
back to a material point by an inverse map, so tissue texture moves with the tissue:
- long axis: the apex stays put, the AV plane moves toward the apex (s in [0, L(t)] -> [0, L_ed]);
  the atria below it stretch to fill the gap (they fill during ventricular systole);
- across the LV: the cavity scales by W_ed / W(t); outside it an area-preserving map
  n_ed^2 = n^2 + (W_ed^2 - W(t)^2) rho^2 thickens the wall in systole and fades to identity far away.
The LV cavity at time t is therefore exactly {0 <= s <= L(t), |n| <= W(t) rho(s / L(t))}, so its
method-of-disks volume is known in closed form and equals what the tracings give.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_DISKS = 20
LONG_AXIS_SHARE = 0.2  # share of the log volume ratio taken by long-axis shortening (rest: radial)


@dataclass
class Heart:
    """All random choices for one phantom video (units: screen pixels, seconds)."""
    ef_target: float       # EF the cycle is built for (%); the reported EF comes from the tracings
    hr: float              # heart rate (bpm)
    t0: float              # time of the first end-diastole (s), may be negative
    fps: float
    n_frames: int
    probe: tuple           # sector apex (x, y)
    half_angle: float      # sector half angle (rad)
    radius: float          # sector depth (px)
    cm_per_px: float
    apex: tuple            # LV endocardial apex A (x, y)
    tilt: float            # long axis angle from vertical (rad), positive = base to the right
    L_ed: float            # LV long axis at ED (apex to annulus midpoint)
    W_ed: float            # LV half width at ED (widest)
    wall: float            # LV wall thickness
    rv_width: float        # RV half width
    rv_apex: float         # s where the RV cavity starts
    la_len: float
    ra_len: float
    shape: float           # cavity profile exponent (1 = elliptic apex)
    gain: float
    atten: float           # depth attenuation (per sector radius)
    clutter: float         # near-field clutter strength
    sway: tuple            # heart translation at end systole (px)
    systole: float         # systole duration (s)

    @property
    def u(self) -> np.ndarray:
        return np.array([np.sin(self.tilt), np.cos(self.tilt)])

    @property
    def v(self) -> np.ndarray:
        return np.array([np.cos(self.tilt), -np.sin(self.tilt)])

    @property
    def period(self) -> float:
        return 60.0 / self.hr


def sample_ef(rng: np.random.Generator) -> float:
    """EF (%) over ~10-85, oversampling low EF relative to EchoNet (mean 56, sd 12)."""
    k = rng.random()
    if k < 0.35:
        ef = rng.uniform(10.0, 40.0)      # reduced EF, rare in EchoNet, needed for the counterfactuals
    elif k < 0.55:
        ef = rng.uniform(40.0, 85.0)
    else:
        ef = rng.normal(58.0, 10.0)
    return float(np.clip(ef, 10.0, 85.0))


def sample_heart(rng: np.random.Generator, fps: float = 50.0) -> Heart:
    ef = sample_ef(rng)
    hr = rng.uniform(50.0, 120.0)
    n_frames = int(rng.integers(100, 251))
    radius = rng.uniform(104.0, 118.0)
    probe = (56.0 + rng.uniform(-3.0, 3.0), rng.uniform(-3.0, 2.0))
    # dilated cardiomyopathy: low EF hearts are bigger and rounder
    dil = float(np.clip((50.0 - ef) / 35.0, 0.0, 1.0))
    size = rng.uniform(0.88, 1.08)
    L_ed = radius * 0.50 * size * (1.0 + 0.08 * dil)
    W_ed = radius * 0.16 * size * (1.0 + 0.28 * dil)
    depth_apex = rng.uniform(11.0, 19.0)
    tilt = np.deg2rad(rng.uniform(2.0, 16.0))
    apex = (probe[0] + rng.uniform(4.0, 10.0), probe[1] + depth_apex)
    return Heart(
        ef_target=ef, hr=hr, t0=-rng.uniform(0.0, 60.0 / hr), fps=fps, n_frames=n_frames,
        probe=probe, half_angle=np.deg2rad(rng.uniform(42.0, 50.0)), radius=radius,
        cm_per_px=rng.uniform(14.0, 18.0) / radius, apex=apex, tilt=tilt, L_ed=L_ed, W_ed=W_ed,
        wall=rng.uniform(4.5, 6.5) * (1.0 - 0.2 * dil), rv_width=W_ed * rng.uniform(0.65, 0.85),
        rv_apex=L_ed * rng.uniform(0.22, 0.35), la_len=L_ed * rng.uniform(0.42, 0.52),
        ra_len=L_ed * rng.uniform(0.38, 0.5), shape=rng.uniform(0.8, 1.2),
        gain=rng.uniform(0.75, 1.3), atten=rng.uniform(0.2, 0.9), clutter=rng.uniform(0.1, 0.45),
        sway=(rng.uniform(-1.5, 1.5), rng.uniform(-2.0, 0.0)),
        systole=0.52 - 0.0017 * hr,
    )


def profile(sigma, shape: float = 1.0):
    """Normalised LV half width along the long axis, sigma = s / L in [0, 1]: 0 at the apex, 1 at the
    widest point (65% of the way down), 0.8 at the mitral annulus."""
    sg = np.clip(sigma, 0.0, 1.0)
    apical = np.sqrt(np.clip(1.0 - ((sg - 0.65) / 0.65) ** 2, 0.0, 1.0)) ** shape
    basal = 1.0 - 0.2 * ((sg - 0.65) / 0.35) ** 2
    return np.where(sg < 0.65, apical, basal)


def cycle(t, h: Heart):
    """Contraction c(t) in [0, 1] (0 = end diastole, 1 = end systole) and AV valve opening o(t) in [0, 1]."""
    t = np.asarray(t, dtype=np.float64)
    T, ts = h.period, h.systole
    tau = np.mod(t - h.t0, T)  # time since end-diastole
    ivr = 0.06                 # isovolumic relaxation (valves closed, c stays 1)
    fill_end = ts + ivr + min(0.16, 0.3 * T)
    a_start = T - min(0.16, 0.22 * T)
    c_dia = 0.25               # residual contraction in diastasis (volume not yet fully refilled)
    c = np.empty_like(tau)
    o = np.zeros_like(tau)
    m = tau < ts                                          # ejection
    c[m] = 0.5 - 0.5 * np.cos(np.pi * tau[m] / ts)
    m = (tau >= ts) & (tau < ts + ivr)                    # isovolumic relaxation
    c[m] = 1.0
    m = (tau >= ts + ivr) & (tau < a_start)               # rapid filling then diastasis
    x = np.clip((tau[m] - ts - ivr) / max(fill_end - ts - ivr, 1e-3), 0.0, 1.0)
    drift = np.clip((tau[m] - fill_end) / max(a_start - fill_end, 1e-3), 0.0, 1.0)  # slow diastasis filling
    c[m] = np.where(x < 1.0, c_dia + (1.0 - c_dia) * (1.0 - x) ** 2, c_dia * (1.0 - 0.3 * drift))
    o[m] = np.where(x < 1.0, np.minimum(1.0, 4.0 * x + 0.2), 0.5 - 0.15 * drift)
    m = tau >= a_start                                    # atrial kick
    y = (tau[m] - a_start) / (T - a_start)
    c_a = 0.7 * c_dia if a_start > fill_end else c_dia + (1 - c_dia) * (1 - ((a_start - ts - ivr) / max(fill_end - ts - ivr, 1e-3))) ** 2
    c[m] = c_a * (0.5 + 0.5 * np.cos(np.pi * y))
    o[m] = 0.85 * np.sin(np.pi * np.clip(y * 1.1, 0, 1))
    return c, o


def lv_size(h: Heart, c):
    """LV long axis L and half width W for contraction c (ED at c=0, ES volume = (1 - EF) EDV at c=1)."""
    r = 1.0 - h.ef_target / 100.0
    l_es = r ** LONG_AXIS_SHARE
    w_es = r ** ((1.0 - LONG_AXIS_SHARE) / 2.0)
    c = np.asarray(c, dtype=np.float64)
    return h.L_ed * (1.0 - (1.0 - l_es) * c), h.W_ed * (1.0 - (1.0 - w_es) * c)


def sway(h: Heart, c) -> np.ndarray:
    """Whole-heart translation (px) at contraction c."""
    return np.asarray(h.sway) * np.asarray(c)[..., None]


def tracing(h: Heart, c: float) -> np.ndarray:
    """(21, 4) X1,Y1,X2,Y2: row 0 apex -> annulus midpoint, rows 1..20 disk chords (septal -> lateral)."""
    L, W = lv_size(h, c)
    A = np.asarray(h.apex) + sway(h, c)
    u, v = h.u, h.v
    out = np.empty((N_DISKS + 1, 4))
    out[0, :2], out[0, 2:] = A, A + L * u
    s = (np.arange(N_DISKS) + 0.5) / N_DISKS * L
    half = W * profile(s / L, h.shape)
    centre = A + s[:, None] * u
    out[1:, :2] = centre - half[:, None] * v
    out[1:, 2:] = centre + half[:, None] * v
    return out


def chambers(h: Heart, n_pts: int = 48) -> dict:
    """ED cavity outlines (screen px polygons) plus valve hinge points."""
    A, u, v = np.asarray(h.apex), h.u, h.v
    L, W = h.L_ed, h.W_ed
    to_xy = lambda s, n: A + np.asarray(s)[:, None] * u + np.asarray(n)[:, None] * v  # noqa: E731
    sig = np.linspace(0.0, 1.0, n_pts)
    w = W * profile(sig, h.shape)
    lv = np.concatenate([to_xy(sig * L, w), to_xy(sig[::-1] * L, -w[::-1])])
    # RV: parallel bullet on the septal side, starting further from the apex, base slightly apical
    sep = h.wall * 1.15
    rv_c = -(W * 0.95 + sep + h.rv_width)
    s_rv = h.rv_apex + sig * (L - 2.0 - h.rv_apex)
    w_rv = h.rv_width * profile(sig, 0.8)
    lat_rv = rv_c - w_rv
    med_rv = np.minimum(rv_c + w_rv, -(W * profile(s_rv / L, h.shape) + sep))  # septum keeps its width
    rv = np.concatenate([to_xy(s_rv, med_rv), to_xy(s_rv[::-1], lat_rv[::-1])])
    # atria: from the annulus (width of the annulus) to a rounded roof
    def atrium(s0, length, n_centre, half0, half_max):
        tau = np.linspace(0.0, 1.0, n_pts)
        half = np.where(tau < 0.4, half0 + (half_max - half0) * np.sin(np.pi / 2 * tau / 0.4),
                        half_max * np.sqrt(np.clip(1 - ((tau - 0.4) / 0.6) ** 2, 0, 1)))
        s = s0 + tau * length
        return np.concatenate([to_xy(s, n_centre + half), to_xy(s[::-1], n_centre - half[::-1])])
    ann = 0.8 * W
    la_c = 0.05 * W
    la = atrium(L, h.la_len, la_c, ann, 0.95 * W)
    rv_base = rv_c
    ra = atrium(L - 2.0, h.ra_len, rv_base - 0.5, h.rv_width * 0.85, h.rv_width * 1.05)
    hinges = {
        "mv_septal": A + L * u - ann * v, "mv_lateral": A + L * u + ann * v,
        "tv_septal": A + (L - 2.0) * u + (rv_base + h.rv_width * 0.85) * v,
        "tv_lateral": A + (L - 2.0) * u + (rv_base - h.rv_width * 0.85) * v,
    }
    return {"lv": lv, "rv": rv, "la": la, "ra": ra, "hinges": hinges,
            "ra_septum_n": float(rv_base + h.rv_width * 1.05)}


def inverse_map(h: Heart, s: np.ndarray, n: np.ndarray, c: float):
    """Material (ED) heart coordinates (s_ed, n_ed) of screen heart coordinates (s, n) at contraction c."""
    L, W = lv_size(h, c)
    L, W = float(L), float(W)
    # long axis: apex fixed, [0, L] -> [0, L_ed]; atria [L, S_b] -> [L_ed, S_b]
    S_b = h.L_ed + max(h.la_len, h.ra_len) + 12.0
    s_ed = np.where(s < L, s * (h.L_ed / L), h.L_ed + (s - L) * ((S_b - h.L_ed) / (S_b - L)))
    s_ed = np.where(s < 0.0, s, np.where(s > S_b, s, s_ed))
    # across: exact scaling inside the cavity, area-preserving outside; fades out below the annulus
    k = np.clip(1.0 - (s - L) / 8.0, 0.0, 1.0)
    W_k = h.W_ed + (W - h.W_ed) * k
    rho = profile(s / L, h.shape)
    edge = W_k * rho
    inside = np.abs(n) <= edge
    n_in = n * (h.W_ed / W_k)
    n_out = np.sign(n) * np.sqrt(np.maximum(n * n + (h.W_ed ** 2 - W_k ** 2) * rho * rho, 0.0))
    return s_ed, np.where(inside, n_in, n_out)
