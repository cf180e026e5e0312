"""Results of trainer and review sessions in SQLite (stdlib sqlite3), one file in a results folder.

Concurrency: WAL journal (readers never block the writer), busy_timeout so a writer waits for
another instead of failing, a fresh connection per call (safe from any thread or process; sqlite3
connections must not be shared across threads), and each write in its own BEGIN IMMEDIATE
transaction. A repeated answer for the same (session, position), e.g. a double click, is ignored.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from echogen.teaching.media import random_id

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1
KINDS = ("trainer", "review")
LABELS = ("real", "generated")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id        TEXT PRIMARY KEY,
    kind      TEXT NOT NULL CHECK (kind IN ('trainer', 'review')),
    rater     TEXT NOT NULL DEFAULT '',
    source    TEXT NOT NULL,              -- pool id or review-set id
    source_path TEXT NOT NULL DEFAULT '',
    started   TEXT NOT NULL,              -- ISO 8601 UTC
    meta      TEXT NOT NULL DEFAULT '{}'  -- JSON: EF categories, case count, ...
);
CREATE TABLE IF NOT EXISTS answers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session         TEXT NOT NULL REFERENCES sessions(id),
    rater           TEXT NOT NULL DEFAULT '',
    position        INTEGER NOT NULL,     -- order of the case within the session (0, 1, ...)
    case_id         TEXT NOT NULL,
    truth_ef        REAL,                 -- trainer: the case's EF
    truth_category  TEXT,
    truth_label     TEXT CHECK (truth_label IS NULL OR truth_label IN ('real', 'generated')),
    answer_ef       REAL,
    answer_category TEXT,
    answer_label    TEXT CHECK (answer_label IS NULL OR answer_label IN ('real', 'generated')),
    confidence      INTEGER CHECK (confidence IS NULL OR confidence BETWEEN 1 AND 5),
    comment         TEXT NOT NULL DEFAULT '',
    response_ms     INTEGER,
    created         TEXT NOT NULL,
    UNIQUE (session, position)
);
CREATE INDEX IF NOT EXISTS answers_session ON answers(session);
"""

ANSWER_COLUMNS = ["id", "session", "rater", "position", "case_id", "truth_ef", "truth_category",
                  "truth_label", "answer_ef", "answer_category", "answer_label", "confidence", "comment",
                  "response_ms", "created"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ResultsDB:
    """ResultsDB(results_dir): opens (creating if needed) RESULTS_DIR/results.sqlite."""

    def __init__(self, results_dir, timeout_s: float = 30.0):
        self.dir = Path(results_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        self.timeout_s = float(timeout_s)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")          # persistent: stored in the file
            ver = con.execute("PRAGMA user_version").fetchone()[0]
            if ver > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: written by a newer EchoGen (schema {ver} > {SCHEMA_VERSION})")
            with self._write(con):
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---- connections -------------------------------------------------------------------------
    @contextmanager
    def _connect(self):
        """A connection for this call only (autocommit mode; writes use _write)."""
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=NORMAL")        # durable at checkpoints under WAL
            yield con
        finally:
            con.close()

    @staticmethod
    @contextmanager
    def _write(con):
        """One transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to busy_timeout),
        COMMIT on success, ROLLBACK on any error."""
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # ---- sessions ----------------------------------------------------------------------------
    def start_session(self, kind: str, source: str, rater: str = "", source_path: str = "",
                      meta: dict | None = None) -> str:
        if kind not in KINDS:
            raise ValueError(f"session kind must be one of {KINDS}, got '{kind}'")
        sid = random_id(6)
        with self._connect() as con, self._write(con):
            con.execute("INSERT INTO sessions (id, kind, rater, source, source_path, started, meta) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (sid, kind, (rater or "").strip()[:100], str(source), str(source_path), _now(),
                         json.dumps(meta or {})))
        return sid

    def session(self, sid: str) -> dict:
        with self._connect() as con:
            r = con.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
        if r is None:
            raise KeyError(f"no session '{sid}' in {self.path}")
        return _session_dict(r)

    def sessions(self, kind: str | None = None, source: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM sessions WHERE 1=1", []
        if kind:
            q, args = q + " AND kind = ?", args + [kind]
        if source:
            q, args = q + " AND source = ?", args + [source]
        with self._connect() as con:
            return [_session_dict(r) for r in con.execute(q + " ORDER BY started", args)]

    def update_meta(self, sid: str, **changes) -> dict:
        """Merge `changes` into a session's meta JSON in one write transaction (e.g. excluded=True by the
        organiser; skipped positions of a trainer session). Returns the new meta."""
        with self._connect() as con, self._write(con):
            r = con.execute("SELECT meta FROM sessions WHERE id = ?", (sid,)).fetchone()
            if r is None:
                raise KeyError(f"no session '{sid}'")
            meta = json.loads(r["meta"] or "{}") | changes
            con.execute("UPDATE sessions SET meta = ? WHERE id = ?", (json.dumps(meta), sid))
        return meta

    # ---- answers -----------------------------------------------------------------------------
    def add_answer(self, session: str, position: int, case_id: str, *, truth_ef=None, truth_category=None,
                   truth_label=None, answer_ef=None, answer_category=None, answer_label=None,
                   confidence=None, comment: str = "", response_ms=None) -> bool:
        """Store one answer; returns False when (session, position) was already answered (kept as is)."""
        if answer_ef is None and answer_category is None and answer_label is None:
            raise ValueError("an answer needs an EF, a category or a real/generated label")
        if answer_ef is not None and not 0 <= float(answer_ef) <= 100:
            raise ValueError(f"answer EF must be 0-100 %, got {answer_ef}")
        if confidence is not None and not 1 <= int(confidence) <= 5:
            raise ValueError(f"confidence must be 1-5, got {confidence}")
        for lab in (truth_label, answer_label):
            if lab is not None and lab not in LABELS:
                raise ValueError(f"label must be one of {LABELS}, got '{lab}'")
        for attempt in range(3):
            try:
                with self._connect() as con, self._write(con):
                    r = con.execute("SELECT rater FROM sessions WHERE id = ?", (session,)).fetchone()
                    if r is None:
                        raise KeyError(f"no session '{session}'")
                    cur = con.execute(
                        "INSERT OR IGNORE INTO answers (session, rater, position, case_id, truth_ef, "
                        "truth_category, truth_label, answer_ef, answer_category, answer_label, confidence, "
                        "comment, response_ms, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (session, r["rater"], int(position), str(case_id), _f(truth_ef), truth_category,
                         truth_label, _f(answer_ef), answer_category, answer_label,
                         None if confidence is None else int(confidence), (comment or "")[:2000],
                         None if response_ms is None else int(response_ms), _now()))
                    return cur.rowcount == 1
            except sqlite3.OperationalError as e:   # "database is locked" past busy_timeout: try again
                if "locked" not in str(e) or attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return False

    def answers(self, session: str | None = None, kind: str | None = None, source: str | None = None) -> list[dict]:
        q = ("SELECT a.* FROM answers a JOIN sessions s ON s.id = a.session WHERE 1=1")
        args = []
        for col, val in (("a.session", session), ("s.kind", kind), ("s.source", source)):
            if val:
                q, args = q + f" AND {col} = ?", args + [val]
        with self._connect() as con:
            return [dict(r) for r in con.execute(q + " ORDER BY a.session, a.position", args)]


def _f(x):
    return None if x is None else float(x)


def _session_dict(r) -> dict:
    d = dict(r)
    d["meta"] = json.loads(d.get("meta") or "{}")
    return d


def rater_label(session: dict) -> str:
    """A rater's display name: the name given, else 'anonymous-' + the session id."""
    return session["rater"] or f"anonymous-{session['id']}"
