"""What keeps a classroom server safe, apart from any UI (no gradio imported here):

- `scrub`: user-facing messages without the uploaded file's name or any absolute server path;
- `check_request`: the numbers an API client may send (seed, steps, guidance, frame, EF), checked in
  project words before any work;
- `Budget`: a per-request time budget, enforced between sampler steps;
- `LoginThrottle` / `ThrottleLogins`: per-IP and per-user exponential backoff on failed logins (an ASGI
  middleware in front of gradio's /login);
- `Uploads`: uploads deleted after use (API calls at once; a browser's upload when its page closes);
- `Janitor`: a background thread pruning result/export folders by age and total size, stopped cleanly;
- `RunDirs`: the run's private temporary folders (0700), removed at exit, on SIGTERM and SIGINT.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

# ------------------------------------------------------------------------------------------ messages
_ABS_PATH = re.compile(r"(?<![\w:/.])(?:/[^\s/'\"(),;:<>]+)+/([^\s/'\"(),;:<>]*)")


def scrub(msg, *uploads) -> str:
    """First line of `msg`, with each upload's path and file name replaced by 'the upload' and every other
    absolute path cut to its last component."""
    text = str(msg).splitlines()[0] if str(msg) else ""
    names = []
    for u in uploads:
        if not u:
            continue
        p = Path(str(u))
        names += [str(p), p.name]
    for n in sorted(set(names), key=len, reverse=True):
        text = text.replace(n, "the upload")
    return _ABS_PATH.sub(lambda m: m.group(1) or "(folder)", text)


class QuietTracebacks:
    """A stderr wrapper for the server: a Python traceback (gradio prints one for every refused request)
    becomes one line with its exception message scrubbed: anything under `private` (the upload cache)
    is 'the upload', other absolute paths are cut to their last part. ECHOGEN_TRACEBACKS=1 shows them whole.
    A line longer than LINE_MAX is cut (a client's 100,000-character value, echoed in an error, would flood the log)."""
    LINE_MAX = 600

    def __init__(self, stream, private=()):
        self.stream, self._buf, self._in_tb = stream, "", False
        self._private = [re.compile(re.escape(str(Path(p))) + r"[^\s'\"]*") for p in private]

    def _clean(self, line: str) -> str:
        for rx in self._private:
            line = rx.sub("the upload", line)
        return scrub(line)

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if len(line) > self.LINE_MAX:
            line = f"{line[:self.LINE_MAX]}… (cut: {len(line)} characters)"
        if line.startswith("Traceback (most recent call last)"):
            self._in_tb = True
            return
        if self._in_tb:
            if not line.strip() or line[:1].isspace() or line.startswith(("During handling", "The above exception")):
                return
            self._in_tb = False
            self.stream.write(f"EchoGen: error (traceback hidden): {self._clean(line)}\n")
            return
        self.stream.write(self._clean(line) + "\n") if "/" in line else self.stream.write(line + "\n")

    def flush(self) -> None:
        if self._buf and not self._in_tb:
            self.stream.write(self._buf)
            self._buf = ""
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


# --------------------------------------------------------------------------------------- validation
STEPS_MAX = 50           # the app's sliders; an API client cannot ask for more
GUIDANCE_MAX = 10.0
FRAME_MAX = 100_000


def _number(value, what: str, lo: float, hi: float, whole: bool) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        f = math.nan
    if isinstance(value, bool) or not math.isfinite(f) or not lo <= f <= hi or (whole and f != int(f)):
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{what} must be {kind} from {lo:g} to {hi:g}, got {str(value)[:40]}")
    return int(f) if whole else f


def check_steps(value) -> int:
    """Sampler steps a browser or an API client asked for: a whole number from 1 to STEPS_MAX."""
    return int(_number(value, "steps", 1, STEPS_MAX, True))


def check_request(frame_index, ef, seed, slots) -> tuple[int, float, int, list]:
    """(frame, EF, seed, [steps, guidance] * n) from what a browser or an API client sent."""
    from echogen.diffusion.cascade import check_seed
    from echogen.ef import check_ef
    frame = _number(0 if frame_index is None else frame_index, "frame", 0, FRAME_MAX, True)
    ef = None if ef is None else check_ef(ef, "EF")
    seed = check_seed(0 if seed is None else seed, "seed")
    out = []
    for i, v in enumerate(slots):
        out.append(check_steps(v) if i % 2 == 0 else
                   _number(v, "guidance", 0, GUIDANCE_MAX, False))
    return frame, ef, seed, out


# ------------------------------------------------------------------------------------- time budget
class BudgetExceeded(RuntimeError):
    """A request ran past its time budget and was stopped."""


class Budget:
    """Budget(seconds).wrap(callback): a sampler callback that stops the request once `seconds` have passed
    (checked after every sampler step, so a request overruns by one network evaluation at most)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds if seconds and seconds > 0 else None
        self.t0 = time.monotonic()

    def check(self) -> None:
        if self.seconds is not None and time.monotonic() - self.t0 > self.seconds:
            raise BudgetExceeded(f"stopped: this request ran past the server's time budget of {self.seconds:g} s "
                                 "(fewer steps or stages finish sooner)")

    def wrap(self, callback):
        def cb(*a):
            if callback is not None:
                callback(*a)
            self.check()
        return cb


# --------------------------------------------------------------------------------- login throttling
class LoginThrottle:
    """Failed logins per client IP and per user name: after `free` failures in a row, each further
    attempt must wait base * 2^(n - free) s (at most `cap`); a success clears that IP and user."""

    def __init__(self, free: int = 3, base: float = 1.0, cap: float = 300.0, clock=time.monotonic):
        self.free, self.base, self.cap, self.clock = free, base, cap, clock
        self._fails: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _wait(self, key: str) -> float:
        n, last = self._fails.get(key, (0, 0.0))
        if n < self.free:
            return 0.0
        return max(0.0, last + min(self.cap, self.base * 2 ** (n - self.free)) - self.clock())

    def retry_after(self, ip: str, user: str) -> float:
        """Seconds this IP / user must still wait before a login is even checked (0: go ahead)."""
        with self._lock:
            return max(self._wait("ip:" + ip), self._wait("user:" + user.strip().lower()))

    def record(self, ip: str, user: str, ok: bool) -> None:
        keys = ("ip:" + ip, "user:" + user.strip().lower())
        with self._lock:
            for k in keys:
                if ok:
                    self._fails.pop(k, None)
                else:
                    n, _ = self._fails.get(k, (0, 0.0))
                    self._fails[k] = (n + 1, self.clock())
            if len(self._fails) > 10_000:                      # bounded: forget the oldest
                for k in sorted(self._fails, key=lambda k: self._fails[k][1])[:5_000]:
                    del self._fails[k]


class ThrottleLogins:
    """ASGI middleware in front of gradio's POST /login: refuses with 429 while an IP or user is in
    backoff, and records each answer (200 = success, 4xx = wrong credentials)."""

    def __init__(self, app, throttle: LoginThrottle):
        self.app, self.throttle = app, throttle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more and len(body) < 65536:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        from urllib.parse import parse_qs
        user = (parse_qs(body.decode("latin-1")).get("username") or [""])[0]
        ip = (scope.get("client") or ("?", 0))[0]
        wait = self.throttle.retry_after(ip, user)
        if wait > 0:
            payload = json.dumps({"detail": f"Too many failed logins: try again in {math.ceil(wait)} s."}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"retry-after", str(math.ceil(wait)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def watch(message):
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status < 300 or 400 <= status < 500:
                    self.throttle.record(ip, user, status < 300)
            await send(message)

        await self.app(scope, replay, watch)


# ------------------------------------------------------------------------------------------- uploads
class Uploads:
    """Uploaded files live under `root` (gradio's upload cache, private to this run). Gradio stores equal
    content at one path, so every upload is counted (`expect`, from TrackUploads) until a request has used
    it (`done`). A file is deleted when no upload of it is still waiting for its request and no open page
    keeps it: an API call's upload as soon as its request is done; a browser's upload (`keep`) when its
    page closes (`release`). Bundled example files that gradio copied into the cache are never deleted."""

    def __init__(self, root, keep_files=()):
        self.root = Path(root).resolve()
        self._sessions: dict[str, set[str]] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        from echogen.weights.bundle import file_sha256
        self._examples = {(Path(p).name, Path(p).stat().st_size): file_sha256(p) for p in keep_files if Path(p).is_file()}

    @staticmethod
    def _key(path) -> str:
        return str(Path(str(path)).resolve())

    def _ours(self, path) -> Path | None:
        try:
            p = Path(str(path)).resolve()
        except (OSError, ValueError):
            return None
        if self.root not in p.parents or not p.is_file():
            return None
        try:
            key = (p.name, p.stat().st_size)
        except OSError:
            return None
        from echogen.weights.bundle import file_sha256
        if key in self._examples and file_sha256(p) == self._examples[key]:
            return None
        return p

    def expect(self, paths) -> None:
        """Files just uploaded: each will be used by one request (or swept after the TTL)."""
        with self._lock:
            for p in paths:
                k = self._key(p)
                self._pending[k] = self._pending.get(k, 0) + 1

    def keep(self, session: str | None, path) -> None:
        if session and path:
            with self._lock:
                self._sessions.setdefault(session, set()).add(self._key(path))

    def _busy(self, k: str) -> bool:
        return self._pending.get(k, 0) > 0 or any(k in s for s in self._sessions.values())

    def done(self, session: str | None, path) -> bool:
        """After a request: delete its upload unless another upload of it still waits or a page keeps it."""
        if not path:
            return False
        k = self._key(path)
        with self._lock:
            if self._pending.get(k, 0) > 0:
                self._pending[k] -= 1
                if not self._pending[k]:
                    del self._pending[k]
            if self._busy(k):
                return False
            return self._delete(path)

    def release(self, session: str | None) -> int:
        """The page was closed: delete what it uploaded (unless still in use elsewhere)."""
        with self._lock:
            paths = self._sessions.pop(session, set()) if session else set()
            return sum(self._delete(p) for p in paths if not self._busy(p))

    def sweep(self, max_age_s: float, now: float | None = None) -> int:
        """Delete every file under root older than max_age_s that no open page keeps (uploads of requests
        gradio refused before they reached the app, gradio's copies of old results, its empty temp files)."""
        now = time.time() if now is None else now
        with self._lock:
            kept = set().union(*self._sessions.values()) if self._sessions else set()
        n = 0
        for f in list(self.root.rglob("*")):
            try:
                if f.is_file() and str(f.resolve()) not in kept and now - f.stat().st_mtime > max_age_s:
                    with self._lock:
                        self._pending.pop(str(f.resolve()), None)
                    n += self._delete(f)
            except OSError:
                continue
        return n

    def _delete(self, path) -> bool:
        p = self._ours(path)
        if p is None:
            return False
        try:
            p.unlink()
            parent = p.parent
            if parent != self.root and not any(parent.iterdir()):
                parent.rmdir()
            return True
        except OSError:
            return False


class TrackUploads:
    """ASGI middleware: reads the list of stored paths that gradio's POST .../upload answers with and tells
    `Uploads.expect` (so equal files uploaded by two users are not deleted under the second one)."""

    def __init__(self, app, uploads: Uploads):
        self.app, self.uploads = app, uploads

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        chunks, status = [], [0]

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body" and status[0] == 200 and sum(map(len, chunks)) < 1 << 20:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        paths = json.loads(b"".join(chunks))
                        if isinstance(paths, list):
                            self.uploads.expect([p for p in paths if isinstance(p, str)])
                    except ValueError:
                        pass
            await send(message)

        await self.app(scope, receive, watch)


# ------------------------------------------------------------------------------------------- janitor
def _size(p: Path) -> int:
    try:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    except OSError:
        return 0


def prune(root, max_age_s: float | None = None, max_mb: float | None = None, now: float | None = None) -> int:
    """Delete the entries (result folders, export folders) directly under `root` older than max_age_s, then
    the oldest until the rest fit in max_mb. Returns how many were deleted."""
    root = Path(root)
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    items = []
    for p in root.iterdir():
        try:
            items.append((p.stat().st_mtime, p))
        except OSError:
            continue
    items.sort()
    gone = 0

    def rm(p):
        nonlocal gone
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        gone += 1

    keep = []
    for t, p in items:
        if max_age_s is not None and now - t > max_age_s:
            rm(p)
        else:
            keep.append((t, p, _size(p)))
    if max_mb is not None:
        total = sum(s for _, _, s in keep)
        for _, p, s in keep:
            if total <= max_mb * 2 ** 20:
                break
            rm(p)
            total -= s
    return gone


class Janitor:
    """Every `every` s (and on poke()), prune each (root, max_age_s, max_mb) rule and run the extra
    callables (e.g. retrying unsaved answers). stop() ends the thread and waits for it."""

    def __init__(self, rules, every: float = 60.0, extra=()):
        self.rules, self.every, self.extra = list(rules), float(every), list(extra)
        self._stop, self._poke = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="echogen-janitor", daemon=True)

    def start(self) -> "Janitor":
        self._thread.start()
        return self

    def run_once(self) -> int:
        n = 0
        for root, age, mb in self.rules:
            n += prune(root, age, mb)
        for fn in self.extra:
            try:
                fn()
            except Exception:
                pass
        return n

    def poke(self) -> None:
        self._poke.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(self.every)
            self._poke.clear()
            if not self._stop.is_set():
                self.run_once()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._poke.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


# ---------------------------------------------------------------------------------- private run folders
class RunDirs:
    """This run's private temporary folders (mode 0700, under TMPDIR): `uploads` (gradio's upload and output
    cache: GRADIO_TEMP_DIR), `results` (one folder per request), `exports` (CSV downloads). close() removes
    them all; it runs at exit, and SIGTERM/SIGINT end the app through it (install_signal_handlers)."""

    def __init__(self, prefix: str = "echogen-app-"):
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(self.root, 0o700)
        for name in ("uploads", "results", "exports"):
            (self.root / name).mkdir(mode=0o700)
        self._closers: list = []
        self._closed = False

    uploads = property(lambda self: self.root / "uploads")
    results = property(lambda self: self.root / "results")
    exports = property(lambda self: self.root / "exports")

    def on_close(self, fn) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def install_signal_handlers() -> None:
    """SIGTERM (systemd, docker stop) ends the app like Ctrl-C: KeyboardInterrupt in the main thread,
    so the server closes and every `finally`/atexit cleanup runs."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, stop)
