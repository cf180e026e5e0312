"""The scrub cache of the app's EF slider (issue 24): per page, bounded, keyed by everything that changes a loop.

Scrub pre-generates EF 15, 20, ..., 85 (`SCRUB_EFS`, 15 loops) for the current frame, seed, bundle, stages, steps
and guidance; moving the slider then shows the cached loop of the nearest cached EF without a model call. A set
belongs to one page (gradio session hash) and one `ScrubKey`; `ScrubLimits` bound the sets per page, the sets on
the server and the fills a page may start per hour; a page's sets go (with their result folders) when it closes.
No gradio here: echogen/ui/live.py wires it into the app.
"""
from __future__ import annotations

import hashlib
import math
import shutil
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SCRUB_EFS = tuple(range(15, 86, 5))       # EF 15, 20, ..., 85: 15 loops


def frame_digest(frame: np.ndarray) -> str:
    """Content hash of a conditioning frame (its dtype, shape and bytes)."""
    a = np.ascontiguousarray(frame)
    return hashlib.sha1(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


@dataclass(frozen=True)
class ScrubKey:
    """What a scrub set was made for; it is shown only for exactly these (a change of any of them misses it)."""
    frame: str                            # frame_digest of the conditioning frame
    seed: int
    bundle: str                           # the bundle's folder (or random-init)
    stages: tuple                         # stages run after the base, in cascade order
    steps: tuple                          # (stage, steps) of every stage run
    guidance: tuple                       # (stage, guidance) of every stage run

    @staticmethod
    def make(frame: str, seed: int, bundle: str, engine_stages, enabled, steps: dict, guidance: dict) -> "ScrubKey":
        """engine_stages: the cascade's StageConfigs; enabled / steps / guidance as the app's request has them."""
        run = [s.name for s in engine_stages if s.is_base or s.name in set(enabled)]
        return ScrubKey(frame, int(seed), str(bundle), tuple(run[1:]), tuple((n, steps.get(n)) for n in run),
                        tuple((n, guidance.get(n)) for n in run))


@dataclass(frozen=True)
class ScrubLimits:
    """Bounds of the scrub cache. A set is at most 15 loops: the page's outputs per EF in memory (paths and the
    readout, ~10 kB) and the loops' files on disk (one result folder per EF: ~0.1 MB per loop with the tiny test
    bundle, ~1 MB with the demo bundle)."""
    sets_per_page: int = 2                # a page's third set replaces its least recently used one
    max_sets: int = 16                    # on the whole server; beyond it the least recently used set goes
    fills_per_hour: int = 12              # scrubs one page may start per hour

    def __post_init__(self):
        for name in ("sets_per_page", "max_sets", "fills_per_hour"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"scrub limit {name} must be at least 1, got {getattr(self, name)}")


class ScrubRefused(Exception):
    """A scrub the limits do not allow now (the message says which and why)."""


class ScrubGone(Exception):
    """The set being filled was dropped (its page closed)."""


@dataclass
class ScrubSet:
    key: ScrubKey
    session: str
    loops: dict = field(default_factory=dict)         # EF -> the generate outputs for that EF
    files: dict = field(default_factory=dict)         # EF -> the files those outputs show
    folders: list = field(default_factory=list)       # result folders, deleted with the set
    filling: bool = False
    dropped: bool = False
    used: float = 0.0

    @property
    def complete(self) -> bool:
        return all(e in self.loops for e in SCRUB_EFS)

    def nearest(self, ef: float) -> int | None:
        """The cached EF nearest to `ef` (the lower one on a tie); None while nothing is cached."""
        if not self.loops:
            return None
        return min(self.loops, key=lambda e: (abs(e - float(ef)), e))

    def span(self) -> str:
        done = sorted(self.loops)
        return f"{len(done)} of {len(SCRUB_EFS)} EFs cached" + (f" ({done[0]}–{done[-1]} %)" if done else "")


class ScrubCache:
    """Scrub sets per page (gradio session hash), thread-safe and bounded by ScrubLimits; `release` (page closed)
    and eviction delete a set's result folders. A set being filled is never evicted."""

    def __init__(self, limits: ScrubLimits | None = None, clock=time.monotonic):
        self.limits, self.clock = limits or ScrubLimits(), clock
        self._sets: list[ScrubSet] = []
        self._fills: dict[str, deque] = {}
        self._lock = threading.Lock()

    # -- filling
    def begin(self, session: str, key: ScrubKey) -> ScrubSet:
        """The set to fill for this page and key: the one already there (complete: nothing to do; partial: its
        missing EFs get filled) or a new one, making room by the limits. Raises ScrubRefused."""
        if not session:
            raise ScrubRefused("scrub needs a page session (open the app in a browser, or use gradio_client)")
        with self._lock:
            now = self.clock()
            mine = [s for s in self._sets if s.session == session]
            if any(s.filling for s in mine):
                raise ScrubRefused("a scrub is already running for this page: wait for it to finish")
            s = next((s for s in mine if s.key == key), None)
            if s is not None and s.complete:
                s.used = now
                return s
            fills = self._fills.setdefault(session, deque())
            while fills and now - fills[0] > 3600:
                fills.popleft()
            if len(fills) >= self.limits.fills_per_hour:
                wait = math.ceil((3600 - (now - fills[0])) / 60)
                raise ScrubRefused(f"this page has started {len(fills)} scrubs in the last hour (the server allows "
                                   f"{self.limits.fills_per_hour}): try again in {wait} min")
            if s is None:
                while len(mine) >= self.limits.sets_per_page:
                    self._evict(min(mine, key=lambda x: x.used))
                    mine = [x for x in self._sets if x.session == session]
                while len(self._sets) >= self.limits.max_sets:
                    idle = [x for x in self._sets if not x.filling]
                    if not idle:
                        raise ScrubRefused(f"the server is filling its maximum of {self.limits.max_sets} scrub "
                                           "sets: try again in a few minutes")
                    self._evict(min(idle, key=lambda x: x.used))
                s = ScrubSet(key, session)
                self._sets.append(s)
            fills.append(now)
            s.filling, s.used = True, now
            return s

    def add(self, s: ScrubSet, ef: int, outputs: list, files, folder) -> None:
        """One EF's outputs, the files they show and the result folder holding them. Raises ScrubGone (and
        deletes the folder) when the set was dropped meanwhile."""
        with self._lock:
            if not s.dropped:
                s.loops[int(ef)], s.files[int(ef)] = outputs, [str(f) for f in files]
                s.folders.append(str(folder))
                s.used = self.clock()
                return
        shutil.rmtree(folder, ignore_errors=True)
        raise ScrubGone("this page was closed: its scrub stopped")

    def end(self, s: ScrubSet) -> None:
        with self._lock:
            s.filling = False

    # -- showing
    def has_sets(self, session: str | None) -> bool:
        with self._lock:
            return any(s.session == session for s in self._sets)

    def find(self, session: str | None, key: ScrubKey) -> ScrubSet | None:
        with self._lock:
            return next((s for s in self._sets if s.session == session and s.key == key), None)

    def show(self, session: str | None, key: ScrubKey, ef: float, exact: bool = False):
        """None when this page has no set for this key; else (cached EF, its outputs, the set) for the nearest
        cached EF (exact: only `ef` itself), or (None, None, the set) when it has none yet. A set whose files the
        server has pruned meanwhile (the result janitor, --max-results-mb) is dropped and ScrubRefused says so; a
        hit keeps the set's folders fresh for the janitor's age rule."""
        with self._lock:
            s = next((s for s in self._sets if s.session == session and s.key == key), None)
            if s is None:
                return None
            near = s.nearest(ef)
            if near is None or (exact and near != float(ef)):
                return None, None, s
            if not all(Path(f).is_file() for f in s.files[near]):
                self._evict(s)
                raise ScrubRefused("this page's scrub set was pruned by the server (its result files are kept for "
                                   "a limited time and space): press Scrub again")
            s.used = self.clock()
            folders, out = list(s.folders), s.loops[near]
        for d in folders:                                 # outside the lock: file system calls
            try:
                Path(d).touch()
            except OSError:
                pass
        return near, out, s

    # -- freeing
    def release(self, session: str | None) -> int:
        """The page closed: drop its sets (a running fill stops at its next loop) and delete their folders."""
        with self._lock:
            gone = [s for s in self._sets if s.session == session]
            for s in gone:
                self._evict(s)
            self._fills.pop(session, None)
        return len(gone)

    def stats(self) -> dict:
        with self._lock:
            return {"sets": len(self._sets), "pages": len({s.session for s in self._sets}),
                    "loops": sum(len(s.loops) for s in self._sets)}

    def _evict(self, s: ScrubSet) -> None:
        """(lock held) Forget a set and delete its result folders."""
        s.dropped = True
        if s in self._sets:
            self._sets.remove(s)
        for d in s.folders:
            shutil.rmtree(d, ignore_errors=True)


class FrameDigests:
    """frame_digest of an upload's conditioning frame, remembered per (file, size, mtime, frame index) so moving
    the slider does not decode the upload again. Bounded (least recently used first out)."""

    def __init__(self, size: int = 256):
        self.size, self._memo, self._lock = int(size), OrderedDict(), threading.Lock()

    def get(self, path, index: int, load: Callable) -> str:
        """load(): the conditioning frame, read when it is not remembered (and when the file cannot even be
        stat-ed: then load's own error says what is wrong with the upload)."""
        p = Path(str(path))
        try:
            st = p.stat()
        except OSError:
            return frame_digest(load())
        k = (str(p.resolve()), st.st_size, st.st_mtime_ns, int(index))
        with self._lock:
            if k in self._memo:
                self._memo.move_to_end(k)
                return self._memo[k]
        digest = frame_digest(load())
        with self._lock:
            self._memo[k] = digest
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return digest
