"""Live mode and scrub for the app's EF slider (issue 24), apart from the page layout.

Live mode: releasing the EF slider regenerates the loop through the app's one generate path (echogen/ui/app.py
`_generate`, i.e. echogen/ui/support.py run_generation) with the same seed and settings as *Generate loop*, so
only the EF changes. Debounced, and a stale request is dropped, not queued: every release first tells the server
at once (`LiveRequests.want`, an unqueued event), then sends the live event, which is `always_last`: while one
runs, the page holds further releases back and sends the event once more when it ends, with the slider's value
by then (Gradio 6 reads an event's inputs when it is sent, so a burst of releases mostly becomes one request for
the last EF). A live generation checks after every sampler step whether a release at another EF has arrived
since it began, and stops (`Superseded`, nothing shown) if so. A live request for what the page's last one made
(same frame, seed, bundle, settings and EF: a bit-identical loop) shows that again without a model call.

A page whose input changes (new upload, ✕, a refused file) while one of its generations runs gets nothing from that
generation (`PageInputs`: the generation stops at its next sampler step), so no old loop lands after the clear.

Scrub: for the current frame, seed, bundle, stages, steps and guidance, pre-generate EF 15, 20, ..., 85
(`SCRUB_EFS`, 15 loops) through the same generate path, under the same guards (request checks, the server's
time budget for the whole scrub) and per-page limits (echogen/ui/scrub.py ScrubLimits). Moving the slider then
shows the cached loop of the nearest cached EF, with its readout, without a model call.

The live default and LiveRequests need no gradio; `controls`, `make_handlers` and `wire` build the page's part
and its events (gradio imported inside them). The scrub cache is echogen/ui/scrub.py.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from echogen.ui.scrub import SCRUB_EFS, FrameDigests, ScrubCache, ScrubGone, ScrubKey, ScrubRefused

NO_INPUT = "Upload an echo frame, DICOM or clip (or pick an example) first."
LIVE_MAX_NFE = 6                          # live mode is on by default up to this many network evaluations per loop
EF_RANGE = (10, 90)                       # the app's EF slider


# --------------------------------------------------------------------------------------------- live default
def live_nfe(engine, stages=None, steps: dict | None = None) -> int:
    """Network evaluations per loop of a loaded bundle (echogen.diffusion.stage.cascade_nfe): stages run after
    the base (None: all), per-stage step overrides (None: the bundle's own)."""
    from echogen.diffusion.stage import cascade_nfe
    return cascade_nfe(engine.cascade.config, stages=stages, steps=steps)


def live_default(nfe: int) -> bool:
    """Live mode starts switched on only for a fast bundle."""
    return int(nfe) <= LIVE_MAX_NFE


def live_info(nfe: int) -> str:
    """The live checkbox's info line for a bundle of `nfe` network evaluations per loop."""
    same = "Same seed and settings as Generate loop, so only the EF changes."
    if live_default(nfe):
        return f"{same} This bundle: {nfe} network evaluations per loop (fast)."
    return (f"{same} Slow with this bundle: {nfe} network evaluations per loop (on by default only at "
            f"≤ {LIVE_MAX_NFE}); each release waits for a whole generation. Scrub shows cached loops at once.")


# --------------------------------------------------------------------------------------------- live requests
class Superseded(Exception):
    """A live generation whose EF the page no longer wants: the slider was released at another EF since."""


class LiveRequests:
    """Per page (session): the EF it last released the slider at, so that a stale live generation stops early, and
    its last live loop, so that a repeated request for it costs no generation.

    `want` is called at once on every release (an unqueued event); a live generation takes `start()` when it
    begins and calls `check` after every sampler step: it is superseded when a release at another EF arrived
    after it began. (A release that arrived before it began is not held against it: that may be its own.)
    `remember` / `recall`: the page's last live outputs for one ScrubKey and EF. The browser sends a deferred
    (always_last) live event once more after the running one ends, with the slider's value by then, which is
    often the EF just generated; same key and EF means a bit-identical loop, so it is shown again instead.
    At most `max_pages` pages' releases and `max_results` pages' last outputs (paths and the readout, ~10 kB)
    are remembered, the oldest forgotten first; `release` forgets a closed page."""

    def __init__(self, max_pages: int = 4096, max_results: int = 256):
        self.max_pages, self.max_results = int(max_pages), int(max_results)
        self._seq = 0
        self._want: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._last: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def want(self, session: str | None, ef) -> None:
        if not session:
            return
        try:
            ef = float(ef)
        except (TypeError, ValueError):
            return                                    # not an EF: nothing a live generation could be compared to
        with self._lock:
            self._seq += 1
            self._want[session] = (ef, self._seq)
            self._want.move_to_end(session)
            while len(self._want) > self.max_pages:
                self._want.popitem(last=False)

    def start(self) -> int:
        with self._lock:
            return self._seq

    def check(self, session: str | None, started: int, ef) -> None:
        with self._lock:
            w = self._want.get(session) if session else None
        if w is not None and w[1] > started and w[0] != float(ef):
            raise Superseded(f"EF {float(ef):g} % dropped: the slider was released at {w[0]:g} % since")

    def remember(self, session: str | None, key, ef, outputs: list, files) -> None:
        if not session:
            return
        with self._lock:
            self._last[session] = (key, float(ef), outputs, [str(f) for f in files])
            self._last.move_to_end(session)
            while len(self._last) > self.max_results:
                self._last.popitem(last=False)

    def recall(self, session: str | None, key, ef) -> list | None:
        """The page's last live outputs if they were made for this key and EF and their files are still there."""
        with self._lock:
            last = self._last.get(session) if session else None
        if last is None or last[0] != key or last[1] != float(ef) or not all(Path(f).is_file() for f in last[3]):
            return None
        return last[2]

    def release(self, session: str | None) -> None:
        with self._lock:
            self._want.pop(session, None)
            self._last.pop(session, None)


def shown_files(out: list, n_cols: int) -> list:
    """The files the Generate button's outputs show or offer: the plot, the downloads, every displayed loop."""
    shown = out[2 * n_cols + 4]
    return [out[2 * n_cols + 1], *out[2 * n_cols + 2], *shown.get("plain", []), *shown.get("overlay", [])]


# --------------------------------------------------------------------------------------------- page inputs
class InputChanged(Exception):
    """The page's input changed (a new upload or example, ✕, a refused file) while a request for the old one ran."""


class PageInputs:
    """Per page (session): how many times its input has changed. A generating request notes the count when it
    begins (`now`) and checks it after every sampler step and before its outputs are returned (`check`): the
    loops of an input the page no longer shows are dropped, so they cannot land after the page cleared its
    results for the new input (or for ✕). At most `max_pages` pages are remembered, the oldest forgotten first."""

    def __init__(self, max_pages: int = 4096):
        self.max_pages = int(max_pages)
        self._count: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def changed(self, session: str | None) -> None:
        if not session:
            return
        with self._lock:
            self._count[session] = self._count.get(session, 0) + 1
            self._count.move_to_end(session)
            while len(self._count) > self.max_pages:
                self._count.popitem(last=False)

    def now(self, session: str | None) -> int:
        with self._lock:
            return self._count.get(session, 0) if session else 0

    def check(self, session: str | None, seen: int) -> None:
        if session and self.now(session) != seen:
            raise InputChanged("the input changed while this request ran: its results are not shown")

    def release(self, session: str | None) -> None:
        with self._lock:
            self._count.pop(session, None)


# --------------------------------------------------------------------------------------------------- gradio
@dataclass
class Hooks:
    """What live mode and scrub take from the app (echogen/ui/app.py build_app): its one generate path and its
    guards. generate(input_file, frame_index, ef, stages, weights, seed, slots, progress, stop=None) -> the
    Generate button's outputs; settings(frame_index, weights, stages, seed, slots) -> (bundle folder, engine,
    frame index, enabled stages, steps, guidance, seed, ef), checked like a generation request; frame(path, index) ->
    the conditioning frame; session(request) -> its hash; finish(request, path, poke=True): after a request (its
    upload is done with; poke: a generation wrote files, wake the result janitor);
    overlay(on, shown) -> video updates with/without the LV contour; fail(error, *uploads): raise it as one
    scrubbed line; budget(): a fresh per-request echogen.ui.guard.Budget; log(msg): one console line."""
    generate: Callable
    settings: Callable
    frame: Callable
    session: Callable
    finish: Callable
    overlay: Callable
    fail: Callable
    budget: Callable
    log: Callable
    n_cols: int


@dataclass
class Controls:
    live: object                          # gr.Checkbox
    scrub: object                         # gr.Button
    status: object                        # gr.Markdown


def controls(engine) -> Controls:
    """The Target card's live checkbox, scrub button and status line (call inside the card's layout)."""
    import gradio as gr
    nfe = live_nfe(engine)
    live = gr.Checkbox(live_default(nfe), label="Live: regenerate when the EF slider is released",
                       info=live_info(nfe), elem_id="live-mode")
    scrub = gr.Button(f"Scrub: pre-generate EF {SCRUB_EFS[0]}–{SCRUB_EFS[-1]}", size="sm", elem_id="scrub-btn")
    status = gr.Markdown("", elem_id="live-status", elem_classes="eg-small")
    return Controls(live, scrub, status)


def checkbox_update(engine):
    """The live checkbox for a newly picked bundle: its default and info line."""
    import gradio as gr
    nfe = live_nfe(engine)
    return gr.update(value=live_default(nfe), info=live_info(nfe))


@dataclass
class Handlers:
    want: Callable                        # (ef, request): a release, told at once (unqueued)
    live: Callable                        # a release with live mode on: regenerate (or the page's cached exact EF)
    show: Callable                        # a slider move: the cached loop of the nearest cached EF
    scrub: Callable                       # the scrub button: fill the page's set
    closed: Callable                      # (request): the page closed


def make_handlers(hooks: Hooks, cache: ScrubCache, wanted: LiveRequests,
                  inputs: PageInputs | None = None) -> Handlers:
    """The event functions. Inputs: (input_file, frame_index, ef, stages, weights, seed, s0, g0, s1, g1, s2, g2,
    s3, g3) as the Generate button has them, then live's (live on, contour on) / show's (contour on); outputs:
    the Generate button's, then the live status line (scrub: the status line only)."""
    import gradio as gr
    digests = FrameDigests()
    inputs = inputs if inputs is not None else PageInputs()
    n_out = 2 * hooks.n_cols + 5

    def noop(status=None):
        return [gr.update()] * n_out + [gr.update() if status is None else status]

    def key_for(path, frame_index, stages, weights, seed, slots) -> ScrubKey:
        bundle, engine, frame_index, enabled, steps, guidance, seed, _ = hooks.settings(frame_index, weights,
                                                                                        stages, seed, slots)
        digest = digests.get(path, frame_index, lambda: hooks.frame(path, frame_index))
        return ScrubKey.make(digest, seed, bundle, engine.stages, enabled, steps, guidance)

    def shown_with(out: list, contour: bool) -> list:
        """The outputs, with the loops that have a traced LV contour when the contour box is ticked."""
        out = list(out)
        if contour:
            for i, u in enumerate(hooks.overlay(True, out[2 * hooks.n_cols + 4])):
                if "value" in u:
                    out[i] = {**out[i], "value": u["value"]}
        return out

    def want(ef, request: gr.Request):
        wanted.want(hooks.session(request), ef)

    def live(input_file, frame_index, ef, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3, on, contour,
             request: gr.Request, progress=gr.Progress()):
        try:
            return _live(input_file, frame_index, ef, stages, weights, seed, [s0, g0, s1, g1, s2, g2, s3, g3], on,
                         contour, hooks.session(request), progress)
        finally:
            hooks.finish(request, input_file)

    def _live(input_file, frame_index, ef, stages, weights, seed, slots, on, contour, sess, progress):
        if not on or not input_file:
            return noop()
        from echogen.ef import check_ef
        try:
            ef = check_ef(ef, "EF")
        except ValueError as e:
            hooks.fail(e)
        key = key_for(input_file, frame_index, stages, weights, seed, slots)
        try:
            hit = cache.show(sess, key, ef, exact=True)   # this page scrubbed this exact EF: no model call
        except ScrubRefused as e:
            hit = None
            hooks.log(f"scrub: {e}")
        if hit is not None and hit[0] is not None:
            return shown_with(hit[1], contour) + [f"Live: EF {hit[0]} % from this page's scrub set (no model call)."]
        again = wanted.recall(sess, key, ef)          # the loop live mode made last, for the same request
        if again is not None:
            hooks.log(f"live: EF {float(ef):g} % shown again (the same request as the last one: no model call)")
            return shown_with(again, contour) + [f"Live: EF {float(ef):g} % (the loop just generated for it)."]
        started, seen, t0 = wanted.start(), inputs.now(sess), time.monotonic()

        def stop():
            wanted.check(sess, started, ef)
            inputs.check(sess, seen)
        try:
            stop()
            out = hooks.generate(input_file, frame_index, ef, stages, weights, seed, slots, progress, stop=stop)
            stop()                                    # released elsewhere while the files were written: not shown
        except Superseded as e:
            hooks.log(f"live: {e}")
            return noop(f"Live: {e}.")
        except InputChanged as e:
            hooks.log(f"live: {e}")
            return noop("")
        dt = time.monotonic() - t0
        wanted.remember(sess, key, ef, out, shown_files(out, hooks.n_cols))
        hooks.log(f"live: EF {float(ef):g} % generated in {dt:.1f} s")
        return shown_with(out, contour) + [f"Live: EF {float(ef):g} % generated in {dt:.1f} s (seed "
                                           f"{out[2 * hooks.n_cols + 3]['seed']})."]

    def show(input_file, frame_index, ef, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3, contour,
             request: gr.Request):
        try:
            return _show(input_file, frame_index, ef, stages, weights, seed, [s0, g0, s1, g1, s2, g2, s3, g3],
                         contour, hooks.session(request))
        finally:
            hooks.finish(request, input_file, poke=False)     # no generation: the result janitor has nothing new

    def _show(input_file, frame_index, ef, stages, weights, seed, slots, contour, sess):
        if not input_file or not cache.has_sets(sess):
            return noop()
        try:
            ef = float(ef)
        except (TypeError, ValueError):
            return noop()
        if not EF_RANGE[0] <= ef <= EF_RANGE[1]:      # a number still being typed into the slider's box
            return noop()
        try:
            hit = cache.show(sess, key_for(input_file, frame_index, stages, weights, seed, slots), ef)
        except ScrubRefused as e:
            return noop(f"Scrub: {e}.")
        if hit is None:
            return noop("Scrub: this page's cached loops are for another frame, seed, bundle, stages or steps: "
                        "press Scrub to fill them for the current ones.")
        near, out, s = hit
        rest = "" if s.complete or s.filling else " (stopped early: press Scrub to fill the rest)"
        if near is None:
            return noop(f"Scrub: {s.span()} yet for these settings{rest}.")
        note = "" if near == ef else f" (nearest to {ef:g} %)"
        return shown_with(out, contour) + [f"Scrub: cached loop for EF {near} %{note}, no model call; "
                                           f"{s.span()}{rest}."]

    def scrub(input_file, frame_index, ef, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3,
              request: gr.Request, progress=gr.Progress()):
        try:
            return _scrub(input_file, frame_index, stages, weights, seed, [s0, g0, s1, g1, s2, g2, s3, g3],
                          hooks.session(request), progress)
        finally:
            hooks.finish(request, input_file)

    def _scrub(input_file, frame_index, stages, weights, seed, slots, sess, progress):
        if not input_file:
            hooks.fail(NO_INPUT)
        key = key_for(input_file, frame_index, stages, weights, seed, slots)
        try:
            s = cache.begin(sess, key)
        except ScrubRefused as e:
            hooks.fail(e, input_file)
        todo = [e for e in SCRUB_EFS if e not in s.loops]
        if not todo:
            return f"Scrub: all {len(SCRUB_EFS)} EFs are already cached for these settings: move the EF slider."
        budget, t0 = hooks.budget(), time.monotonic()     # one time budget for the whole scrub, like a sweep
        try:
            for i, e in enumerate(todo):
                def part(p, desc="", _i=i, _e=e, **_):
                    progress((_i + p) / len(todo), desc=f"scrub EF {_e} % ({_i + 1}/{len(todo)}): {desc}")

                def stop():
                    if s.dropped:
                        raise ScrubGone("this page was closed: its scrub stopped")
                    budget.check()
                out = hooks.generate(input_file, frame_index, e, stages, weights, seed, slots, part, stop=stop)
                cache.add(s, e, out, shown_files(out, hooks.n_cols), Path(out[2 * hooks.n_cols + 1]).parent)
                hooks.log(f"scrub: EF {e} % cached ({len(s.loops)}/{len(SCRUB_EFS)})")
        except ScrubGone as e:
            hooks.log(f"scrub: {e}")
            return gr.update()
        finally:
            cache.end(s)
        dt = time.monotonic() - t0
        hooks.log(f"scrub: {len(todo)} loops generated in {dt:.1f} s")
        return (f"Scrub ready: {s.span()} in {dt:.0f} s for this frame, seed, bundle and settings. Move the EF "
                "slider: the nearest cached loop shows at once, no model call. Kept while this page is open.")

    def closed(request: gr.Request):
        sess = hooks.session(request)
        cache.release(sess)
        wanted.release(sess)
        inputs.release(sess)

    return Handlers(want, live, show, scrub, closed)


def wire(demo, c: Controls, ef, inputs: list, outputs: list, contour, progress_on, hooks: Hooks,
         guarded: Callable, cache: ScrubCache | None = None, wanted: LiveRequests | None = None,
         page_inputs: PageInputs | None = None) -> Handlers:
    """Live mode's and scrub's events. inputs / outputs: the Generate button's; contour: the LV-contour checkbox;
    progress_on: the component that shows a live generation's progress (the Generate button's); guarded: the
    app's wrapper (one scrubbed line for any unexpected error)."""
    h = make_handlers(hooks, cache or ScrubCache(), wanted or LiveRequests(), page_inputs)
    outs = outputs + [c.status]
    # every release reaches the server at once (a stale live generation stops early); then the live event:
    # always_last, so while one runs the page sends only its last release afterwards
    ef.release(guarded(h.want), [ef], None, queue=False, trigger_mode="multiple", api_name="live_wanted",
               show_progress="hidden")
    ef.release(guarded(h.live), inputs + [c.live, contour], outs, trigger_mode="always_last", api_name="live",
               show_progress_on=[progress_on], concurrency_id="live")
    ef.input(guarded(h.show), inputs + [contour], outs, trigger_mode="always_last", api_name="scrub_show",
             show_progress="hidden", concurrency_limit=4, concurrency_id="scrub-show")
    c.scrub.click(guarded(h.scrub), inputs, [c.status], api_name="scrub", show_progress_on=[c.status],
                  concurrency_id="scrub").then(
        guarded(h.show), inputs + [contour], outs, api_name=False, show_progress="hidden")
    demo.unload(guarded(h.closed))
    return h
