"""Live mode and scrub in the real app in headless Chromium (issue 24): the EF slider is moved with the mouse, as
a user moves it (pointer down on the range, pointer up = the release).

The tiny random test bundle (tests/test_app.py make_bundle, weights perturbed so the EF changes the loop) with few
steps keeps each loop to about a second.
Hang guards only; how fast it feels is bench/live_slider.py's business.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from test_app import decode, make_inputs, start_app, stop_app  # noqa: E402
from test_app_live import make_ef_bundle  # noqa: E402
from test_app_browser import CHROMIUM, FLAGS, PROGRESS_ELEMENTS  # noqa: E402

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is absent (run .ci/install_browser.sh)")

STATUS = "document.querySelector('#live-status')?.innerText || ''"
PLAYING = """prev => { const v = document.querySelector('#video-2 video');
                       return v && v.currentSrc && v.currentSrc != prev && v.readyState >= 2 && v.currentTime > 0; }"""


def generated(log: Path) -> list[str]:
    """EFs the server generated a loop for in live mode or for a scrub, in order."""
    return re.findall(r"(?:live: EF (\S+) % generated|scrub: EF (\S+) % cached)", log.read_text())


def test_live_mode_and_scrub_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    bundle = make_ef_bundle(tmp_path / "bundle")
    files = make_inputs(tmp_path)
    log = tmp_path / "app.log"
    proc, url, _ = start_app(["--weights", str(bundle), "--no-teaching"], log)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.set_default_timeout(180_000)   # a hang guard; loaded CI boxes are slow
            page.goto(url)
            page.wait_for_selector("#generate-btn")
            page.locator("#input-file input[type=file]").set_input_files(str(files["png"]))
            page.wait_for_selector("#preview img")

            # the tiny bundle needs 9 network evaluations per loop (> 6): live mode starts off and says why
            live = page.locator("#live-mode input[type=checkbox]")
            assert not live.is_checked()
            assert "Slow with this bundle: 9 network evaluations" in page.locator("#live-mode").inner_text()
            live.check()
            page.get_by_text("Advanced: sampling steps, guidance, seed").click()

            def set_steps(*steps):
                for i, n in enumerate(steps):
                    num = page.locator(f"#slot-steps-{i} input[type=number]")
                    num.fill(str(n))
                    num.press("Enter")
            set_steps(2, 1, 1)

            def track() -> dict:
                rng = page.locator("#ef-slider input[type=range]")
                rng.scroll_into_view_if_needed()
                return rng.bounding_box()

            def release_at(frac: float, box: dict | None = None) -> int:
                """Press and release the mouse on the slider's track; the EF it landed on."""
                box = box or track()
                page.mouse.click(box["x"] + frac * box["width"], box["y"] + box["height"] / 2)
                return int(float(page.locator("#ef-slider input[type=number]").input_value()))

            def shown_src() -> str:
                return page.eval_on_selector("#video-2 video", "v => v.currentSrc") or ""

            def wait_shown(prev: str, status: str) -> str:
                page.wait_for_function(f"s => ({STATUS}).includes(s)", arg=status)
                page.wait_for_function(PLAYING, arg=prev)
                return shown_src()

            def frames(src: str) -> np.ndarray:
                f = tmp_path / f"shown_{abs(hash(src))}.mp4"
                f.write_bytes(page.request.get(src).body())
                return decode(f)

            def requested() -> str:
                return page.locator("#ef-readout").inner_text().lower().split("requested ef")[1].split("%")[0].strip()

            # --- live: a, b, then a again. Same seed and settings, so the second a is the first a, bit for bit
            a1 = release_at(0.25)
            src_a1 = wait_shown("", f"Live: EF {a1} % generated")
            b = release_at(0.75)
            src_b = wait_shown(src_a1, f"Live: EF {b} % generated")
            assert release_at(0.25) == a1
            src_a2 = wait_shown(src_b, f"Live: EF {a1} % generated")
            assert a1 != b and requested() == str(a1)
            first_a, second_a = frames(src_a1), frames(src_a2)
            assert np.array_equal(first_a, second_a)
            assert not np.array_equal(first_a, frames(src_b))

            # --- three releases in quick succession (longer loops: 50 + 20 + 20 steps): the last EF ends up shown
            # and is generated once; the earlier ones are dropped (or, when the releases come slowly, generated once)
            set_steps(50, 20, 20)
            before = len(generated(log))
            prev = shown_src()
            box = track()
            efs = [release_at(f, box) for f in (0.4, 0.6, 0.85)]
            assert len(set(efs)) == 3
            wait_shown(prev, f"Live: EF {efs[-1]} %")        # generated, or shown again by the deferred repeat
            page.wait_for_timeout(2000)                    # anything still queued would show up now
            assert f"Live: EF {efs[-1]} %" in page.evaluate(f"() => {STATUS}")
            assert requested() == str(efs[-1])
            burst = [a or b for a, b in generated(log)[before:]]
            assert burst[-1] == str(efs[-1]) and burst.count(str(efs[-1])) == 1, burst    # once, even if sent twice
            # the middle EF is normally dropped too, but with the tiny test bundle a generation takes ~1 s, so on a
            # loaded machine the third release can come after the second's loop was made (CI saw ['58', '79'] once):
            # what must hold is that nothing is generated twice and nothing after the last release
            assert len(burst) == len(set(burst)) <= 3 and all(e in map(str, efs) for e in burst), burst
            print(f"rapid releases at EF {efs}: generated {burst}; server: "
                  f"{[ln for ln in log.read_text().splitlines() if 'live:' in ln][-3:]}")

            # --- scrub: EF 15..85 with a progress bar, then slider moves show cached loops without a generation
            live.uncheck()
            set_steps(2, 1, 1)
            before = len(generated(log))
            page.locator("#scrub-btn").click()
            progress_seen = False
            for _ in range(4000):                          # a hang guard (~10 min)
                progress_seen |= any(e.startswith("live-status") for e in page.evaluate(PROGRESS_ELEMENTS))
                if "15 of 15 EFs cached" in page.evaluate(f"() => {STATUS}"):
                    break
                page.wait_for_timeout(150)
            assert "15 of 15 EFs cached" in page.evaluate(f"() => {STATUS}")
            assert progress_seen
            scrubbed = [a or b for a, b in generated(log)[before:]]
            assert scrubbed == [str(e) for e in range(15, 90, 5)]
            prev = shown_src()
            for frac in (0.1, 0.52, 0.9, 0.33):
                ef = release_at(frac)
                near = min(range(15, 90, 5), key=lambda e: (abs(e - ef), e))
                note = "" if near == ef else f" (nearest to {ef} %)"
                want = f"Scrub: cached loop for EF {near} %{note}, no model call"
                page.wait_for_function(f"s => ({STATUS}).includes(s)", arg=want)
                if shown_src() != prev:
                    page.wait_for_function(PLAYING, arg=prev)
                prev = shown_src()
                assert requested() == str(near)
            assert len(generated(log)) == before + 15      # no model call after the scrub
            browser.close()
    finally:
        stop_app(proc)
