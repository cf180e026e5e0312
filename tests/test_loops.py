"""Seamless loops (echogen.data.loops): one whole heart cycle, end-diastole to end-diastole, that repeats
without a jump."""
import numpy as np
import pytest
import torch

from echogen.data.loops import dark_area_curve, end_diastoles, frame_steps, repeat_to, seamless_loop, wrap_ok


def beating(n=32, fps=25.0, period_s=0.7, size=48, seed=0):
    """A dark disc (the LV) in a bright sector whose radius follows the heart cycle; largest at t=0.2 s."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    t = np.arange(n) / fps
    radius = 10 + 4 * np.cos(2 * np.pi * (t - 0.2) / period_s)
    v = np.full((n, size, size), 0.6, np.float32)
    for k, r in enumerate(radius):
        v[k][(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r] = 0.05
    v += rng.normal(0, 0.01, v.shape).astype(np.float32)
    return np.clip(v, 0, 1), radius


def test_loop_is_one_cycle_from_end_diastole_and_wraps_without_a_jump():
    v, radius = beating()
    assert not wrap_ok(v)                                    # 1.28 s is not a whole beat: the raw clip jumps
    cut = seamless_loop(v, 25.0)
    assert cut.complete and cut.method.startswith("ED to ED")
    assert abs(cut.frames - 0.7 * 25) <= 2                  # one heart cycle
    assert radius[cut.start] >= np.sort(radius)[-3]          # starts at end-diastole (largest LV)
    assert wrap_ok(cut.video)
    assert cut.wrap <= frame_steps(cut.video).max()
    assert np.array_equal(cut.video, v[cut.start:cut.stop])


def test_uint8_and_the_dark_area_curve_agree_with_the_disc():
    v, radius = beating(seed=1)
    u8 = (v * 255).astype(np.uint8)
    area = dark_area_curve(u8)
    assert np.corrcoef(area, radius)[0, 1] > 0.95
    eds = end_diastoles(area, 25.0)
    assert len(eds) >= 2 and all(radius[i] >= radius.max() - 1.0 for i in eds)
    assert seamless_loop(u8, 25.0).complete


def test_no_cycle_gives_the_whole_clip_flagged():
    still = np.full((12, 16, 16), 0.3, np.float32)             # no motion: no end-diastole to find
    cut = seamless_loop(still, 4.0)
    assert not cut.complete and cut.frames == 12 and cut.method.startswith("whole clip")


def test_tracer_area_is_used_when_given():
    v, radius = beating(seed=2)
    cut = seamless_loop(v, 25.0, tracer=lambda video, fps: radius ** 2)
    assert cut.complete and "LV tracer" in cut.method
    # a tracer that cannot trace this clip (or is not an area function at all): the dark-area curve cuts the loop,
    # and the method says the tracer failed instead of passing for a traced cut
    def broken(video, fps):
        raise ValueError("no LV cavity found")
    cut = seamless_loop(v, 25.0, tracer=broken)
    assert cut.complete and "dark-area curve: the LV tracer failed (ValueError: no LV cavity found)" in cut.method


def test_repeat_to_keeps_order():
    loop = np.arange(10)[:, None, None] * np.ones((1, 2, 2))
    out = repeat_to(loop, 15)
    assert len(out) == 15 and out[0, 0, 0] == 0 and out[-1, 0, 0] == 9 and np.all(np.diff(out[:, 0, 0]) >= 0)


def test_speckle_that_does_not_repeat_gets_a_crossfade_at_the_wrap():
    v, radius = beating(seed=3, period_s=0.7)
    v = v * 0.4 + 0.6 * (v > 0.3) * np.random.default_rng(4).random(v.shape).astype(np.float32)  # fresh speckle
    v = (v + np.roll(v, 1, axis=0)) / 2                        # neighbouring frames share half their speckle
    assert not seamless_loop(v, 25.0, area=radius, crossfade=0).complete
    cut = seamless_loop(v, 25.0, area=radius)
    assert cut.complete and cut.crossfade == 4 and "crossfade" in cut.method and wrap_ok(cut.video)
    assert np.allclose(cut.video[-1], (v[cut.start - 1] + v[cut.start]) / 2) and np.allclose(cut.video[:-4], v[cut.start:cut.stop - 4])


def test_stage_loops_show_the_same_beat_at_every_frame_rate():
    from types import SimpleNamespace

    import torch

    from echogen.data.loops import stage_loops
    v, radius = beating(seed=5)
    res = [SimpleNamespace(name="base", fps=12.5, video=torch.from_numpy(v[::2].copy())[None, None]),
           SimpleNamespace(name="temporal", fps=25.0, video=torch.from_numpy(v)[None, None])]
    loops, cut = stage_loops(res)
    assert cut.complete and len(loops["temporal"]) == cut.frames
    assert abs(len(loops["base"]) - cut.frames / 2) <= 1


def test_generate_cli_writes_the_loop_unless_full_clip(tmp_path, capsys):
    from echogen.cli.main import main
    img = tmp_path / "f.npy"
    np.save(img, np.full((112, 112), 0.4, np.float32))
    base = ["generate", "--image", str(img), "--ef", "40", "--random-init", "--preset", "tiny", "--steps", "1"]
    assert main(base + ["--out", str(tmp_path / "full.npy"), "--full-clip"]) == 0
    assert "every generated frame (--full-clip)" in capsys.readouterr().out
    assert np.load(tmp_path / "full.npy").shape[0] == 8
    assert main(base + ["--out", str(tmp_path / "loop.npy")]) == 0
    out = capsys.readouterr().out          # untrained noise holds no heart cycle: said, and every frame kept
    assert "no whole heart cycle found" in out or "one heart cycle from end-diastole" in out


def test_generate_cli_cuts_the_loop_on_the_bundle_tracer_area(tmp_path):
    """`echogen generate` cuts its loop as the app does: on the bundle's LV-tracer area when it has a tracer
    (the dark-area curve gave a spurious 10-frame cycle, issue 19), else on the dark-area curve."""
    from echogen.cli.commands.generate import _tracer_area
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS, Cascade
    from echogen.data.phantom.dataset import make_video
    area = _tracer_area(DEFAULT_WEIGHTS, "cpu")
    assert callable(area)
    row, _, clip = make_video(0, 0, sim="v2")                 # a simulator-v2 echo (T, 112, 112) uint8
    a = np.asarray(area(clip.astype(np.float32) / 255.0, float(row["FPS"])))
    assert a.shape == (len(clip),) and a.min() > 0           # every frame has an LV area
    noise = np.random.default_rng(0).random((12, 112, 112)).astype(np.float32)
    with pytest.raises(ValueError, match="LV"):              # noise has no LV: a reason, not a curve
        area(noise, 25.0)
    Cascade.random("tiny").save(tmp_path / "b")           # a bundle without a tracer
    assert _tracer_area(tmp_path / "b", "cpu") is None and _tracer_area(None, "cpu") is None


def test_a_diastolic_bump_in_the_area_curve_does_not_make_a_half_cycle_loop():
    """An LV-area curve with a second bump per beat (a noisy trace, an atrial kick) has end-diastoles half a
    cycle apart; the frames themselves repeat once per cycle (cycle_period), so the loop is one whole cycle."""
    from echogen.data.loops import cycle_period

    fps, period = 25.0, 0.72
    v, radius = beating(n=48, fps=fps, period_s=period, seed=3)
    assert abs(cycle_period(v, fps) - period * fps) <= 1
    t = np.arange(48) / fps
    phase = 2 * np.pi * (t - 0.2) / period
    area = np.cos(phase) + 1.6 * np.exp(-((np.angle(np.exp(1j * (phase - np.pi)))) / 0.8) ** 2)   # bump at mid-cycle
    eds = end_diastoles(area, fps)
    assert min(np.diff(eds)) <= 0.6 * period * fps                 # the curve alone gives half cycles
    cut = seamless_loop(v, fps, area=area)
    assert cut.complete and abs(cut.frames - period * fps) <= 2 and "period" in cut.method
    still = np.full((30, 16, 16), 0.3, np.float32) + np.random.default_rng(0).normal(0, 0.01, (30, 16, 16)).astype(np.float32)
    assert cycle_period(still, fps) is None                        # no beat: no period


def test_the_loop_prefers_a_cycle_whose_ends_are_both_refilled():
    """A generated heart that refills to only ~half of its size in one beat: of the cycles that wrap cleanly,
    the loop is the one between two full end-diastoles (a new user saw loops "ED to ED" where the LV had not
    refilled)."""
    fps, period, n = 25.0, 0.72, 64
    v, radius = beating(n=n, fps=fps, period_s=period, seed=4)
    t = np.arange(n) / fps
    phase = 2 * np.pi * (t - 0.2) / period
    weak = np.exp(-((t - (0.2 + period)) / 0.12) ** 2)             # the second end-diastole refills less
    area = np.cos(phase) - 0.3 * weak
    eds = end_diastoles(area, fps)
    assert len(eds) >= 3 and area[eds[1]] < area.max() - 0.1 * np.ptp(area)
    cut = seamless_loop(v, fps, area=area)
    assert cut.complete
    ends = (area[cut.start], area[min(cut.stop, n - 1)])
    assert min(ends) >= area.max() - 0.05 * np.ptp(area), (cut.start, cut.stop, eds)
    # refilled to only half: still an end-diastole (a weaker beat), but not an end of the loop
    half = np.cos(phase) - 1.0 * weak
    eds = end_diastoles(half, fps)
    assert len(eds) >= 3 and half[eds[1]] < half.max() - 0.4 * np.ptp(half)
    cut = seamless_loop(v, fps, area=half)
    assert min(half[cut.start], half[min(cut.stop, n - 1)]) >= half.max() - 0.05 * np.ptp(half)


def test_a_clip_that_starts_mid_ejection_is_not_cut_at_its_first_frame():
    """A generated clip whose first frame is mid-ejection (LV ~75 % of its largest) has a local maximum of the
    area curve at frame 0; with one true end-diastole in the clip there is no whole cycle: the whole clip is shown
    and flagged (a new user got a loop from frame 0 to 23 labelled "one heart cycle", the ED inside it)."""
    fps, n, period = 25.0, 32, 22
    t = np.arange(n)
    # frame 0 at 0.75, end-systole at frame 8, end-diastole (1.0) at frame 20, falling again to the clip's end
    area = np.interp(t, [0, 8, 20, 31], [0.75, 0.3, 1.0, 0.35])
    yy, xx = np.mgrid[:48, :48]
    v = np.full((n, 48, 48), 0.6, np.float32)
    for k, a in enumerate(area):
        v[k][(yy - 24) ** 2 + (xx - 24) ** 2 < (14 * np.sqrt(a)) ** 2] = 0.05
    assert end_diastoles(area, fps) == [20]
    cut = seamless_loop(v, fps, area=area)
    assert not cut.complete and cut.start == 0 and cut.stop == n and "fewer than two" in cut.method


def test_half_a_beat_between_two_bumps_is_never_cut():
    """An irregular generated LV-area curve: a deep systole at each end of the clip and a small dip between two
    maxima in the middle. The two maxima look like end-diastoles 11-12 frames apart, but the "cycle" between them
    swings through 30 % of the clip's LV-area range (no end-systole in it): cutting it showed half a beat whose
    EF was not the clip's (bench/loop_cycles.py). The cutter never returns a cycle swinging < MIN_SWING."""
    from echogen.data.loops import MIN_SWING
    n, fps, size = 32, 25.0, 48
    t = np.arange(n)
    g = lambda c, w: np.exp(-0.5 * ((t - c) / w) ** 2)           # noqa: E731
    area = 1.0 - 0.8 * g(1, 3.5) - 0.25 * g(18, 2.0) - 0.8 * g(33, 3.5)
    yy, xx = np.mgrid[:size, :size]
    v = np.full((n, size, size), 0.6, np.float32)
    for k, a in enumerate(area):
        v[k][(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (14 * np.sqrt(a)) ** 2] = 0.05
    v = np.clip(v + np.random.default_rng(0).normal(0, 0.01, v.shape).astype(np.float32), 0, 1)
    assert sorted(end_diastoles(area, fps)) == [12, 23]              # the two maxima are taken for end-diastoles
    cut = seamless_loop(v, fps, area=area)
    assert not cut.complete and cut.frames == n and cut.method.startswith("whole clip")
    # a regular beat is still cut, and holds the whole swing
    v2, radius = beating(seed=3)
    c2 = seamless_loop(v2, 25.0, area=radius ** 2)
    assert c2.complete and np.ptp(radius[c2.start:c2.stop] ** 2) >= MIN_SWING * np.ptp(radius ** 2)


def test_generate_cli_reads_the_clip_as_the_app_does(tmp_path):
    """`echogen generate` ends with the generated clip's EF as the app's readout states it: both readers of the
    bundle on the whole clip, each rounded as shown, then their mean (echogen.eval.readout.loop_ef)."""
    from echogen.cli.commands.generate import _read_line
    from echogen.data.phantom.dataset import make_video
    from echogen.diffusion.cascade import DEFAULT_WEIGHTS, Cascade
    from echogen.eval.reading import generated_ef, tracing_ef, video_ef
    from echogen.nets.regressor import load_regressor
    from echogen.nets.tracer import load_tracer
    row, _, clip = make_video(0, 1, sim="v2")                      # a simulator-v2 echo with a known EF
    video, fps = torch.from_numpy(clip.astype(np.float32) / 255.0), float(row["FPS"])
    reg, tr = load_regressor(DEFAULT_WEIGHTS), load_tracer(DEFAULT_WEIGHTS)[0]
    r = generated_ef(reg, tr, video, fps)
    a, b = round(video_ef(reg, video, fps)[0], 1), round(tracing_ef(tr, video, fps), 1)
    assert (r["regressor"], r["tracing"]) == (a, b) and r["ef"] == round((a + b) / 2, 1), r
    assert r["read_by"] == "mean of the EF regressor and LV tracing" and abs(r["ef"] - float(row["EF"])) < 12, (r, row)
    line = _read_line(DEFAULT_WEIGHTS, "cpu", video, fps, 40.0)
    assert f"EF read from the generated clip (the app's number): {r['ef']:.1f} %" in line, line
    assert f"difference {r['ef'] - 40:+.1f}" in line and "written loop" not in line, line
    loop = video[:20]                                              # OUT holds a loop cut from the clip: read too
    line = _read_line(DEFAULT_WEIGHTS, "cpu", video, fps, 40.0, loop)
    assert "EF read from the written loop (20 frames" in line and "--method both` reads" in line, line
    assert generated_ef(reg, None, video, fps)["read_by"] == "EF regressor"
    still = video[:1].repeat(len(video), 1, 1)                     # a heart that does not beat: tracing gives no EF
    assert generated_ef(reg, tr, still, fps)["tracing"] is None
    line = _read_line(DEFAULT_WEIGHTS, "cpu", still, fps, 40.0)
    assert "(EF regressor; LV tracing gave no EF)" in line and "regressor: regressor" not in line, line
    Cascade.random("tiny").save(tmp_path / "b")                   # a bundle with neither reader
    assert "not read" in _read_line(tmp_path / "b", "cpu", video, fps, 40.0)
