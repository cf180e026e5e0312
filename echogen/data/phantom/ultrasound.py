"""Simulator v2 image formation: tissue-fixed scatterers -> beam (polar) grid -> PSF -> envelope ->
log compression -> scan conversion.

Per video (`Scene2.__init__`): the ED anatomy is rasterised once on a 2x Cartesian canvas as an
echogenicity map (myocardium, brighter septum, papillary muscles, trabeculation, moderator band,
fibrous annuli, AV-groove fat, pericardium, heterogeneous surroundings, specular brightness that
depends on the angle between the wall and the beam, lateral-wall dropout) times complex white
scatterers (plus sparse strong scatterers). Per frame (`frame`): every sample of the beam grid
(NR depths x NB beams) is pulled back to the ED canvas through the heart's inverse map (so speckle
moves with the tissue), leaflets are drawn in beam coordinates, probe-fixed clutter (near-field,
reverberation bands, apical haze) is added, attenuation and shadows (ribs, lung) are applied, the
complex field is convolved with a PSF whose lateral width depends on depth (focus), electronic noise
is added, and the envelope goes through TGC, log compression (gain, dynamic range), a reject level
and scan conversion to the 112x112 screen.
"""
from __future__ import annotations

import cv2
import numpy as np

from echogen.data.phantom.anatomy import cycle
from echogen.data.phantom.shape import SIG, SIZE, Heart2, chambers, inverse_map, lv_shape, offset

SCALE = 2
PAD = 20
CANVAS = (SIZE + 2 * PAD) * SCALE
NR, NB = 150, 112          # beam grid: depth samples x beams


def _to_canvas(xy) -> np.ndarray:
    return (np.asarray(xy, np.float64) + PAD) * SCALE


def _pt16(xy) -> tuple:
    """Screen point -> canvas point in cv2 fixed point (shift=4)."""
    return tuple(int(x) for x in np.round(_to_canvas(xy) * 16))


def _fill(mask: np.ndarray, poly: np.ndarray, val=1) -> None:
    pts = np.round(_to_canvas(poly) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], val, lineType=cv2.LINE_8, shift=4)


def _field(rng, shape, sigma: float) -> np.ndarray:
    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return f / (f.std() + 1e-6)


def sample_probe(rng: np.random.Generator, h: Heart2) -> dict:
    """Image-formation settings (beam PSF, gain, dynamic range, TGC, noise, clutter, shadows)."""
    return {
        "psf_ax": rng.uniform(0.55, 1.0),        # axial PSF sigma (beam-grid samples)
        "psf_lat": rng.uniform(0.8, 1.4),        # lateral sigma at focus (beams)
        "psf_lat_far": rng.uniform(1.2, 2.0),    # away from focus
        "focus": rng.uniform(0.35, 0.7),         # focal depth (fraction of the sector radius)
        "atten": rng.uniform(0.2, 0.8),          # round-trip attenuation over the sector (nepers)
        "tgc": rng.uniform(0.5, 0.95),           # fraction of the attenuation TGC compensates
        "tgc_wiggle": rng.normal(0.0, 0.12, size=4),  # TGC slider unevenness (Legendre coefficients)
        "near_tgc": rng.uniform(0.2, 0.6),       # near-field gain turned down
        "gain_db": rng.uniform(-4.0, 4.0),
        "myo_grey": rng.uniform(0.21, 0.30),     # display level of myocardium (before gain)
        "dr_db": rng.uniform(70.0, 90.0),        # dynamic range
        "reject": rng.uniform(0.0, 0.03),
        "black": rng.uniform(0.0, 0.008),        # grey-map black level
        "gamma": rng.uniform(0.9, 1.25),         # grey-map gamma
        "noise_db": rng.uniform(-42.0, -32.0),   # electronic noise re myocardium
        "near": rng.uniform(0.04, 0.25),         # near-field clutter amplitude
        "near_depth": rng.uniform(0.5, 1.5) / h.cm_per_px,
        "haze": rng.uniform(0.1, 0.6),           # apical haze in the LV apex
        "reverb": rng.uniform(0.0, 0.25),        # reverberation bands
        "lat_fall": rng.uniform(0.2, 0.6),       # brightness fall-off toward the sector edges
        "dropout": rng.uniform(0.3, 0.95),       # lateral-wall dropout strength
        "dropout_at": rng.uniform(0.25, 0.85),   # ... and its level along the wall
        "specular": rng.uniform(0.3, 0.8),       # weight of the wall-beam angle dependence
        "septum": rng.uniform(1.1, 1.7),         # septum brighter than the free walls
        "blood": rng.uniform(0.02, 0.07),
        "outside": rng.uniform(0.04, 0.12),      # tissue around the heart
        "rib": rng.random() < 0.3, "rib_side": rng.choice([-1.0, 1.0]), "rib_w": rng.uniform(0.06, 0.2),
        "rib_gain": rng.uniform(0.15, 0.5),
        "lung": rng.random() < 0.35, "lung_w": rng.uniform(0.05, 0.2),
        "peri": rng.uniform(1.6, 3.5),           # pericardium brightness
        "smooth": rng.uniform(1.1, 1.9),         # scanner speckle reduction (display blur, beams)
        "compound": rng.uniform(0.5, 1.0),       # weight of the second (independent) speckle set
        "screen_blur": rng.uniform(0.2, 0.8),    # resampling blur of the exported frame (px)
        "leaflet": rng.uniform(0.5, 1.4), "leaflet_w": rng.uniform(1.5, 3.2),
    }


def echogenicity(h: Heart2, q: dict, rng: np.random.Generator, ch: dict) -> np.ndarray:
    """ED echogenicity (linear amplitude, myocardium ~1) on the (CANVAS, CANVAS) canvas."""
    p = h.p
    lv = np.zeros((CANVAS, CANVAS), np.uint8)
    _fill(lv, ch["lv"])
    blood = lv.copy()
    for k in ("rv", "la", "ra"):
        _fill(blood, ch[k])
    g = np.arange(CANVAS, dtype=np.float32) / SCALE - PAD
    X, Y = np.meshgrid(g, g)
    A, u, v = np.asarray(h.apex, np.float32), h.u.astype(np.float32), h.v.astype(np.float32)
    s = (X - A[0]) * u[0] + (Y - A[1]) * u[1]
    n = (X - A[0]) * v[0] + (Y - A[1]) * v[1]
    L = h.L_ed
    # wall thickness by region
    sep_n = -(np.interp(np.clip(s / L, 0, 1), SIG, h.ws_ed))
    hmap = np.full(s.shape, p["t_lat"], np.float32)
    hmap = np.where(n < 0, p["t_sep"], hmap)
    hmap = np.where(n < sep_n - p["t_sep"] - 1.0, p["t_rv"], hmap)
    hmap = np.where(s < 0.25 * L, np.maximum(hmap * 0.7, p["t_apex"] * np.clip(1 - s / (0.25 * L), 0, 1)), hmap)
    hmap = np.where(s > L + 1.5, p["t_atr"], hmap).astype(np.float32)
    dist = cv2.distanceTransform((1 - blood).astype(np.uint8), cv2.DIST_L2, 5) / SCALE
    heart = (dist < hmap).astype(np.uint8)
    k = int(1.6 * p["t_sep"] * SCALE) | 1
    heart = cv2.morphologyEx(heart, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    heart = np.maximum(heart, blood)
    myo = (heart > 0) & (blood == 0)
    out_d = cv2.distanceTransform((1 - heart).astype(np.uint8), cv2.DIST_L2, 5) / SCALE
    lf = _field(rng, blood.shape, 9.0 * SCALE)
    lf2 = _field(rng, blood.shape, 2.5 * SCALE)
    lf3 = _field(rng, blood.shape, 1.0 * SCALE)
    # surroundings, pericardium (brightest behind the atria and lateral to the LV)
    e = q["outside"] * np.exp(0.55 * lf + 0.35 * lf2)
    peri_w = (0.12 + 0.2 * (n > 0) + 0.45 * (s > L + 4)) / h.cm_per_px
    peri = q["peri"] * np.exp(0.3 * lf2) * (0.35 + 0.35 * (n > 0) + 0.8 * (s > L + 4))
    # myocardium: heterogeneous, septum a little brighter, specular angle dependence, lateral dropout
    septum = (n < 0) & (n > sep_n - p["t_sep"] - 1.0)
    e_m = np.exp(0.4 * lf + 0.3 * lf2 + 0.12 * lf3) * np.where(septum, q["septum"], 1.0)
    sm = cv2.GaussianBlur(heart.astype(np.float32), (0, 0), 3.0 * SCALE)
    gy, gx = np.gradient(sm)
    gn = np.sqrt(gx * gx + gy * gy) + 1e-6
    bx, by = X - h.probe[0], Y - h.probe[1]
    bn = np.sqrt(bx * bx + by * by) + 1e-3
    cos = np.abs(gx * bx + gy * by) / (gn * bn)
    e_m = e_m * (1.0 - q["specular"] + q["specular"] * (0.25 + 1.2 * cos ** 2))
    # posterior band behind the atria (pericardium, AV groove, descending aorta region): broad, bright
    sb = ch["s_bottom"]
    band = (np.exp(-((s - sb - 0.3 / h.cm_per_px) / (0.55 / h.cm_per_px)) ** 2)
            * (np.abs(n + 0.2 * h.L_ed) < 0.9 * h.L_ed))
    e = np.maximum(e, q["peri"] * 1.1 * np.exp(0.4 * lf2 + 0.3 * lf) * band)
    # pericardium: specular, bright where the beam meets it head-on (behind the atria, at the apex)
    peri = peri * (0.15 + 1.1 * cos ** 2)
    e = np.where(out_d < peri_w, np.maximum(e, peri * np.exp(-out_d / (0.6 * peri_w + 0.5))), e)
    # lateral-wall dropout band (a range along the LV lateral wall)
    lat = (n > 0) & (s > 0.1 * L) & (s < 1.1 * L)
    band = np.exp(-((s / L - q["dropout_at"]) / 0.22) ** 2) * lat
    e_m = e_m * (1.0 - q["dropout"] * band)
    e_m = np.where(s > L + 1.5, 0.3 * e_m, e_m)  # thin, dim atrial walls
    e = np.where(myo, e_m, e)
    # blood with faint swirls
    e = np.where(blood > 0, q["blood"] * np.exp(0.5 * lf2), e).astype(np.float32)
    # papillary muscles (lateral, optional medial) and LV trabeculation, inside the LV cavity
    wl, ws = h.wl_ed, h.ws_ed
    for j, (sg, ln, wd) in enumerate(p["pap"]):
        side = 1.0 if j == 0 else -1.0
        edge = float(np.interp(sg, SIG, wl if side > 0 else ws))
        c_xy = np.asarray(h.apex) + sg * L * h.u + side * (edge - 0.45 * wd) * h.v
        ang = np.degrees(np.arctan2(h.u[1], h.u[0])) + side * 8.0
        cv2.ellipse(e, _pt16(c_xy),
                    (int(ln * SCALE * 8), int(wd * SCALE * 8)), ang, 0, 360, float(0.9), -1, cv2.LINE_AA, 4)
    n_tr = int(3 + 10 * p["trab"])
    for _ in range(n_tr):
        sg = rng.uniform(0.05, 0.7)
        side = 1.0 if rng.random() < 0.7 else -1.0
        edge = float(np.interp(sg, SIG, wl if side > 0 else ws))
        a = np.asarray(h.apex) + sg * L * h.u + side * edge * h.v
        b = a - side * rng.uniform(0.15, 0.45) / h.cm_per_px * h.v + rng.normal(0, 1.0) * h.u
        cv2.line(e, _pt16(a), _pt16(b),
                 float(rng.uniform(0.2, 0.5)), max(1, int(rng.uniform(0.8, 1.8) * SCALE)), cv2.LINE_AA, 4)
    # RV moderator band
    s_rv, n_free, w_rv = ch["rv_free"]
    if p["moderator"]:
        j = int(len(s_rv) * 0.45)
        a = np.asarray(h.apex) + s_rv[j] * h.u + (n_free[j] + 2 * w_rv[j]) * h.v
        b = np.asarray(h.apex) + s_rv[j] * h.u + n_free[j] * h.v
        cv2.line(e, _pt16(a), _pt16(b),
                 float(rng.uniform(0.5, 1.0)), max(2, int(rng.uniform(0.12, 0.3) / h.cm_per_px * SCALE)),
                 cv2.LINE_AA, 4)
    # fibrous annuli (bright), AV-groove fat lateral to the mitral annulus
    for name, pt in ch["hinges"].items():
        cv2.circle(e, _pt16(pt), int(0.25 / h.cm_per_px * SCALE * 16),
                   float(rng.uniform(1.5, 3.0)), -1, cv2.LINE_AA, 4)
    fat = ch["hinges"]["mv_lateral"] + (p["t_lat"] + 0.3 / h.cm_per_px) * h.v
    cv2.circle(e, _pt16(fat), int(0.5 / h.cm_per_px * SCALE * 16),
               float(rng.uniform(1.2, 2.2)), -1, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(e, (0, 0), 1.6)  # soft tissue boundaries


class Scene2:
    """Everything per video that does not change from frame to frame."""

    def __init__(self, h: Heart2, rng: np.random.Generator):
        self.h, self.rng = h, rng
        self.q = q = sample_probe(rng, h)
        self.ch = ch = chambers(h)
        e = echogenicity(h, q, rng, ch)
        # band-limited complex scatterers (so that bilinear sampling does not modulate their variance)
        # two independent scatterer sets (frequency compounding: their envelopes are averaged)
        z = cv2.GaussianBlur(rng.standard_normal((CANVAS, CANVAS, 4)).astype(np.float32), (0, 0), 1.0)
        z *= np.float32(np.sqrt(0.5) / z.std())
        strong = (rng.random((CANVAS, CANVAS)) < 0.004).astype(np.float32) * 3.0  # sparse bright scatterers
        self.tex = (z * (e * (1.0 + strong))[..., None]).astype(np.float32)
        # beam grid: depth r (px) x angle th (rad) -> screen -> heart coordinates
        r = (np.arange(NR, dtype=np.float32) + 0.5) * (h.radius / NR)
        th = np.linspace(-h.half_angle, h.half_angle, NB).astype(np.float32)
        R, TH = np.meshgrid(r, th, indexing="ij")
        X = h.probe[0] + R * np.sin(TH + h.rot)
        Y = h.probe[1] + R * np.cos(TH + h.rot)
        A, u, v = np.asarray(h.apex, np.float32), h.u.astype(np.float32), h.v.astype(np.float32)
        self.s0 = (X - A[0]) * u[0] + (Y - A[1]) * u[1]
        self.n0 = (X - A[0]) * v[0] + (Y - A[1]) * v[1]
        self.r, self.th = r, th
        depth = r / h.radius
        # attenuation, shadows (ribs, lung at the sector edge), TGC, lateral fall-off
        att = np.exp(-q["atten"] * depth)[:, None] * np.ones((1, NB), np.float32)
        thn = th / h.half_angle
        if q["rib"]:
            edge = q["rib_side"] * thn > 1.0 - 2 * q["rib_w"]
            att = att * np.where(edge[None, :] & (R > 0.1 * h.radius), q["rib_gain"], 1.0)
        if q["lung"]:
            side = np.clip((thn - (1.0 - 2 * q["lung_w"])) / (2 * q["lung_w"]), 0, 1)
            att = att * (1.0 - 0.8 * side[None, :] * (R > 0.25 * h.radius))
        self.att = cv2.GaussianBlur(att.astype(np.float32), (0, 0), 2.0)
        wig = np.polynomial.legendre.legval(2 * depth - 1, np.concatenate([[0.0], q["tgc_wiggle"]]))
        self.tgc = (np.exp(q["tgc"] * q["atten"] * depth + wig)[:, None]
                    * (1.0 - q["near_tgc"] * np.exp(-depth / 0.2))[:, None]
                    * (1.0 - q["lat_fall"] * np.abs(thn) ** 3)[None, :]).astype(np.float32)
        # depth-dependent lateral PSF: blend of a narrow (focus) and a wide blur
        self.k_near = np.float32(np.sqrt(4 * np.pi * q["psf_lat"] * q["psf_ax"]))  # keeps speckle power
        self.k_far = np.float32(np.sqrt(4 * np.pi * q["psf_lat_far"] * q["psf_ax"]))
        self.w_far = np.clip(np.abs(depth - q["focus"]) / 0.45, 0, 1).astype(np.float32)[:, None, None]
        # probe-fixed clutter: near field, reverberation bands, apical haze; two fields for slow drift
        nd = q["near_depth"]
        prof = q["near"] * np.exp(-r / nd) + q["reverb"] * sum(
            0.6 ** j * np.exp(-((r - (j + 1) * 1.6 * nd) / (0.35 * nd)) ** 2) for j in range(3))
        apex_r = float(np.hypot(h.apex[0] - h.probe[0], h.apex[1] - h.probe[1]))
        prof = prof + q["haze"] * np.exp(-((r - apex_r - 0.15 * h.L_ed) / (0.18 * h.L_ed)) ** 2)
        self.clut_amp = prof.astype(np.float32)[:, None, None]
        clut = rng.standard_normal((2 * NR, NB, 2)).astype(np.float32)   # hazy: coarser than speckle
        clut = cv2.GaussianBlur(clut, (0, 0), 2.5, sigmaY=2.0)
        self.clut = np.tile(clut / clut.std() * np.float32(np.sqrt(0.5)), (1, 1, 2)).reshape(2, NR, NB, 4)
        self.noise_amp = np.float32(10 ** (q["noise_db"] / 20.0))
        self.leaf_z = rng.standard_normal((NR, NB, 4)).astype(np.float32)
        self.comp = np.float32(q["compound"])
        self.g_myo = np.float32(q["myo_grey"] * 10 ** (q["gain_db"] / 40.0))  # display level of myocardium
        # scan conversion map: screen pixel -> (beam, depth) indices
        g = np.arange(SIZE, dtype=np.float32)
        sx, sy = np.meshgrid(g, g)
        dx, dy = sx - h.probe[0], sy - h.probe[1]
        rr = np.hypot(dx, dy)
        tt = np.arctan2(dx, dy) - h.rot
        self.map_r = (rr / (h.radius / NR) - 0.5).astype(np.float32)
        self.map_b = ((tt + h.half_angle) / (2 * h.half_angle) * (NB - 1)).astype(np.float32)
        inside = (rr < h.radius) & (np.abs(tt) < h.half_angle) & (dy > 0)
        self.sector = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.5)
        self.rv_free = ch["rv_free"]

    def _polar(self, xy: np.ndarray) -> np.ndarray:
        """Screen points -> (beam index, depth index) of the beam grid (cv2 point order)."""
        h = self.h
        d = np.asarray(xy, np.float64) - np.asarray(h.probe)
        r = np.hypot(d[:, 0], d[:, 1])
        t = np.arctan2(d[:, 0], d[:, 1]) - h.rot
        return np.stack([(t + h.half_angle) / (2 * h.half_angle) * (NB - 1), r / (h.radius / NR) - 0.5], 1)

    def leaflets(self, c: float, o: float, off: np.ndarray) -> np.ndarray:
        """Mitral and tricuspid leaflets drawn in beam coordinates, (NR, NB) amplitude."""
        h, q = self.h, self.q
        L, ws, wl = lv_shape(h, c)
        A = np.asarray(h.apex) + off
        u, v = h.u, h.v
        layer = np.zeros((NR, NB), np.float32)
        ann = float(ws[-1])
        s_rv, n_free, w_rv = self.rv_free
        s_t = float(s_rv[-1]) * L / h.L_ed
        n_ts, n_tl = float(n_free[-1] + 2 * w_rv[-1]), float(n_free[-1])
        valves = [(L, -ann, ann, 0.62, 0.4, 1.0), (s_t, n_ts, n_tl, 0.5, 0.45, -1.0)]
        for s_v, n_a, n_b, la, lb, sgn in valves:
            pa, pb = A + s_v * u + n_a * v, A + s_v * u + n_b * v
            width = abs(n_b - n_a)
            mid = 0.5 * (pa + pb) - 0.12 * width * u
            for pt, length, side in ((pa, la, -sgn), (pb, lb, sgn)):
                closed = mid - pt
                closed /= np.linalg.norm(closed) + 1e-6
                opened = -u + 0.15 * side * v
                d = (1 - o) * closed + o * opened
                d /= np.linalg.norm(d) + 1e-6
                bend = np.array([-d[1], d[0]]) * 0.08 * length * width * (1 if side > 0 else -1)
                pts = np.array([pt + d * length * width * f + bend * np.sin(np.pi * f) for f in (0, 0.33, 0.66, 1.0)])
                pp = np.round(self._polar(pts) * 16).astype(np.int32)
                cv2.polylines(layer, [pp], False, float(q["leaflet"]), max(1, int(round(q["leaflet_w"]))),
                              cv2.LINE_AA, 4)
        return layer

    def frame(self, t: float, noise_rng: np.random.Generator) -> np.ndarray:
        """One frame at time t (s), float32 (SIZE, SIZE) in [0, 1]."""
        h, q = self.h, self.q
        c, o = cycle(t, h)
        c, o = float(c), float(o)
        off = offset(h, c)
        s = self.s0 - (off[0] * h.u[0] + off[1] * h.u[1])
        n = self.n0 - (off[0] * h.v[0] + off[1] * h.v[1])
        s_ed, n_ed = inverse_map(h, s, n, c, self.ch["s_bottom"], self.rv_free)
        mx = ((h.apex[0] + s_ed * h.u[0] + n_ed * h.v[0] + PAD) * SCALE).astype(np.float32)
        my = ((h.apex[1] + s_ed * h.u[1] + n_ed * h.v[1] + PAD) * SCALE).astype(np.float32)
        f = cv2.remap(self.tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        f += self.leaflets(c, o, off)[..., None] * self.leaf_z
        ph = 2 * np.pi * t * 0.35
        f += self.clut_amp * (np.cos(ph) * self.clut[0] + np.sin(ph) * self.clut[1])
        f *= self.att[..., None]
        f += noise_rng.standard_normal(f.shape, dtype=np.float32) * self.noise_amp  # electronic noise
        near = cv2.GaussianBlur(f, (0, 0), q["psf_lat"], sigmaY=q["psf_ax"]) * self.k_near
        far = cv2.GaussianBlur(f, (0, 0), q["psf_lat_far"], sigmaY=q["psf_ax"]) * self.k_far
        f = near + (far - near) * self.w_far
        env = np.sqrt((f[..., 0] ** 2 + f[..., 1] ** 2 + self.comp * (f[..., 2] ** 2 + f[..., 3] ** 2))
                      / (1.0 + self.comp)) * self.tgc
        db = 20.0 * np.log10(env + 1e-6)
        disp = np.clip(self.g_myo + db / q["dr_db"], 0.0, 1.0)
        disp = np.clip((disp - q["reject"]) / (1.0 - q["reject"]), 0.0, 1.0) ** q["gamma"]
        disp = q["black"] + (1.0 - q["black"]) * disp   # grey-map black level
        if q["smooth"] > 0.2:
            disp = cv2.GaussianBlur(disp, (0, 0), q["smooth"], sigmaY=0.5 * q["smooth"])
        img = cv2.remap(disp.astype(np.float32), self.map_b, self.map_r, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if q["screen_blur"] > 0.3:  # resampling of the exported frame (real frames are downsized too)
            img = cv2.GaussianBlur(img, (0, 0), q["screen_blur"])
        return img * self.sector

    def render(self, noise_rng: np.random.Generator) -> np.ndarray:
        t = np.arange(self.h.n_frames) / self.h.fps
        out = np.empty((len(t), SIZE, SIZE), np.uint8)
        for i, ti in enumerate(t):
            out[i] = np.clip(self.frame(ti, noise_rng) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out
