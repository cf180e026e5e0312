"""Run a training script (train/*.py) in the test's own process, as `python train/x.py ARGS` runs it.

A single-process run of a script pays ~4 s for a fresh interpreter to import torch and echogen before it does any
work; the suite runs dozens of them (the single-process references of the torchrun tests, resumes, refusals). Here
the script runs by runpy as __main__ with sys.argv set, its output captured, its SystemExit turned into a return
code as the interpreter would (a message: 1 and the message on stderr), and the global state a script sets
(torch threads, the global RNGs, warning filters, sys.argv, the working directory: the repository root, as the
subprocesses had it) restored afterwards. Multi-process runs (torchrun, two "nodes") stay real processes:
tests/test_ddp.py launches them.
"""
from __future__ import annotations

import contextlib
import io
import random
import runpy
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args) -> subprocess.CompletedProcess:
    """(returncode, stdout, stderr) of `python -m echogen args`, run in this process."""
    return run_script(None, args)


def run_script(script, args) -> subprocess.CompletedProcess:
    """(returncode, stdout, stderr) of `python script args` (script None: `python -m echogen args`), run in this
    process."""
    if script is not None:
        script = Path(script) if Path(script).is_absolute() else ROOT / script
    argv = [str(script) if script is not None else "echogen"] + [str(a) for a in args]
    saved = (sys.argv, torch.get_num_threads(), torch.get_rng_state(), np.random.get_state(), random.getstate())
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        sys.argv = argv
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            try:
                if script is None:
                    runpy.run_module("echogen", run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(str(script), run_name="__main__")
            except SystemExit as e:                     # as the interpreter: None/0 -> 0, int -> it, text -> 1
                if isinstance(e.code, int) or e.code is None:
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:                           # noqa: BLE001 - a crash is a failed run, as in a process
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved[0]
        torch.set_num_threads(saved[1])
        torch.set_rng_state(saved[2])
        np.random.set_state(saved[3])
        random.setstate(saved[4])
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
