"""The app's command line (python app.py --help): what it serves, to whom, with which limits."""
from __future__ import annotations

import argparse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="EchoGen app: one echo frame + an EF -> generated echo loops")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (needs internet)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the whole network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--weights", default=None, help="weights bundle folder (default: bundles under assets/weights)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when present)")
    p.add_argument("--auth", action="append", default=None,
                   help="participant login user:pass (repeat, or comma-separate, for several); required to open the "
                        "app and its API (failed logins back off per IP and user)")
    p.add_argument("--organiser", action="append", default=None,
                   help="organiser (teacher) login user:pass: builds pools and review sets, sees summaries, exports "
                        "and keys (repeatable). Without any login on 127.0.0.1 the local user is the organiser")
    p.add_argument("--data-root", default=None,
                   help="folder of EchoNet-format datasets the organiser may draw real clips from (nothing outside it)")
    p.add_argument("--pool-limits", default=None,
                   help="bounds per build, e.g. frames=10,efs=8,per_frame=3,cases=120,real=40 (these are the defaults)")
    p.add_argument("--teaching-disk-mb", type=float, default=5000.0,
                   help="the teaching folder (--results) may not grow past this (default 5000 MB)")
    p.add_argument("--gate-tolerance", type=float, default=7.0,
                   help="pool quality gate: EF points allowed between the requested EF and the EF read from a "
                        "generated loop (default 7)")
    p.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (PEM; see README)")
    p.add_argument("--ssl-keyfile", default=None, help="the certificate's private key (PEM)")
    p.add_argument("--ssl-keyfile-password", default=None, help="password of an encrypted private key")
    p.add_argument("--random-init", action="store_true",
                   help="offer the demo preset with random weights (UNTRAINED noise, for testing the app)")
    p.add_argument("--results", default="results",
                   help="teaching results folder (pools, review sets, answers database; default ./results)")
    p.add_argument("--no-teaching", action="store_true", help="only the generation tab (no teaching tabs)")
    from echogen.cli.main import add_input_limit_arguments, add_speed_arguments
    add_speed_arguments(p)
    add_input_limit_arguments(p)
    p.add_argument("--time-budget", type=float, default=300.0,
                   help="seconds one generation or sweep may run before it is stopped (default 300; 0 = none)")
    p.add_argument("--keep-results-min", type=float, default=30.0,
                   help="minutes a request's result files are kept for download (default 30)")
    p.add_argument("--max-results-mb", type=float, default=500.0,
                   help="result files kept at most (oldest deleted first; default 500 MB)")
    p.add_argument("--upload-ttl-min", type=float, default=30.0,
                   help="minutes anything in the upload cache is kept at most (default 30; uploads are "
                        "deleted after use anyway, a page's own when it is closed)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="generations run at once (default 1 on CPU, 2 on CUDA); others wait in the queue")
    return p.parse_args(argv)
