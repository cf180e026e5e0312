"""A bounded load check of the app: N concurrent users against a local server, with latency percentiles
and the server's resident memory before, at its peak and after.

    python bench/load_app.py --users 4 --requests 2                   # bundled demo weights
    python bench/load_app.py --users 4 --requests 2 --hostile         # + one user sending hostile files
    python bench/load_app.py --app /path/to/other/checkout/app.py ... # the same load against another checkout

It starts app.py (this checkout's unless --app) on a free 127.0.0.1 port with its temporary files under a
fresh folder, runs `users` threads that each send `requests` generations (gradio_client, /generate, a bundled
example frame) at the same time, samples the server's RSS every 0.2 s, and prints one JSON object and a
Markdown table row. Latency = submit to result, so it includes the time spent waiting in the queue.
--hostile adds one more user who first sends a 1 KB GIF with 40 frames of 4096x4096 (refused from its header)
and a 45 KB MP4 with 3000 frames (only frame 0 is decoded), both made here, then generates normally; its
requests are listed with their latency and outcome. Bounded: at most 16 users x 10 requests, and --timeout seconds in all.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app_process import free_port, stop_app    # bench/app_process.py (this script's folder)

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> tuple[float, float]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan"), float("nan")
    kb = {k: float(v.split()[0]) for k, v in (ln.split(":", 1) for ln in text.splitlines() if ":" in ln)
          if k in ("VmRSS", "VmHWM")}
    return kb.get("VmRSS", float("nan")) / 1024, kb.get("VmHWM", float("nan")) / 1024


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


def hostile_files(folder: Path) -> list[Path]:
    from echogen.data.hostile import hostile_gif, long_mp4
    return [hostile_gif(folder / "scan.png"), long_mp4(folder / "clip.mp4")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--requests", type=int, default=2, help="generations per user")
    p.add_argument("--weights", default=str(ROOT / "assets" / "weights" / "demo"))
    p.add_argument("--image", default=str(ROOT / "assets" / "examples" / "phantom_test_ef50.png"))
    p.add_argument("--app", default=str(ROOT / "app.py"), help="app.py to start (default: this checkout's)")
    p.add_argument("--api-weights", default=None,
                   help="the weights value the API takes (default: the bundle's name; apps before issue 22 "
                        "took the bundle's absolute path)")
    p.add_argument("--hostile", action="store_true", help="one more user sends hostile files first")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds for the whole run")
    p.add_argument("--app-args", default="", help="extra app.py arguments, e.g. '--time-budget 120'")
    a = p.parse_args(argv)
    if not (1 <= a.users <= 16 and 1 <= a.requests <= 10):
        p.error("--users must be 1-16 and --requests 1-10")
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="echogen-load-"))
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(work), "OMP_NUM_THREADS": str(os.cpu_count() or 2)}
    log = open(work / "app.log", "w")
    cmd = [sys.executable, a.app, "--port", str(port), "--device", "cpu", "--weights", a.weights, "--no-teaching",
           *a.app_args.split()]
    proc = subprocess.Popen(cmd, cwd=Path(a.app).parent, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + a.timeout
    url = f"http://127.0.0.1:{port}/"
    try:
        while "serving at" not in (work / "app.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the app did not start:\n{(work / 'app.log').read_text()[-2000:]}")
            time.sleep(0.5)
        time.sleep(2.0)
        base_rss = rss_mb(proc.pid)[0]
        peak = [base_rss]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(proc.pid)[0])
                time.sleep(0.2)
        threading.Thread(target=sample, daemon=True).start()

        weights = a.api_weights or Path(a.weights).name
        lat, errors, hostile_lat, lock = [], [], [], threading.Lock()
        bad = hostile_files(work) if a.hostile else []

        def user(k: int, evil: bool):
            c = Client(url, verbose=False)
            for f in (bad if evil else []):   # refused (too large) or read only as far as needed (long clip)
                t0 = time.monotonic()
                try:
                    c.predict(handle_file(str(f)), 0, 45, ["spatial", "temporal"], weights, k, *slots,
                              api_name="/generate")
                    outcome = "generated (frame 0 read)"
                except Exception as e:
                    outcome = "refused: " + str(e)[:120]
                with lock:
                    hostile_lat.append((f.name, round(time.monotonic() - t0, 2), outcome))
            for r in range(a.requests):
                if time.monotonic() > deadline:
                    return
                t0 = time.monotonic()
                try:
                    c.predict(handle_file(a.image), 0, 35 + 5 * r, ["spatial", "temporal"], weights, k * 100 + r,
                              *slots, api_name="/generate")
                    with lock:
                        lat.append(time.monotonic() - t0)
                except Exception as e:
                    with lock:
                        errors.append(f"user {k}: {str(e)[:200]}")

        # the bundle's own steps/guidance for every stage slot (what the app's sliders start at)
        stages = json.loads((Path(a.weights) / "manifest.json").read_text())["cascade"]["stages"]
        slots = []
        for i in range(4):
            st = stages[i] if i < len(stages) else {}
            slots += [int(st.get("steps", 1)), float(st.get("guidance", 1.0))]
        t_all = time.monotonic()
        threads = [threading.Thread(target=user, args=(k, False)) for k in range(a.users)]
        if a.hostile:
            threads.append(threading.Thread(target=user, args=(a.users, True)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        wall = time.monotonic() - t_all
        time.sleep(3.0)
        stop.set()
        after_rss, hwm = rss_mb(proc.pid)
        result = {"users": a.users, "requests_per_user": a.requests, "hostile_user": a.hostile,
                  "completed": len(lat), "errors": errors, "wall_s": round(wall, 1),
                  "latency_p50_s": round(pct(lat, 50), 2) if lat else None,
                  "latency_p95_s": round(pct(lat, 95), 2) if lat else None,
                  "latency_max_s": round(max(lat), 2) if lat else None,
                  "mean_service_s": round(wall / max(1, len(lat)), 2),
                  "rss_before_mb": round(base_rss), "rss_peak_mb": round(max(peak[0], hwm)),
                  "rss_after_mb": round(after_rss), "hostile": hostile_lat,
                  "app": str(Path(a.app).resolve().parent.name), "cpus": os.cpu_count(),
                  "stdev_s": round(statistics.pstdev(lat), 2) if len(lat) > 1 else None}
        print(json.dumps(result, indent=1))
        print(f"| {a.users} users x {a.requests} | {result['latency_p50_s']} s | {result['latency_p95_s']} s | "
              f"{result['rss_before_mb']} MB | {result['rss_peak_mb']} MB | {result['rss_after_mb']} MB | "
              f"{len(errors)} |")
        return 0 if not errors else 1
    finally:
        stop_app(proc, log, work)


if __name__ == "__main__":
    sys.exit(main())
