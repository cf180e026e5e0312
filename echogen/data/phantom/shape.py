"""Simulator v2 anatomy: a parametric 4-chamber shape model, regional LV motion, exact LV labels.

Coordinates are screen pixels of the 112x112 frame (x right, y down). As in v1 the heart has its own
frame: origin at the LV endocardial apex A, `u` = unit vector from the apex to the mitral-annulus
midpoint, `v` = unit vector across it toward the LV lateral wall. A point is p = A + s*u + n*v.

LV cavity at contraction c (0 = end-diastole, 1 = end-systole), with sigma = s / L(c) in [0, 1]:
    {0 <= sigma <= 1, -ws(sigma, c) <= n <= wl(sigma, c)}
    L(c)        = L_ed (1 - kL c)                      long axis, apex fixed, AV plane moves
    ws(sigma,c) = ws_ed(sigma) (1 - k m_s(sigma) c)     septal half width
    wl(sigma,c) = wl_ed(sigma) (1 - k m_l(sigma) c)     lateral half width
ws_ed/wl_ed come from a shape model (apex bluntness, widest level, annulus ratio, asymmetry, low-order
harmonics, basal septal bulge, foreshortening); m_s/m_l are regional wall-motion multipliers (1 normal,
~0.4 hypokinetic, ~0 akinetic, < 0 dyskinetic) and k is solved so that the method-of-disks EF equals
the target. ws(1) = wl(1) at every c, so the long axis always ends at the annulus midpoint and the 20
chords of `tracing` (EchoNet convention) lie exactly on the rendered cavity's outline (`lv_polygon`,
`lv_mask`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from echogen.data.phantom.anatomy import sample_ef

N_DISKS = 20
N_SIG = 81
SIG = np.linspace(0.0, 1.0, N_SIG)
SIG_DISK = (np.arange(N_DISKS) + 0.5) / N_DISKS
SIZE = 112
PHENOTYPES = ("normal", "dilated", "hypertrophic", "regional")


def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class Heart2:
    """All random choices of one v2 video (units: screen px, s, rad) except the image-formation noise."""
    ef_target: float
    phenotype: str
    hr: float
    t0: float
    systole: float
    fps: float
    n_frames: int
    # acquisition geometry
    probe: tuple            # sector apex (x, y)
    rot: float              # sector axis angle from vertical (rad, + = toward screen right)
    half_angle: float
    radius: float           # sector depth (px)
    cm_per_px: float
    # heart placement and LV
    apex: tuple
    tilt: float             # long axis angle from vertical (rad, + = base to the right)
    L_ed: float
    ws_ed: np.ndarray       # (N_SIG,) septal half width at ED
    wl_ed: np.ndarray       # (N_SIG,) lateral half width at ED
    m_s: np.ndarray         # (N_SIG,) regional motion multipliers
    m_l: np.ndarray
    k: float                # radial shortening scale (solved for the EF)
    kL: float               # long-axis shortening fraction at ES
    sway: tuple
    p: dict = field(default_factory=dict)   # other chambers, walls, texture and probe parameters

    @property
    def u(self) -> np.ndarray:
        return np.array([np.sin(self.tilt), np.cos(self.tilt)])

    @property
    def v(self) -> np.ndarray:
        return np.array([np.cos(self.tilt), -np.sin(self.tilt)])

    @property
    def period(self) -> float:
        return 60.0 / self.hr


def base_profile(sig, widest: float, blunt: float, ann: float):
    """0 at the apex, 1 at `widest`, `ann` at the base; `blunt` < 1 rounds the apex, > 1 sharpens it."""
    sg = np.clip(sig, 0.0, 1.0)
    apical = np.clip(1.0 - ((widest - sg) / widest) ** 2, 0.0, 1.0) ** (0.5 * blunt)
    basal = 1.0 - (1.0 - ann) * ((sg - widest) / (1.0 - widest)) ** 2
    return np.where(sg < widest, apical, basal)


def harmonics(rng, sig, amp: float, n: int = 3):
    """1 + a smooth random perturbation vanishing at both ends."""
    out = np.zeros_like(sig)
    for j in range(1, n + 1):
        out += rng.normal(0.0, amp / j) * np.sin(np.pi * j * sig + rng.uniform(0, 2 * np.pi))
    return 1.0 + out * np.sin(np.pi * sig) ** 0.5


def _regional(rng, phenotype: str):
    """Septal and lateral multipliers over SIG and a name of the pattern."""
    seg = rng.uniform(0.85, 1.15, size=(2, 3))         # (septal, lateral) x (apical, mid, basal)
    pattern = "none"
    if phenotype == "regional":
        pattern = rng.choice(["lad", "apical", "lateral", "septal", "random"], p=[0.35, 0.15, 0.2, 0.15, 0.15])
        lvl = lambda: rng.choice([0.45, 0.2, 0.0, -0.15], p=[0.35, 0.25, 0.3, 0.1])  # noqa: E731
        if pattern == "lad":
            seg[0, 0], seg[0, 1], seg[1, 0] = lvl(), lvl(), lvl()
        elif pattern == "apical":
            seg[0, 0], seg[1, 0] = lvl(), lvl()
        elif pattern == "lateral":
            seg[1, 1], seg[1, 2] = lvl(), lvl()
        elif pattern == "septal":
            seg[0, 1], seg[0, 2] = lvl(), lvl()
        else:
            for _ in range(int(rng.integers(1, 4))):
                seg[int(rng.integers(2)), int(rng.integers(3))] = lvl()
    centres = np.array([0.18, 0.52, 0.85])
    w = np.exp(-((SIG[:, None] - centres[None]) / 0.14) ** 2)
    w /= w.sum(1, keepdims=True)
    m = seg @ w.T                                       # (2, N_SIG)
    base = smoothstep((SIG - 0.85) / 0.15)              # equal motion at the annulus
    mean = 0.5 * (m[0] + m[1])
    m = m + (mean - m) * base
    return m[0], m[1], str(pattern)


def volume_px(L: float, ws: np.ndarray, wl: np.ndarray) -> float:
    """Method-of-disks volume (px^3) of a cavity given on the SIG grid."""
    d = np.interp(SIG_DISK, SIG, ws) + np.interp(SIG_DISK, SIG, wl)
    return float(np.pi / 4.0 * np.sum(d * d) * L / N_DISKS)


def _solve_k(L, ws, wl, m_s, m_l, ef: float, long_share: float):
    """Radial scale k and long-axis fraction kL with V_es / V_ed = 1 - ef/100 (as close as reachable)."""
    v_ed = volume_px(L, ws, wl)
    target = 1.0 - ef / 100.0
    k_max = 0.92 / max(float(np.max(np.concatenate([m_s, m_l]))), 1e-3)

    def ratio(k):
        kL = min(0.28, long_share * k)
        return volume_px(L * (1 - kL), ws * (1 - k * m_s), wl * (1 - k * m_l)) / v_ed

    lo, hi = 0.0, k_max
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if ratio(mid) > target:
            lo = mid
        else:
            hi = mid
    k = 0.5 * (lo + hi)
    return k, min(0.28, long_share * k)


def sample_heart2(rng: np.random.Generator) -> Heart2:
    """Draw one v2 heart and acquisition."""
    ef = sample_ef(rng)
    if ef < 40:
        pr = [0.08, 0.42, 0.0, 0.5]
    elif ef < 55:
        pr = [0.45, 0.12, 0.08, 0.35]
    else:
        pr = [0.7, 0.02, 0.25, 0.03]
    phen = str(rng.choice(PHENOTYPES, p=pr))
    hr = float(rng.uniform(45.0, 120.0))
    fps = float(rng.choice([30, 40, 50, 50, 50, 60, 70, 80]))
    dur = rng.uniform(2.0, 3.8)
    n_frames = int(np.clip(round(dur * fps), 80, 230))
    n_frames = max(n_frames, int(np.ceil((60.0 / hr + 0.6) * fps)) + 2)
    # acquisition: depth, sector, probe
    zoom = rng.random() < 0.2           # zoomed / shifted display: the sector apex above the frame
    radius = rng.uniform(118.0, 140.0) if zoom else rng.uniform(100.0, 122.0)
    half_angle = np.deg2rad(rng.uniform(36.0, 48.0))
    probe = (56.0 + rng.uniform(-5.0, 5.0), rng.uniform(-22.0, -8.0) if zoom else rng.uniform(-5.0, 3.0))
    rot = np.deg2rad(rng.uniform(-6.0, 6.0))
    # LV size (cm) by phenotype
    if phen == "dilated":
        L_cm, D_cm, wall_cm = rng.uniform(8.8, 11.5), rng.uniform(5.4, 7.2), rng.uniform(0.55, 0.9)
    elif phen == "hypertrophic":
        L_cm, D_cm, wall_cm = rng.uniform(6.5, 8.3), rng.uniform(3.4, 4.5), rng.uniform(1.25, 1.9)
    elif phen == "regional":
        L_cm, D_cm, wall_cm = rng.uniform(7.8, 10.5), rng.uniform(4.4, 6.2), rng.uniform(0.7, 1.05)
    else:
        L_cm, D_cm, wall_cm = rng.uniform(7.0, 9.3), rng.uniform(4.0, 5.3), rng.uniform(0.75, 1.1)
    fore = rng.uniform(0.78, 1.0) if rng.random() < 0.4 else 1.0   # apical foreshortening
    # depth set by the sonographer to fit the heart (apex depth + LV + atria + a margin), 12-22 cm
    apex_cm = rng.uniform(1.2, 3.5)
    depth_cm = float(np.clip(apex_cm + L_cm * fore + 4.5 + rng.uniform(0.0, 3.5), 12.0, 22.0))
    cm_px = depth_cm / radius
    L_ed = L_cm * fore / cm_px
    W = 0.5 * D_cm / cm_px
    widest = rng.uniform(0.5, 0.72)
    blunt = rng.uniform(0.75, 1.35) * (0.8 if fore < 1.0 else 1.0)
    ann = rng.uniform(0.72, 0.88)
    prof = base_profile(SIG, widest, blunt, ann)
    asym = rng.uniform(-0.08, 0.12)  # lateral wall more convex than the septum
    ws_raw = W * prof * (1.0 - asym) * harmonics(rng, SIG, 0.04)
    wl = W * prof * (1.0 + asym) * harmonics(rng, SIG, 0.05)
    bulge = (rng.uniform(0.08, 0.3) if rng.random() < (0.55 if phen == "hypertrophic" else 0.2) else 0.0)
    ws = ws_raw * (1.0 - bulge * np.exp(-((SIG - rng.uniform(0.72, 0.86)) / 0.09) ** 2))
    a_half = 0.5 * (ws[-1] + wl[-1])          # equal half widths at the annulus
    bl = smoothstep((SIG - 0.8) / 0.2)
    ws = ws + (a_half - ws[-1]) * bl
    wl = wl + (a_half - wl[-1]) * bl
    ws_raw = ws_raw + (a_half - ws_raw[-1]) * bl
    m_s, m_l, pattern = _regional(rng, phen)
    long_share = rng.uniform(0.35, 0.65) * (0.6 if pattern in ("lad", "apical") else 1.0)
    k, kL = _solve_k(L_ed, ws, wl, m_s, m_l, ef, long_share)
    # placement: apex near the sector axis, 1.2-3.5 cm deep, base down and to the right
    depth_apex = apex_cm / cm_px
    ax = np.array([np.sin(rot), np.cos(rot)])
    apex = np.array(probe) + depth_apex * ax + np.array([rng.uniform(-6.0, 5.0), 0.0])
    tilt = rot + np.deg2rad(rng.uniform(-3.0, 15.0))
    wall = wall_cm / cm_px
    p = {
        "pattern": pattern, "fore": fore, "bulge": bulge, "ws_raw": ws_raw,
        "t_lat": wall * rng.uniform(0.9, 1.1), "t_sep": wall * rng.uniform(0.95, 1.25),
        "t_apex": wall * rng.uniform(0.8, 1.0) * (1.5 if fore < 1.0 else 1.0),
        "depth_cm": depth_cm, "zoom": zoom,
        # RV: starts part-way down the septum, crescent following it
        "rv_start": rng.uniform(0.1, 0.35) * (0.6 if rng.random() < 0.25 else 1.0),
        "rv_width": rng.uniform(1.1, 1.9) / cm_px * (1.35 if rng.random() < 0.2 else 1.0),
        "rv_widest": rng.uniform(0.45, 0.75), "rv_blunt": rng.uniform(0.7, 1.3),
        "rv_ann": rng.uniform(0.7, 0.95), "tv_off": rng.uniform(0.2, 0.8) / cm_px,
        "t_rv": rng.uniform(0.3, 0.55) / cm_px, "rv_squeeze": rng.uniform(0.15, 0.4),
        # atria
        "la_len": rng.uniform(3.3, 5.2) / cm_px * (1.25 if (phen == "dilated" or rng.random() < 0.15) else 1.0),
        "la_w": rng.uniform(1.6, 2.4) / cm_px, "la_drift": rng.uniform(-0.4, 0.6) / cm_px,
        "ra_len": rng.uniform(3.0, 4.8) / cm_px, "ra_w": rng.uniform(1.4, 2.2) / cm_px,
        "t_atr": rng.uniform(0.08, 0.18) / cm_px, "t_ias": rng.uniform(0.12, 0.3) / cm_px,
        "seed_shape": int(rng.integers(2 ** 31)),
        # papillary muscles, trabeculation, moderator band
        "pap": [(rng.uniform(0.42, 0.62), rng.uniform(1.2, 2.2) / cm_px, rng.uniform(0.35, 0.7) / cm_px)]
               + ([(rng.uniform(0.45, 0.6), rng.uniform(0.9, 1.6) / cm_px, rng.uniform(0.3, 0.5) / cm_px)]
                  if rng.random() < 0.35 else []),
        "trab": rng.uniform(0.0, 1.0), "moderator": rng.random() < 0.6,
        "sway_rot": np.deg2rad(rng.uniform(-3.0, 3.0)),
    }
    return Heart2(
        ef_target=ef, phenotype=phen, hr=hr, t0=-rng.uniform(0.0, 60.0 / hr), systole=0.52 - 0.0017 * hr,
        fps=fps, n_frames=n_frames, probe=probe, rot=rot, half_angle=half_angle, radius=radius,
        cm_per_px=cm_px, apex=tuple(apex), tilt=tilt, L_ed=L_ed, ws_ed=ws, wl_ed=wl, m_s=m_s, m_l=m_l,
        k=k, kL=kL, sway=(rng.uniform(-2.0, 2.0), rng.uniform(-2.5, 0.5)), p=p)


# ------------------------------------------------------------------------------------ LV at time c
def lv_shape(h: Heart2, c: float):
    """(L, ws, wl) of the LV cavity at contraction c."""
    c = float(c)
    return h.L_ed * (1.0 - h.kL * c), h.ws_ed * (1.0 - h.k * h.m_s * c), h.wl_ed * (1.0 - h.k * h.m_l * c)


def offset(h: Heart2, c: float) -> np.ndarray:
    """Whole-heart translation (px) at contraction c."""
    return np.asarray(h.sway) * float(c)


def tracing(h: Heart2, c: float) -> np.ndarray:
    """(21, 4) X1,Y1,X2,Y2: row 0 apex -> annulus midpoint, rows 1..20 chords (septal -> lateral)."""
    L, ws, wl = lv_shape(h, c)
    A = np.asarray(h.apex) + offset(h, c)
    u, v = h.u, h.v
    out = np.empty((N_DISKS + 1, 4))
    out[0, :2], out[0, 2:] = A, A + L * u
    s = SIG_DISK * L
    centre = A + s[:, None] * u
    out[1:, :2] = centre - np.interp(SIG_DISK, SIG, ws)[:, None] * v
    out[1:, 2:] = centre + np.interp(SIG_DISK, SIG, wl)[:, None] * v
    return out


def lv_polygon(h: Heart2, c: float) -> np.ndarray:
    """LV cavity outline (screen px), apex -> lateral wall -> annulus -> septum."""
    L, ws, wl = lv_shape(h, c)
    A = np.asarray(h.apex) + offset(h, c)
    u, v = h.u, h.v
    s = SIG * L
    lat = A + s[:, None] * u + wl[:, None] * v
    sep = A + s[:, None] * u - ws[:, None] * v
    return np.concatenate([lat, sep[::-1][:-1]])


def lv_mask(h: Heart2, c: float, size: int = SIZE, scale: int = 1) -> np.ndarray:
    """uint8 (size*scale)^2 mask of the LV cavity at contraction c (pixel centres at integer coords)."""
    m = np.zeros((size * scale, size * scale), np.uint8)
    pts = np.round((lv_polygon(h, c) * scale + (scale - 1) / 2.0) * 16).astype(np.int32)
    cv2.fillPoly(m, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return m


def lv_volume_ml(h: Heart2, c: float) -> float:
    L, ws, wl = lv_shape(h, c)
    return volume_px(L, ws, wl) * h.cm_per_px ** 3


# ------------------------------------------------------------------------------ other chambers (ED)
def chambers(h: Heart2, n_pts: int = 64) -> dict:
    """ED outlines of the four cavities (screen px) and landmarks, from the shape parameters."""
    p = h.p
    A, u, v = np.asarray(h.apex), h.u, h.v
    rng = np.random.default_rng(p["seed_shape"])
    to_xy = lambda s, n: A + np.asarray(s)[:, None] * u + np.asarray(n)[:, None] * v  # noqa: E731
    L = h.L_ed
    lv = lv_polygon(h, 0.0)
    # RV: from rv_start*L to the tricuspid annulus, septal side follows the LV septum + septal thickness
    tau = np.linspace(0.0, 1.0, n_pts)
    s0, s1 = p["rv_start"] * L, L - p["tv_off"]
    s_rv = s0 + tau * (s1 - s0)
    n_sep = -(np.interp(s_rv / L, SIG, p["ws_raw"]) + p["t_sep"])
    w_rv = p["rv_width"] * base_profile(tau, p["rv_widest"], p["rv_blunt"], p["rv_ann"]) * harmonics(rng, tau, 0.06)
    n_free = n_sep - 2.0 * w_rv
    rv = np.concatenate([to_xy(s_rv, n_sep), to_xy(s_rv[::-1], n_free[::-1])])

    def atrium(s_a, length, c0, drift, h0, hmax, amp):
        t = np.linspace(0.0, 1.0, n_pts)
        half = np.where(t < 0.4, h0 + (hmax - h0) * np.sin(np.pi / 2 * t / 0.4),
                        hmax * np.clip(1 - ((t - 0.4) / 0.6) ** 2, 0, 1) ** 0.5)
        hs = half * harmonics(rng, t, amp)
        hl = half * harmonics(rng, t, amp)
        return s_a + t * length, c0 + drift * t, hs, hl

    ann = float(h.ws_ed[-1])
    s_la, c_la, hs_la, hl_la = atrium(L, p["la_len"], 0.0, p["la_drift"], ann, p["la_w"], 0.07)
    rv_c1 = float(n_sep[-1] - w_rv[-1])                  # RV centre at the tricuspid annulus
    s_ra, c_ra, hs_ra, hl_ra = atrium(s1, p["ra_len"], rv_c1, -0.1 * p["ra_w"], float(w_rv[-1]), p["ra_w"], 0.08)
    # keep the interatrial septum: RA's LV-side edge stays t_ias off the LA's septal edge
    la_sep_at_ra = np.interp(s_ra, s_la, c_la - hs_la, left=-1e3, right=-1e3)
    lim_la = np.where(la_sep_at_ra > -1e3, la_sep_at_ra - p["t_ias"], c_ra + hl_ra)
    # at the crux the RA stays on the RV side of the septum, then widens smoothly toward the LA
    lim = n_sep[-1] + (np.maximum(lim_la, n_sep[-1]) - n_sep[-1]) * smoothstep((s_ra - L) / (0.12 * L))
    ra_right = np.minimum(np.minimum(c_ra + hl_ra, lim), lim_la)
    la = np.concatenate([to_xy(s_la, c_la + hl_la), to_xy(s_la[::-1], (c_la - hs_la)[::-1])])
    ra = np.concatenate([to_xy(s_ra, ra_right), to_xy(s_ra[::-1], (c_ra - hs_ra)[::-1])])
    hinges = {"mv_septal": A + L * u - ann * v, "mv_lateral": A + L * u + ann * v,
              "tv_septal": A + s1 * u + n_sep[-1] * v, "tv_lateral": A + s1 * u + n_free[-1] * v}
    return {"lv": lv, "rv": rv, "la": la, "ra": ra, "hinges": hinges,
            "rv_free": (s_rv, n_free, w_rv), "s_bottom": float(max(s_la[-1], s_ra[-1]))}


def inverse_map(h: Heart2, s: np.ndarray, n: np.ndarray, c: float, s_bottom: float, rv=None):
    """Material (ED) heart coordinates of screen heart coordinates (s, n) at contraction c.

    Inside the LV the map is the exact per-side scaling of the cavity; outside an area-preserving map
    thickens the walls where they move and fades to identity; the AV plane moves toward the fixed apex
    and the atria stretch; the RV free wall moves toward the septum."""
    L, ws, wl = lv_shape(h, c)
    L_ed = h.L_ed
    S_b = s_bottom + 10.0
    s_ed = np.where(s <= L, s * (L_ed / L), L_ed + (s - L) * ((S_b - L_ed) / (S_b - L)))
    s_ed = np.where((s < 0.0) | (s > S_b), s, s_ed)
    sig = np.clip(s / L, 0.0, 1.0)
    pos = n >= 0.0
    e_t = np.where(pos, np.interp(sig, SIG, wl), np.interp(sig, SIG, ws))
    e_e = np.where(pos, np.interp(sig, SIG, h.wl_ed), np.interp(sig, SIG, h.ws_ed))
    fade = np.clip(1.0 - (s - L) / 8.0, 0.0, 1.0) * (s >= 0.0)
    e_t = e_e + (e_t - e_e) * fade
    inside = np.abs(n) <= e_t
    n_in = n * (e_e / np.maximum(e_t, 1e-3))
    n_out = np.sign(n) * np.sqrt(np.maximum(n * n + e_e * e_e - e_t * e_t, 0.0))
    n_ed = np.where(inside, n_in, n_out)
    if rv is not None and c > 0:   # RV free wall squeeze
        s_rv, n_free, w_rv = rv
        nf = np.interp(s_ed, s_rv, n_free, left=np.nan, right=np.nan)
        wr = np.interp(s_ed, s_rv, w_rv, left=0.0, right=0.0)
        gap = (n_ed - np.nan_to_num(nf, nan=-1e4)) / np.maximum(wr * 1.2, 1.0)
        d = h.p["rv_squeeze"] * c * wr * np.exp(-gap ** 2)
        n_ed = n_ed - d
    return s_ed, n_ed
