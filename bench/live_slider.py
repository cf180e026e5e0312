"""The EF slider as a user feels it (issue 24): live mode and scrub in the real app, in headless Chromium.

    python bench/live_slider.py --weights assets/weights/demo                  # the bundled 18-NFE bundle
    python bench/live_slider.py --weights assets/weights/demo-fast --out docs/live_slider.md
    python bench/live_slider.py --weights DIR --releases 5 --switches 8 --out results.csv

It starts app.py (this checkout's) on a free 127.0.0.1 port with its temporary files under a fresh folder and
`--time-budget 0` (a scrub on a loaded box must not be stopped half-way; change it with --app-args), opens it in
Debian's Chromium (/usr/bin/chromium, through Playwright), uploads --image and then, moving the EF slider with
the mouse as a user would:

1. live mode on; one warm-up release (the first generation also pays for the network's first run), then
   --releases releases, each timed from the mouse click on the slider's track to the final stage's new loop
   playing in the page (its <video> has the new source, enough data, currentTime > 0);
2. live mode off; Scrub: from the click to "15 of 15 EFs cached" in the status line (the fill time), and the
   server's own time for the 15 loops (its log);
3. --switches slider moves between cached EFs, each timed from the click to the page's status line naming the
   cached EF (the server's answer arrived) and to the cached loop playing.

It prints one JSON object and a Markdown table row, and with --out appends the row to that file (a .csv gets a
CSV row; a header is written first when the file is new). Hang guard: --timeout seconds in all.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app_process import free_port, stop_app    # bench/app_process.py (this script's folder)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STATUS = "document.querySelector('#live-status')?.innerText || ''"
FIELDS = ["utc", "weights", "nfe", "cpus", "load_1min_start", "load_1min_end", "warmup_release_s",
          "releases", "release_to_playing_median_s", "release_to_playing_min_s", "release_to_playing_max_s",
          "scrub_fill_s", "scrub_server_s", "switches", "cached_answer_median_s", "cached_switch_median_s",
          "cached_switch_max_s"]


def bundle_nfe(weights: Path) -> int:
    """Network evaluations per loop at the bundle's own settings, all stages (what the live default reads)."""
    from echogen.config import CascadeConfig
    from echogen.diffusion.stage import cascade_nfe
    man = json.loads((weights / "manifest.json").read_text())
    return cascade_nfe(CascadeConfig.from_dict(man["cascade"]))


def playing(prev: str, video: str) -> str:
    """JS predicate: the final stage's loop has a new source and plays."""
    return (f"() => {{ const v = document.querySelector('{video} video'); return !!v && !!v.currentSrc && "
            f"v.currentSrc != {json.dumps(prev)} && v.readyState >= 2 && v.currentTime > 0; }}")


def write_row(out: Path, row: dict) -> None:
    new = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", newline="") as fh:
        if out.suffix == ".csv":
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k) for k in FIELDS})
            return
        if new:
            fh.write("| " + " | ".join(FIELDS) + " |\n|" + "---|" * len(FIELDS) + "\n")
        fh.write("| " + " | ".join("" if row.get(k) is None else str(row[k]) for k in FIELDS) + " |\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(ROOT / "assets" / "weights" / "demo"), help="weights bundle folder")
    p.add_argument("--image", default=str(ROOT / "assets" / "examples" / "phantom_test_ef50.png"))
    p.add_argument("--releases", type=int, default=5, help="timed live releases after the warm-up one (1-20)")
    p.add_argument("--switches", type=int, default=8, help="timed slider moves between cached loops (1-30)")
    p.add_argument("--no-scrub", action="store_true", help="live releases only")
    p.add_argument("--out", default=None, help="append the row to this .md or .csv file")
    p.add_argument("--app-args", default="--time-budget 0", help="extra app.py arguments (default: no time budget)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run (a hang guard)")
    a = p.parse_args(argv)
    if not (1 <= a.releases <= 20 and 1 <= a.switches <= 30):
        p.error("--releases must be 1-20 and --switches 1-30")
    weights = Path(a.weights)
    if not (weights / "manifest.json").is_file():
        p.error(f"--weights {a.weights}: no manifest.json (not a weights bundle)")
    from playwright.sync_api import sync_playwright

    n_stages = len(json.loads((weights / "manifest.json").read_text())["cascade"]["stages"])
    video = f"#video-{n_stages - 1}"
    work = Path(tempfile.mkdtemp(prefix="echogen-live-bench-"))
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(work)}
    log_path = work / "app.log"
    log = open(log_path, "w")
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", "cpu", "--weights", str(weights),
           "--no-teaching", *a.app_args.split()]
    deadline = time.monotonic() + a.timeout
    row = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "weights": weights.name,
           "nfe": bundle_nfe(weights), "cpus": os.cpu_count(), "load_1min_start": round(os.getloadavg()[0], 2)}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while "serving at" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the app did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.set_default_timeout(max(1000.0, (deadline - time.monotonic()) * 1000))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#generate-btn")
            page.locator("#input-file input[type=file]").set_input_files(a.image)
            page.wait_for_selector("#preview img")
            page.wait_for_function("() => (document.querySelector('#a4c-box')?.innerText || '').length > 0")

            def src() -> str:
                return page.eval_on_selector(video, "e => e.querySelector('video')?.currentSrc || ''") or ""

            def move(frac: float) -> tuple[float, int]:
                """Click on the slider's track; (time of the click, the EF it landed on)."""
                rng = page.locator("#ef-slider input[type=range]")
                rng.scroll_into_view_if_needed()
                box = rng.bounding_box()
                t0 = time.perf_counter()
                page.mouse.click(box["x"] + frac * box["width"], box["y"] + box["height"] / 2)
                return t0, int(float(page.locator("#ef-slider input[type=number]").input_value()))

            def until(js: str, arg=None) -> None:
                page.wait_for_function(js, arg=arg, timeout=max(1000.0, (deadline - time.monotonic()) * 1000))

            # 1. live mode: one warm-up release, then the timed ones (alternating ends so every EF is new)
            live = page.locator("#live-mode input[type=checkbox]")
            if not live.is_checked():
                live.check()
            fracs = [0.3, 0.7, 0.45, 0.85, 0.2, 0.6, 0.35, 0.75, 0.5, 0.9] * 2
            times = []
            for k in range(a.releases + 1):
                prev = src()
                t0, ef = move(fracs[k])
                until(f"s => ({STATUS}).includes(s)", f"Live: EF {ef} %")
                until(playing(prev, video))
                dt = time.perf_counter() - t0
                print(f"release {'(warm-up)' if k == 0 else k} at EF {ef}: {dt:.2f} s to a playing loop", flush=True)
                if k == 0:
                    row["warmup_release_s"] = round(dt, 2)
                else:
                    times.append(dt)
            row.update(releases=len(times), release_to_playing_median_s=round(statistics.median(times), 2),
                       release_to_playing_min_s=round(min(times), 2), release_to_playing_max_s=round(max(times), 2))

            # 2. scrub: live mode off (a release must not generate), fill, then 3. cached switches
            if not a.no_scrub:
                live.uncheck()
                t0 = time.perf_counter()
                page.locator("#scrub-btn").click()
                until(f"() => ({STATUS}).includes('15 of 15 EFs cached')")
                row["scrub_fill_s"] = round(time.perf_counter() - t0, 1)
                m = re.search(r"scrub: 15 loops generated in ([\d.]+) s", log_path.read_text())
                row["scrub_server_s"] = float(m.group(1)) if m else None
                print(f"scrub: {row['scrub_fill_s']} s to 15 cached loops (server: {row['scrub_server_s']} s)",
                      flush=True)
                switch, answered = [], []
                for k in range(a.switches):
                    prev = src()
                    t0, ef = move([0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.8, 0.4][k % 8])
                    near = min(range(15, 90, 5), key=lambda e: (abs(e - ef), e))
                    until(f"s => ({STATUS}).includes(s)", f"cached loop for EF {near} %")
                    answered.append(time.perf_counter() - t0)
                    until(playing(prev, video))
                    switch.append(time.perf_counter() - t0)
                    print(f"cached switch to EF {ef} (loop of EF {near}): answered in {answered[-1]:.3f} s, "
                          f"playing after {switch[-1]:.3f} s", flush=True)
                generated = len(re.findall(r"(live: EF \S+ % generated|scrub: EF \S+ % cached)", log_path.read_text()))
                if generated != a.releases + 1 + 15:
                    raise SystemExit(f"expected {a.releases + 16} generations in the server log, found {generated}")
                row.update(switches=len(switch), cached_switch_median_s=round(statistics.median(switch), 3),
                           cached_switch_max_s=round(max(switch), 3),
                           cached_answer_median_s=round(statistics.median(answered), 3))
            browser.close()
    finally:
        stop_app(proc, log, work)
    row["load_1min_end"] = round(os.getloadavg()[0], 2)
    row["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    print(json.dumps(row, indent=1))
    print("| " + " | ".join("" if row.get(k) is None else str(row[k]) for k in FIELDS) + " |")
    if a.out:
        write_row(Path(a.out), row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
