"""Live mode and scrub of the app's EF slider (issue 24): the live default, stale-request dropping, the scrub cache
(keys, bounds, invalidation) and the event functions over a fake generate path (fast tier); then the real app
through its API with gradio_client (slow tier: starts a server). In Chromium: tests/test_app_live_browser.py.
"""
from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from echogen.ui import guard as G
from echogen.ui import live as L
from echogen.ui import scrub as C


# ---------------------------------------------------------------------------------------------- live default
def _engine(steps: int | None = None):
    from echogen.config import get_preset
    from echogen.diffusion.cascade import Cascade
    cfg = get_preset("tiny")
    if steps is not None:
        cfg = dataclasses.replace(cfg, stages=[dataclasses.replace(s, steps=steps) for s in cfg.stages])
    return SimpleNamespace(cascade=Cascade.random(cfg))


def test_live_default_follows_the_bundles_network_evaluations():
    assert L.LIVE_MAX_NFE == 6 and L.live_default(6) and not L.live_default(7)
    slow, fast = _engine(), _engine(steps=2)                  # tiny preset: 3 x 3 steps; 3 x 2 steps
    assert L.live_nfe(slow) == 9 and L.live_nfe(fast) == 6
    assert L.live_nfe(slow, stages=[]) == 3                   # the base only
    assert L.live_nfe(slow, steps={"base": 1, "spatial": 1, "temporal": 1}) == 3
    assert "Slow with this bundle: 9 network evaluations" in L.live_info(9)
    assert "(fast)" in L.live_info(6) and "Slow" not in L.live_info(6)


def test_live_default_of_a_saved_bundle(tmp_path):
    from echogen.ui.support import load_engine
    from echogen.weights.bundle import read_manifest
    _engine(steps=2).cascade.save(tmp_path / "fast")
    assert [s["steps"] for s in read_manifest(tmp_path / "fast")["cascade"]["stages"]] == [2, 2, 2]
    assert L.live_default(L.live_nfe(load_engine(str(tmp_path / "fast"))))


# ---------------------------------------------------------------------------------------------- live requests
def test_a_release_at_another_ef_supersedes_a_running_live_generation():
    w = L.LiveRequests()
    w.want("a", 30)
    started = w.start()
    w.check("a", started, 30)                                 # its own release: fine
    w.want("b", 80)
    w.check("a", started, 30)                                 # another page's release: fine
    w.want("a", 30)
    w.check("a", started, 30)                                 # released again at the same EF: still wanted
    w.want("a", 50)
    with pytest.raises(L.Superseded, match="EF 30 % dropped: the slider was released at 50 %"):
        w.check("a", started, 30)
    w.check("a", started, 50)                                 # the request for 50 itself goes on


def test_a_release_that_arrived_before_the_generation_began_does_not_stop_it():
    """The unqueued release of the same slider move may arrive after its queued live event began (or before)."""
    w = L.LiveRequests()
    w.want("a", 20)                                           # an older release
    started = w.start()                                       # the live request for 60 begins ...
    w.check("a", started, 60)                                 # ... before its own release arrived: goes on
    w.want("a", 60)
    w.check("a", started, 60)


def test_the_last_live_loop_is_recalled_only_for_the_same_request(tmp_path):
    w = L.LiveRequests(max_results=2)
    f = tmp_path / "show.mp4"
    f.write_bytes(b"v")
    w.remember("a", "key", 40, ["out"], [f])
    assert w.recall("a", "key", 40.0) == ["out"]
    assert w.recall("a", "key", 41) is None and w.recall("a", "other", 40) is None and w.recall("b", "key", 40) is None
    w.remember("b", "key", 40, ["b"], [f])
    w.remember("c", "key", 40, ["c"], [f])                    # at most 2 pages: "a" is forgotten
    assert w.recall("a", "key", 40) is None and w.recall("c", "key", 40) == ["c"]
    f.unlink()                                                # pruned by the server: generate again
    assert w.recall("c", "key", 40) is None
    w.release("b")
    assert "b" not in w._last


def test_live_requests_are_bounded_and_forgotten_when_a_page_closes():
    w = L.LiveRequests(max_pages=3)
    for k in range(5):
        w.want(f"p{k}", 40)
    assert list(w._want) == ["p2", "p3", "p4"]
    w.release("p3")
    assert list(w._want) == ["p2", "p4"]
    w.want("p4", "not a number")                              # ignored, not an error
    w.want(None, 40)
    assert list(w._want) == ["p2", "p4"]


# ---------------------------------------------------------------------------------------------- scrub keys
def _key(**kw):
    from echogen.config import get_preset
    st = get_preset("tiny").stages
    args = dict(frame="f0", seed=1, bundle="/w/demo", engine_stages=st, enabled=["spatial", "temporal"],
                steps={"base": 3, "spatial": 2, "temporal": 2}, guidance={"base": 5.0, "spatial": 1.0, "temporal": 1.0})
    args.update(kw)
    return C.ScrubKey.make(**args)


def test_scrub_key_changes_with_everything_that_changes_the_loop():
    k = _key()
    assert k == _key() and hash(k) == hash(_key())
    assert k.stages == ("spatial", "temporal") and k.steps == (("base", 3), ("spatial", 2), ("temporal", 2))
    for change in ({"frame": "f1"}, {"seed": 2}, {"bundle": "/w/demo-fast"}, {"enabled": ["temporal"]},
                   {"steps": {"base": 4, "spatial": 2, "temporal": 2}},
                   {"guidance": {"base": 3.0, "spatial": 1.0, "temporal": 1.0}}):
        assert _key(**change) != k, change
    # a stage that does not run: its steps do not change the loop, nor the key
    assert (_key(enabled=["temporal"], steps={"base": 3, "spatial": 9, "temporal": 2})
            == _key(enabled=["temporal"], steps={"base": 3, "spatial": 2, "temporal": 2}))
    assert _key(enabled=["temporal", "spatial"]) == k        # the order the boxes were ticked in does not matter


def test_frame_digest_and_its_memo(tmp_path):
    a = np.zeros((112, 112), np.float32)
    b = a.copy()
    b[5, 5] = 1e-6
    assert C.frame_digest(a) == C.frame_digest(a.copy()) != C.frame_digest(b)
    assert C.frame_digest(a) != C.frame_digest(a.astype(np.float64))
    f = tmp_path / "up.png"
    f.write_bytes(b"x")
    loads = []
    memo = C.FrameDigests(size=2)
    load = lambda: loads.append(1) or a                      # noqa: E731
    assert memo.get(f, 0, load) == memo.get(f, 0, load) == C.frame_digest(a) and len(loads) == 1
    memo.get(f, 1, load)
    memo.get(f, 2, load)
    memo.get(f, 0, load)                                      # pushed out by two others: read again
    assert len(loads) == 4

    def unreadable():
        raise ValueError("the upload: file not found")
    with pytest.raises(ValueError, match="file not found"):     # the reader's own words, not an OSError
        memo.get(tmp_path / "gone.png", 0, unreadable)


# ---------------------------------------------------------------------------------------------- scrub cache
class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _fill(cache, session, key, tmp, efs=C.SCRUB_EFS):
    s = cache.begin(session, key)
    for e in efs:
        d = Path(tempfile.mkdtemp(dir=tmp))
        (d / "show.mp4").write_bytes(b"v")
        cache.add(s, e, [f"out {e}"], [d / "show.mp4"], d)
    cache.end(s)
    return s


def test_scrub_set_shows_the_nearest_cached_ef(tmp_path):
    cache = C.ScrubCache()
    s = _fill(cache, "p", _key(), tmp_path, efs=(15, 25, 85))
    assert not s.complete and s.span() == "3 of 15 EFs cached (15–85 %)"
    assert cache.show("p", _key(), 24)[:2] == (25, ["out 25"])
    assert cache.show("p", _key(), 20)[0] == 15               # a tie: the lower EF
    assert cache.show("p", _key(), 90)[0] == 85
    assert cache.show("p", _key(), 24, exact=True)[:2] == (None, None)
    assert cache.show("p", _key(), 25, exact=True)[0] == 25
    assert cache.show("p", _key(seed=2), 25) is None          # other settings: not shown
    assert cache.show("q", _key(), 25) is None                # another page: not shown
    assert C.ScrubSet(_key(), "p").nearest(50) is None
    empty = C.ScrubCache()
    empty.end(empty.begin("p", _key()))
    assert empty.show("p", _key(), 50)[:2] == (None, None)    # a set with nothing in it yet


def test_scrub_cache_bounds_per_page_and_on_the_server(tmp_path):
    clock = Clock()
    cache = C.ScrubCache(C.ScrubLimits(sets_per_page=2, max_sets=3, fills_per_hour=100), clock=clock)
    sets = []
    for seed in (1, 2, 3):                                    # a page's third set replaces its least recently used
        clock.t += 1
        sets.append(_fill(cache, "p", _key(seed=seed), tmp_path, efs=(15,)))
    assert sets[0].dropped and not Path(sets[0].folders[0]).exists()
    assert cache.find("p", _key(seed=1)) is None and cache.find("p", _key(seed=2)) is not None
    clock.t += 1
    cache.show("p", _key(seed=2), 15)                         # used: now seed 3 is the least recently used
    clock.t += 1
    _fill(cache, "p", _key(seed=4), tmp_path, efs=(15,))
    assert cache.find("p", _key(seed=3)) is None and cache.find("p", _key(seed=2)) is not None
    clock.t += 1
    _fill(cache, "q", _key(), tmp_path, efs=(15,))            # 3 sets on the server: the cap
    clock.t += 1
    _fill(cache, "r", _key(), tmp_path, efs=(15,))            # the server's least recently used set goes
    assert cache.stats() == {"sets": 3, "pages": 3, "loops": 3}
    assert cache.find("p", _key(seed=2)) is None and cache.find("p", _key(seed=4)) is not None
    # sets being filled are never evicted: with all of them filling, a new scrub is refused
    for page in ("p", "q", "r"):
        cache.find(page, cache._sets[[s.session for s in cache._sets].index(page)].key).filling = True
    with pytest.raises(C.ScrubRefused, match="filling its maximum of 3 scrub sets"):
        cache.begin("s", _key())
    with pytest.raises(ValueError, match="sets_per_page must be at least 1"):
        C.ScrubLimits(sets_per_page=0)


def test_scrub_refusals_one_at_a_time_and_fills_per_hour(tmp_path):
    clock = Clock()
    cache = C.ScrubCache(C.ScrubLimits(fills_per_hour=2), clock=clock)
    s = cache.begin("p", _key())
    with pytest.raises(C.ScrubRefused, match="already running for this page"):
        cache.begin("p", _key(seed=5))
    cache.end(s)
    assert cache.begin("p", _key()) is s                      # the partial set: its missing EFs get filled
    cache.end(s)
    with pytest.raises(C.ScrubRefused, match=r"started 2 scrubs in the last hour \(the server allows 2\): try again "
                                             r"in 60 min"):
        cache.begin("p", _key(seed=6))
    clock.t += 3601
    cache.end(cache.begin("p", _key(seed=6)))
    with pytest.raises(C.ScrubRefused, match="needs a page session"):
        cache.begin(None, _key())
    # a complete set costs no fill
    full = _fill(C.ScrubCache(C.ScrubLimits(fills_per_hour=1)), "p", _key(), tmp_path)
    assert full.complete


def test_complete_set_begins_without_counting_a_fill(tmp_path):
    cache = C.ScrubCache(C.ScrubLimits(fills_per_hour=1))
    s = _fill(cache, "p", _key(), tmp_path)
    again = cache.begin("p", _key())
    assert again is s and not again.filling                   # nothing to fill, no fill counted
    with pytest.raises(C.ScrubRefused, match="in the last hour"):
        cache.begin("p", _key(seed=9))


def test_pruned_files_drop_the_set_and_say_so(tmp_path):
    cache = C.ScrubCache()
    s = _fill(cache, "p", _key(), tmp_path, efs=(15, 20))
    Path(s.files[20][0]).unlink()
    assert cache.show("p", _key(), 15)[0] == 15
    with pytest.raises(C.ScrubRefused, match="pruned by the server"):
        cache.show("p", _key(), 21)
    assert cache.find("p", _key()) is None and not any(Path(d).exists() for d in s.folders)


def test_page_closed_frees_its_sets_and_stops_its_fill(tmp_path):
    cache = C.ScrubCache()
    done = _fill(cache, "p", _key(seed=1), tmp_path, efs=(15,))
    filling = cache.begin("p", _key(seed=2))
    other = _fill(cache, "q", _key(), tmp_path, efs=(15,))
    assert cache.release("p") == 2
    assert not Path(done.folders[0]).exists() and Path(other.folders[0]).exists()
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    with pytest.raises(C.ScrubGone):
        cache.add(filling, 20, ["late"], [], d)               # the running fill's next loop
    assert not d.exists() and cache.stats()["sets"] == 1


# ---------------------------------------------------------------------------------- event functions, fake app
class FakeApp:
    """The app's side of live.Hooks: a generate path that writes files and counts its calls."""
    n_cols = 3

    def __init__(self, tmp: Path, budget_s: float | None = None):
        self.tmp, self.budget_s = tmp, budget_s
        self.calls, self.logs, self.finished = [], [], 0
        self.during = None                                    # called at each fake sampler step

    def generate(self, input_file, frame_index, ef, stages, weights, seed, slots, progress, stop=None):
        import gradio as gr
        G.check_request(frame_index, ef, seed, slots)
        self.calls.append(float(ef))
        for step in range(3):
            progress(step / 3, desc=f"base: step {step + 1}/3")
            if self.during is not None:
                self.during(step)
            if stop is not None:
                stop()
        d = Path(tempfile.mkdtemp(dir=self.tmp))
        vids = []
        for i in range(self.n_cols):
            for tag in ("", "_lv"):
                (d / f"show_{i}{tag}.mp4").write_bytes(f"{ef} {seed} {i}".encode())
            vids.append(gr.update(value=str(d / f"show_{i}.mp4"), visible=True))
        (d / "curve.png").write_bytes(b"png")
        readout = {"requested_ef": float(ef), "seed": int(seed)}
        shown = {"plain": [v["value"] for v in vids], "overlay": [str(d / f"show_{i}_lv.mp4") for i in range(3)]}
        return vids + [gr.update(value=f"cap {i}") for i in range(3)] + [f"html {ef}", str(d / "curve.png"),
                                                                       [str(d / "show_2.mp4")], readout, shown]

    def settings(self, frame_index, weights, stages, seed, slots, ef=None, path=None):
        from echogen.config import get_preset
        try:                                                  # as the app's _settings: a bad number is one line
            frame_index, ef, seed, slots = G.check_request(frame_index, ef, seed, slots)
        except ValueError as e:
            self.fail(e)
        st = get_preset("tiny").stages
        steps = {s.name: int(slots[2 * i]) for i, s in enumerate(st)}
        guidance = {s.name: float(slots[2 * i + 1]) for i, s in enumerate(st)}
        return weights, SimpleNamespace(stages=st), frame_index, list(stages), steps, guidance, seed, ef

    def frame(self, path, index):
        return np.frombuffer(Path(path).read_bytes() + bytes([index]), np.uint8)

    def overlay(self, on, shown):
        import gradio as gr
        return [gr.update(value=p) for p in shown["overlay" if on else "plain"]]

    def fail(self, e, *uploads):
        import gradio as gr
        raise gr.Error(G.scrub(e, *uploads))

    def finish(self, request, path, poke=True):
        self.finished += 1

    def hooks(self):
        return L.Hooks(self.generate, self.settings, self.frame, lambda r: r.session_hash, self.finish, self.overlay,
                       self.fail, lambda: G.Budget(self.budget_s), self.logs.append, self.n_cols)


SLOTS = [2, 5.0, 1, 1.0, 1, 1.0, 1, 1.0]


def _page(tmp_path, session="page-1"):
    up = tmp_path / "frame.png"
    if not up.exists():
        up.write_bytes(b"frame")
    return str(up), SimpleNamespace(session_hash=session)


def _args(up, ef, seed=7):
    return [up, 0, ef, ["spatial", "temporal"], "bundle", seed, *SLOTS]


def test_scrub_fills_15_loops_then_slider_moves_show_them_without_a_generation(tmp_path):
    app = FakeApp(tmp_path)
    cache = C.ScrubCache()
    h = L.make_handlers(app.hooks(), cache, L.LiveRequests())
    up, req = _page(tmp_path)
    progress = []
    status = h.scrub(*_args(up, 50), request=req, progress=lambda p, desc="": progress.append((p, desc)))
    assert app.calls == list(map(float, C.SCRUB_EFS)) and "Scrub ready: 15 of 15 EFs cached (15–85 %)" in status
    assert progress[0] == (0.0, "scrub EF 15 % (1/15): base: step 1/3")
    assert max(p for p, _ in progress) < 1 and app.finished == 1
    assert sum("cached" in m for m in app.logs) == 15
    n = len(app.calls)
    out = h.show(*_args(up, 37), False, request=req)
    assert len(app.calls) == n                                # no model call
    assert out[2 * 3 + 3]["requested_ef"] == 35.0 and out[2 * 3] == "html 35"
    assert out[-1].startswith("Scrub: cached loop for EF 35 % (nearest to 37 %), no model call; 15 of 15")
    assert out[0]["value"].endswith("show_0.mp4")
    lv = h.show(*_args(up, 50), True, request=req)            # the LV-contour box ticked: the contour loops
    assert lv[0]["value"].endswith("show_0_lv.mp4") and "EF 50 %, no model call" in lv[-1]
    # live mode at a scrubbed EF: the cached loop, no model call; at another EF: one generation
    live = h.live(*_args(up, 50), True, False, request=req)
    assert len(app.calls) == n and "from this page's scrub set" in live[-1]
    live = h.live(*_args(up, 52), True, False, request=req)
    assert app.calls[n:] == [52.0] and live[2 * 3 + 3]["requested_ef"] == 52.0 and "EF 52 % generated" in live[-1]
    # other settings (seed): the set is not shown, and the page is told why
    other = h.show(*_args(up, 50, seed=8), False, request=req)
    assert "for another frame, seed, bundle, stages or steps" in other[-1] and other[0] == {"__type__": "update"}
    # scrubbing the same settings again: nothing to generate
    assert "already cached" in h.scrub(*_args(up, 50), request=req, progress=lambda *a, **k: None)
    assert len(app.calls) == n + 1
    # the page closes: its sets and their folders go
    folders = list(cache.find("page-1", next(iter(cache._sets)).key).folders)
    h.closed(request=req)
    assert cache.stats()["sets"] == 0 and not any(Path(d).exists() for d in folders)


def test_show_does_nothing_without_a_set_or_while_a_number_is_typed(tmp_path):
    app = FakeApp(tmp_path)
    h = L.make_handlers(app.hooks(), C.ScrubCache(), L.LiveRequests())
    up, req = _page(tmp_path)
    blank = [{"__type__": "update"}] * (2 * 3 + 6)
    assert h.show(*_args(up, 40), False, request=req) == blank            # nothing scrubbed on this page
    h.scrub(*_args(up, 40), request=req, progress=lambda *a, **k: None)
    assert h.show(*_args(up, 4), False, request=req) == blank             # "4" on the way to "45"
    assert h.show(*_args(None, 40), False, request=req) == blank
    assert h.show(*_args(up, 45), False, request=req)[-1].startswith("Scrub: cached loop for EF 45 %")


def test_live_mode_generates_through_the_one_path_and_drops_a_superseded_request(tmp_path):
    app = FakeApp(tmp_path)
    wanted = L.LiveRequests()
    h = L.make_handlers(app.hooks(), C.ScrubCache(), wanted)
    up, req = _page(tmp_path)
    blank = [{"__type__": "update"}] * (2 * 3 + 6)
    assert h.live(*_args(up, 40), False, False, request=req) == blank     # live mode off: nothing
    assert h.live(*_args(None, 40), True, False, request=req) == blank    # no upload yet: nothing
    assert app.calls == []
    h.want(40, request=req)
    out = h.live(*_args(up, 40), True, False, request=req)
    assert app.calls == [40.0] and out[2 * 3 + 3] == {"requested_ef": 40.0, "seed": 7}
    # the browser's deferred repeat of the same request: the same loop again, no generation
    again = h.live(*_args(up, 40), True, False, request=req)
    assert app.calls == [40.0] and again[:-1] == out[:-1] and "the loop just generated" in again[-1]
    assert len(app.calls) == 1 and h.live(*_args(up, 40, seed=8), True, False, request=req) and len(app.calls) == 2
    # a release at 70 arrives during the generation for 45: it stops at its next step and shows nothing
    app.during = lambda step: step == 1 and h.want(70, request=req)
    out = h.live(*_args(up, 45), True, False, request=req)
    assert out[:-1] == blank[:-1] and out[-1] == "Live: EF 45 % dropped: the slider was released at 70 % since."
    assert app.calls[-1] == 45.0 and "live: EF 45 % dropped" in app.logs[-1]
    assert app.finished == 6                                  # every request, whatever it did, is done with its upload
    import gradio as gr
    with pytest.raises(gr.Error, match="EF must be"):          # a bad EF from an API client: one line
        h.live(*_args(up, "lots"), True, False, request=req)
    # another page's releases never stop this page's generation
    app.during = lambda step: h.want(20, request=SimpleNamespace(session_hash="page-2"))
    assert h.live(*_args(up, 70), True, False, request=req)[2 * 3 + 3]["requested_ef"] == 70.0


class StepBudget(G.Budget):
    """A time budget that runs out after `steps` sampler steps (instead of seconds)."""

    def __init__(self, steps):
        super().__init__(1.0)
        self.left = steps

    def check(self):
        self.left -= 1
        if self.left < 0:
            raise G.BudgetExceeded("stopped: this request ran past the server's time budget of 1 s")


def test_scrub_under_the_time_budget_keeps_what_it_made(tmp_path):
    import gradio as gr
    app = FakeApp(tmp_path)
    cache = C.ScrubCache()
    hooks = app.hooks()
    hooks.budget = lambda: StepBudget(3 + 1)                  # one whole loop, then one step of the next
    h = L.make_handlers(hooks, cache, L.LiveRequests())
    up, req = _page(tmp_path)
    with pytest.raises(G.BudgetExceeded, match="time budget"):    # the app's _generate turns it into one line
        h.scrub(*_args(up, 40), request=req, progress=lambda *a, **k: None)
    assert app.calls == [15.0, 20.0] and cache.stats() == {"sets": 1, "pages": 1, "loops": 1}
    assert not cache._sets[0].filling
    assert h.show(*_args(up, 40), False, request=req)[-1] == ("Scrub: cached loop for EF 15 % (nearest to 40 %), no "
                                                              "model call; 1 of 15 EFs cached (15–15 %) (stopped "
                                                              "early: press Scrub to fill the rest).")
    hooks.budget = lambda: G.Budget(None)
    h.scrub(*_args(up, 40), request=req, progress=lambda *a, **k: None)    # the rest, not the whole set again
    assert app.calls == [15.0, 20.0] + list(map(float, C.SCRUB_EFS[1:]))
    # a set with nothing cached yet says so (not "other settings")
    hooks.budget = lambda: StepBudget(0)
    with pytest.raises(G.BudgetExceeded):
        h.scrub(*_args(up, 40, seed=3), request=req, progress=lambda *a, **k: None)
    assert h.show(*_args(up, 40, seed=3), False, request=req)[-1] == (
        "Scrub: 0 of 15 EFs cached yet for these settings (stopped early: press Scrub to fill the rest).")
    # refused scrubs: one line, no generation
    with pytest.raises(gr.Error, match="Upload an echo frame"):
        h.scrub(*_args(None, 40), request=req, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="seed must be"):
        h.scrub(*_args(up, 40, seed=-1), request=req, progress=lambda *a, **k: None)
    assert len(app.calls) == 17 and app.finished == 7          # all 7 requests are done with their upload


# ------------------------------------------------------------------------------------ the real app, via its API
def make_ef_bundle(out: Path) -> Path:
    """tests/test_app.py's tiny bundle with every network weight perturbed: a fresh network's zero-initialised
    output layers make its loop the same at every EF, which would make "only the EF changes" unobservable."""
    import torch
    from echogen.diffusion.cascade import Cascade
    from test_app import make_bundle
    make_bundle(out)
    casc = Cascade.load(out)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for d in casc.denoisers.values():
            for p in d.net.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    casc.save(out)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from test_app import make_inputs, start_app, stop_app
    tmp = tmp_path_factory.mktemp("live")
    bundle = make_ef_bundle(tmp / "bundle")
    files = make_inputs(tmp)
    proc, url, _ = start_app(["--weights", str(bundle), "--no-teaching"], tmp / "app.log")
    yield {"url": url, "bundle": bundle.name, "log": tmp / "app.log", **files}
    stop_app(proc)


def _generations(log: Path) -> list[str]:
    """The server's lines for each loop live mode or scrub generated."""
    return re.findall(r"(live: EF \S+ % generated|scrub: EF \S+ % cached)", log.read_text())


STEPS = [2, 1.0, 1, 1.0, 1, 1.0, 1, 1.0]


@pytest.mark.slow
def test_live_and_scrub_through_the_api_match_generate(served):
    from gradio_client import Client, handle_file
    from test_app import decode, video_path
    c = Client(served["url"], verbose=False)
    png = handle_file(str(served["png"]))

    def args(ef):
        return [png, 0, ef, ["spatial", "temporal"], served["bundle"], 5, *STEPS]

    gen = c.predict(*args(35), api_name="/generate")
    live = c.predict(*args(35), True, False, api_name="/live")
    assert "EF 35 % generated" in live[-1] and live[2 * 3 + 3]["requested_ef"] == 35
    assert np.array_equal(decode(video_path(live[2])), decode(video_path(gen[2])))   # the same path, the same loop
    off = c.predict(*args(35), False, False, api_name="/live")
    assert off[2] == off[-1] == {"__type__": "update"}                               # live mode off: nothing
    n = len(_generations(served["log"]))
    status = c.predict(*args(35), api_name="/scrub")
    assert "Scrub ready: 15 of 15 EFs cached" in status
    assert len(_generations(served["log"])) == n + 15
    shown = c.predict(*args(33), False, api_name="/scrub_show")
    assert "cached loop for EF 35 % (nearest to 33 %)" in shown[-1] and shown[2 * 3 + 3]["requested_ef"] == 35
    assert np.array_equal(decode(video_path(shown[2])), decode(video_path(gen[2])))   # the scrub's EF 35 = Generate's
    for ef in (15, 62, 90):
        out = c.predict(*args(ef), False, api_name="/scrub_show")
        assert out[2 * 3 + 3]["requested_ef"] == min(85, 5 * round(ef / 5))
    assert not np.array_equal(decode(video_path(out[2])), decode(video_path(gen[2])))   # EF 85 is not EF 35
    assert len(_generations(served["log"])) == n + 15                                  # no model call since
    # another page (client) has no set of its own
    other = Client(served["url"], verbose=False).predict(*args(35), False, api_name="/scrub_show")
    assert other[2] == other[-1] == {"__type__": "update"}


def test_page_inputs_drop_a_live_loop_whose_input_changed_while_it_ran(tmp_path):
    """✕ or a new upload during a live generation: its loop must not land after the page cleared its results."""
    inputs = L.PageInputs(max_pages=2)
    inputs.changed("a")
    seen = inputs.now("a")
    inputs.check("a", seen)                                   # unchanged: fine
    inputs.changed("b")
    inputs.check("a", seen)                                   # another page's change: fine
    inputs.changed("a")
    with pytest.raises(L.InputChanged):
        inputs.check("a", seen)
    inputs.changed("c")                                       # the oldest page is forgotten, not grown without end
    assert len(inputs._count) == 2 and inputs.now("b") == 0
    app = FakeApp(tmp_path)
    page_inputs = L.PageInputs()
    h = L.make_handlers(app.hooks(), C.ScrubCache(), L.LiveRequests(), page_inputs)
    up, req = _page(tmp_path)
    blank = [{"__type__": "update"}] * (2 * 3 + 6)
    app.during = lambda step: step == 1 and page_inputs.changed(req.session_hash)
    assert h.live(*_args(up, 45), True, False, request=req) == blank[:-1] + [""]
    assert app.calls == [45.0] and "input changed" in app.logs[-1]
    app.during = None                                         # the next request for the new input shows its loop
    assert h.live(*_args(up, 45), True, False, request=req)[2 * 3 + 3]["requested_ef"] == 45.0
    h.closed(req)
    assert page_inputs.now(req.session_hash) == 0
