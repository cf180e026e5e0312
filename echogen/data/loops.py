"""Seamless loops: one whole heart cycle, end-diastole (ED) to end-diastole, cut from a longer clip.

Scanners store a loop from one R wave (end-diastole, the largest LV) to the next, so it repeats without a
jump. A generated clip (1.28 s for the demo preset) is not a whole number of beats: played as a loop it
jumps at the wrap. `seamless_loop` finds the ED frames from an LV-area curve (the LV tracer's, when one is
given; else the dark-area curve of the sector, `dark_area_curve`), takes one cycle [ED_k, ED_k+1) and
checks the wrap: the change from the last frame back to the first must be no larger than the largest
frame-to-frame change inside the loop. Every displayed and exported loop (the app, pools, review sets and
`echogen generate`) goes through it; the full clip stays available beside it.

    cut = seamless_loop(video, fps, frame=conditioning_frame)      # video (T, H, W) float [0, 1] or uint8
    cut.video, cut.start, cut.stop, cut.complete, cut.method
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_PERIOD_S = 0.33        # fastest heart rate considered: ~180 bpm
MAX_PERIOD_S = 2.0         # slowest: 30 bpm
ED_FULL = 0.2             # an end-diastole at a clip's edge: within this fraction of the area range of the fullest LV
MIN_FRAMES = 8             # a cycle shorter than this is not a displayable heart cycle (and not told from noise)
MIN_SWING = 0.7            # a cycle's LV-area swing (max - min inside it) as a share of the whole clip's: a whole
                           # beat holds end-diastole and end-systole; below this it is part of one (bench/loop_cycles.py)


def dark_area_curve(video, frame=None, threshold: float = 0.15) -> np.ndarray:
    """Blood-pool area over time: the fraction of the sector (found on `frame`, else on the clip's mean
    frame) that is dark in each frame. Chambers fill and empty with the heart cycle, so this traces the beat.
    video: (T, H, W) float [0, 1] or uint8."""
    import cv2

    from echogen.data.inputs import find_sector

    v = _float(video)
    h = v.shape[-1]
    ref = v.mean(0) if frame is None else np.asarray(frame, np.float32)
    if ref.dtype == np.uint8 or ref.max() > 1.0:
        ref = ref / 255.0
    fr = cv2.resize((np.clip(ref, 0, 1) * 255).astype(np.uint8), (h, h), interpolation=cv2.INTER_AREA)
    mask = find_sector(fr)
    mask = mask.astype(bool) if mask is not None and mask.sum() > 0 else np.ones((h, h), bool)
    return np.array([(f[mask] < threshold).mean() for f in v])


def frame_steps(video) -> np.ndarray:
    """Mean absolute difference between consecutive frames: (T-1,)."""
    v = _float(video)
    return np.abs(np.diff(v, axis=0)).reshape(len(v) - 1, -1).mean(1) if len(v) > 1 else np.zeros(0)


def frame_diff(a, b) -> float:
    return float(np.abs(_float(a) - _float(b)).mean())


def wrap_ok(loop) -> bool:
    """The loop repeats without a jump: last -> first changes no more than the largest in-loop step."""
    v = _float(loop)
    if len(v) < 3:
        return False
    return frame_diff(v[-1], v[0]) <= float(frame_steps(v).max()) + 1e-9


@dataclass
class LoopCut:
    video: np.ndarray              # the loop: frames [start, stop) of the clip (crossfaded at the end if crossfade)
    start: int                     # first frame (end-diastole)
    stop: int                      # one past the last; frame `stop` (if any) is the next end-diastole
    fps: float
    complete: bool                 # True: one whole ED-to-ED cycle that wraps without a jump
    method: str                    # how it was found (for captions, records and docs)
    ed: list = field(default_factory=list)      # end-diastolic frames found in the clip
    area: np.ndarray | None = None              # the LV-area curve used
    wrap: float = 0.0                           # frame change at the wrap
    max_step: float = 0.0                       # largest in-loop frame change
    crossfade: int = 0                          # frames blended into the ones before `start` (0: a plain cut)

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict:
        return {"loop_start": int(self.start), "loop_stop": int(self.stop), "loop_frames": int(self.frames),
                "loop_complete": bool(self.complete), "loop_method": self.method, "loop_ed": [int(x) for x in self.ed],
                "loop_crossfade": int(self.crossfade)}


def end_diastoles(area, fps: float, min_period_s: float = MIN_PERIOD_S, full: float = ED_FULL) -> list[int]:
    """Frames of end-diastole: local maxima of the (lightly smoothed) LV-area curve, at least min_period_s
    apart, each standing out from the trough before or after it by >= 15 % of the curve's range. A maximum at
    the clip's first or last two frames, where the curve beyond the clip is unseen, must also be a full LV: within
    `full` x the range of the curve's highest value (a clip that starts mid-ejection has a maximum at its first
    frame that is no end-diastole: a loop cut there started and ended mid-beat). Inside the clip a weaker beat's
    maximum is an end-diastole (seamless_loop prefers cycles between full ones)."""
    a = np.asarray(area, np.float64)
    n = len(a)
    if n < 3 or not np.isfinite(a).all() or np.ptp(a) <= 0:
        return []
    s = np.convolve(np.pad(a, 1, mode="edge"), np.ones(3) / 3, mode="valid")      # 3-frame box
    gap = max(2, int(round(min_period_s * fps)))
    peaks = [i for i in range(n) if s[i] >= s[max(0, i - 1)] and s[i] >= s[min(n - 1, i + 1)]
             and s[i] == s[max(0, i - gap // 2):i + gap // 2 + 1].max()]
    rng = np.ptp(s)
    keep = []
    for i in peaks:
        left = s[max(0, i - gap):i + 1].min()
        right = s[i:i + gap + 1].min()
        edge = i < 2 or i > n - 3
        if s[i] - min(left, right) >= 0.15 * rng and (not edge or s[i] >= s.max() - full * rng):
            if keep and i - keep[-1] < gap:                 # a plateau: keep the higher one
                if s[i] > s[keep[-1]]:
                    keep[-1] = i
                continue
            keep.append(i)
    # the smoothed peak may be a frame off: take the raw maximum within +-1 frame
    return [int(max(range(max(0, i - 1), min(n, i + 2)), key=lambda k: a[k])) for i in keep]


def cycle_period(video, fps: float, clear: float = 0.8) -> int | None:
    """The heart cycle's length in frames from the clip itself: the lag L (one shortest to one longest cycle,
    leaving a quarter of the clip to compare) at which frames repeat best, i.e. the smallest local minimum
    of the mean |frame[t + L] - frame[t]| within 10 % of the deepest one, not at either end of the range.
    None when there is no such dip or it is not clear (its depth > `clear` x the largest difference: a heart
    that hardly moves, or noise): the LV-area curve alone then decides. Whole frames carry the beat even
    where one traced LV area is noisy."""
    v = _float(video)
    n = len(v)
    lo, hi = max(MIN_FRAMES, int(MIN_PERIOD_S * fps)), min(int(MAX_PERIOD_S * fps), n - max(2, n // 4))
    if hi - lo < 2:
        return None
    step = max(1, max(v.shape[1:]) // 64)              # ~64 px is plenty to see a beat, and keeps it cheap
    f = np.ascontiguousarray(v[:, ::step, ::step]).reshape(n, -1)
    lags = np.arange(lo, hi + 1)
    d = np.array([np.abs(f[lag:] - f[:-lag]).mean() for lag in lags])
    if d.min() > clear * d.max():
        return None
    near = d.min() + 0.1 * (d.max() - d.min())
    for k in range(1, len(d) - 1):                # a dip inside the range: at its ends the cycle may lie beyond
        if d[k] <= near and d[k] <= d[k - 1] and d[k] <= d[k + 1]:
            return int(lags[k])
    return None


def crossfaded(video, start: int, stop: int, k: int) -> np.ndarray:
    """Frames [start, stop) whose last k frames are blended towards the k frames before `start` (the same
    phase of the previous beat): weight m/k for the m-th of them, so the last frame is frame start-1 (averaged
    with frame start) and the wrap is half a natural step start-1 -> start. Only speckle is mixed; the
    anatomy is in the same phase."""
    v = np.asarray(video)
    out = _float(v[start:stop]).copy()
    n = stop - start
    for m in range(1, k + 1):
        p = n - k + m - 1
        w = m / k
        target = _float(v[start + p - n])
        if m == k:                                 # the last frame: halfway from frame start-1 to frame start
            target = 0.5 * (target + _float(v[start]))
        out[p] = (1 - w) * out[p] + w * target
    if v.dtype == np.uint8:
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out.astype(v.dtype, copy=False)


def seamless_loop(video, fps: float, area=None, frame=None, tracer=None, max_shift: int = 2,
                  crossfade: int = 4) -> LoopCut:
    """One whole cycle ED -> ED of `video` (T, H, W) that repeats without a jump.

    area: an LV-area curve (T,) to use; else tracer(video, fps) -> (T,) when a tracer function is given
    (see echogen.teaching.gate.tracer_area); else dark_area_curve(video, frame).
    Between two consecutive end-diastoles i < j the loop is frames [i, j): frame j (the next ED) is where
    the loop starts again. When the clip's own period is clear (cycle_period), only ED pairs about one period
    apart count, and one period on from (or back from) an ED counts as the next (previous) ED (a bump of the
    area curve in diastole made half-cycle loops). Of the cycles that wrap cleanly, one whose both ends are full
    LVs (close to the clip's largest area) comes first: a generated heart may refill only partly in one beat. A
    cycle whose LV-area swing is under MIN_SWING of the clip's is no whole beat (an irregular generated curve has
    bumps between which a 10-frame "cycle" misses end-systole) and is never cut.
    The boundaries may move by up to max_shift frames around the ED found (an area curve is coarse) to make
    the wrap no larger than the largest in-loop step. Generated speckle is not periodic even when the heart is (two frames a beat apart differ by more than neighbouring frames when
    the LV barely moves, as at a low EF), so when no plain cut wraps cleanly the last `crossfade` frames
    are blended into the frames before the start (see crossfaded; 0 turns this off). When no whole cycle
    is found, the whole clip is returned with complete=False.""" 
    v = np.asarray(video)
    fv = _float(v)
    n = len(fv)
    method = "given LV area"
    if area is None and tracer is not None:
        try:
            area = tracer(fv, fps)
            method = "LV tracer area"
        except Exception as e:  # a tracer that fails on this clip: the dark-area curve, and the method says so
            area = None
            method = f"dark-area curve: the LV tracer failed ({type(e).__name__}: {str(e)[:80]})"
    if area is None:
        area = dark_area_curve(fv, frame)
        method = method if method.startswith("dark-area curve") else "dark-area curve"
    area = np.asarray(area, np.float64)
    if len(area) != n:
        raise ValueError(f"LV-area curve has {len(area)} values for {n} frames")
    eds = end_diastoles(area, fps)
    steps = frame_steps(fv)
    lo, hi = max(MIN_FRAMES, int(MIN_PERIOD_S * fps)), int(MAX_PERIOD_S * fps) + 1
    pairs = list(zip(eds, eds[1:]))                       # consecutive end-diastoles: one cycle each
    period = cycle_period(fv, fps)
    if period is not None:                                # keep the cycles as long as the clip's own period
        tol = max(2, round(0.2 * period))                 # (an area bump in diastole is not an end-diastole),
        pairs = [(i, j) for i, j in pairs if abs(j - i - period) <= tol]        # and one period on from an ED
        pairs += [(i, i + period) for i in eds if i + period <= n and (i, i + period) not in pairs]
        pairs += [(j - period, j) for j in eds if j - period >= 0 and (j - period, j) not in pairs]   # ... or back
        method += f", period {period} frames"
    partial = [(i, j) for i, j in pairs if _swing(area, i, j) < MIN_SWING]
    pairs = [pq for pq in pairs if pq not in partial]     # half a beat between two bumps of an irregular curve
    refill = {pair: _refill_deficit(area, *pair) for pair in pairs}
    best = None                                           # (score, start, stop, wrap, max_step)
    for i0, j0 in pairs:
        for i in range(max(0, i0 - max_shift), min(n - 1, i0 + max_shift) + 1):
            for j in range(max(i + 1, j0 - max_shift), min(n, j0 + max_shift) + 1):   # loop = [i, j)
                if not lo <= j - i <= hi or _swing(area, i, j) < MIN_SWING:
                    continue
                wrap = frame_diff(fv[j - 1], fv[i])
                mx = float(steps[i:j - 1].max())
                # prefer: a wrap within the largest step; then a cycle whose both ends are full (refilled) LVs;
                # then the boundary closest to the ED found
                score = (wrap > mx + 1e-9, refill[i0, j0], abs(i - i0) + abs(j - j0), wrap / max(mx, 1e-9))
                if best is None or score < best[0]:
                    best = (score, i, j, wrap, mx)
    if best is not None and not best[0][0]:
        _, i, j, wrap, mx = best
        return LoopCut(v[i:j], i, j, float(fps), True, f"ED to ED; curve: {method}", eds, area, wrap, mx)
    if crossfade > 0:                                     # closest to the EDs found first
        cands = sorted(((refill[i0, j0], abs(i - i0) + abs(j - j0), i, j) for i0, j0 in pairs
                        for i in range(max(crossfade, i0 - max_shift), min(n - 1, i0 + max_shift) + 1)
                        for j in range(max(i + 1, j0 - max_shift), min(n, j0 + max_shift) + 1)
                        if lo <= j - i <= hi and j - i > 2 * crossfade and _swing(area, i, j) >= MIN_SWING))
        for _, _, i, j in cands:
            loop = crossfaded(v, i, j, crossfade)
            fl = _float(loop)
            wrap, mx = frame_diff(fl[-1], fl[0]), float(frame_steps(fl).max())
            if wrap <= mx + 1e-9:
                return LoopCut(loop, i, j, float(fps), True, f"ED to ED, {crossfade}-frame crossfade; curve: {method}",
                               eds, area, wrap, mx, crossfade)
    wrap = frame_diff(fv[-1], fv[0]) if n > 1 else 0.0
    why = ("no cycle wraps without a jump" if pairs else
           f"no cycle holds a whole beat, its LV-area swing below {MIN_SWING:.0%} of the clip's" if partial else
           "fewer than two end-diastoles" if len(eds) < 2 else f"no two end-diastoles one period ({period} frames) apart")
    return LoopCut(v, 0, n, float(fps), False, f"whole clip: {why}; curve: {method}", eds, area, wrap,
                   float(steps.max()) if len(steps) else 0.0)


def _swing(area: np.ndarray, i: int, j: int) -> float:
    """The LV-area swing over the loop's frames [i, j) as a share of the whole clip's."""
    rng = float(np.ptp(area))
    return float(np.ptp(area[i:j])) / rng if rng > 0 and j > i else 0.0


def _refill_deficit(area: np.ndarray, i: int, j: int) -> int:
    """How far the emptier end of the cycle [i, j) falls short of the clip's fullest LV, in tenths of the area
    curve's range (0: both ends full). A generated heart does not always refill to the same size every beat; a
    loop from a full LV to a half-refilled one is a cycle a sonographer would not store. Tenths, so that cycles
    about as full tie and the other preferences decide."""
    rng = float(np.ptp(area))
    if rng <= 0:
        return 0
    lowest = min(area[i], area[min(j, len(area) - 1)])
    return int(round(10 * max(0.0, float(area.max()) - float(lowest)) / rng))


def stage_loops(results, frame=None, tracer=None) -> tuple[dict, LoopCut]:
    """The loop of every stage of one cascade sample (echogen.diffusion.cascade StageResult list): the cycle
    is found on the last stage and mapped in time onto the others (lower frame rates), so every stage
    shows the same beat. Returns ({stage name: (T', H, W) loop}, the last stage's LoopCut); every frame of
    each stage where no whole cycle is found."""
    last = results[-1]
    cut = seamless_loop(last.video[0, 0].detach().cpu().numpy(), last.fps, frame=frame, tracer=tracer)
    out = {}
    for r in results:
        v = r.video[0, 0].detach().cpu().numpy()
        if r is last:
            out[r.name] = cut.video
        elif not cut.complete:
            out[r.name] = v
        else:
            k = r.fps / last.fps
            a = min(len(v) - 2, int(round(cut.start * k)))
            b = max(a + 2, min(len(v), int(round(cut.stop * k))))
            out[r.name] = v[a:b]
    return out, cut


def repeat_to(loop, n: int) -> np.ndarray:
    """A loop resampled in time to n frames (nearest frame; playback speed changes, the wrap stays
    seamless): used to tile loops of different lengths into one grid video."""
    v = np.asarray(loop)
    idx = np.minimum((np.arange(n) * len(v) / n).astype(np.int64), len(v) - 1)
    return v[idx]


def _float(video) -> np.ndarray:
    v = np.asarray(video)
    if hasattr(video, "detach"):
        v = video.detach().cpu().numpy()
    return v.astype(np.float32) / 255.0 if v.dtype == np.uint8 else v.astype(np.float32, copy=False)
