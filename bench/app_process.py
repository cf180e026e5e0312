"""What the benchmarks that drive the real app share: a free port and stopping the app they started."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_app(proc: subprocess.Popen, log, work: Path) -> None:
    """Terminate the app (killed after 20 s), close its log, delete its working folder."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(work, ignore_errors=True)
