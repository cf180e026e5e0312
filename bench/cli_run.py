"""One CLI command run in this process, its stdout returned (bench/loop_reading.py, bench/real_sweep.py)."""
import contextlib
import io

from echogen.cli.main import main as cli


def run(argv) -> str:
    """stdout of `python -m echogen ARGV`; a non-zero exit stops the benchmark with the command."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if cli(argv) != 0:
            raise SystemExit(f"failed: {' '.join(argv)}")
    return buf.getvalue()
