"""Results of trainer and review sessions in SQLite (stdlib sqlite3), one file in a results folder.

Concurrency: WAL journal (readers never block the writer), busy_timeout so a writer waits for
another instead of failing, a fresh connection per call (safe from any thread or process; sqlite3
connections must not be shared across threads), and each write in its own BEGIN IMMEDIATE
transaction. A repeated answer for the same (session, position), e.g. a double click, is ignored.

Faults (a classroom server must keep its answers):
- the folder cannot be made or the database cannot be opened: ResultsDBError (one line), so the app can
  start without its teaching tabs and say why;
- a corrupt database (garbage, a truncated copy, "file is not a database", a failed quick_check) is moved
  aside as results.sqlite.corrupt-<UTC time> (with its -wal/-shm) and a new one is started; `notice`
  says so and it is printed to stderr;
- a write that fails (read-only folder, full disk, lost mount, corrupt file) keeps the answer: in memory
  and in results.journal.jsonl when that can be written; `unsaved` holds them, `last_error` says why,
  and every later call (and flush()) retries them; a journal left by an earlier run is replayed on open.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from echogen.teaching.media import random_id

DB_NAME = "results.sqlite"
JOURNAL_NAME = "results.journal.jsonl"
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


class ResultsDBError(ValueError):
    """The results database cannot be used for this call; the message is one line, without server paths."""


def _corrupt(e: Exception) -> bool:
    """A DatabaseError that means the file itself is bad (not a lock, permission or I/O problem)."""
    msg = str(e).lower()
    return isinstance(e, sqlite3.DatabaseError) and (
        "not a database" in msg or "malformed" in msg or "corrupt" in msg or
        (not isinstance(e, sqlite3.OperationalError) and "encrypted" in msg))


def _why(e: Exception) -> str:
    """sqlite's / the OS's reason in project words (no paths)."""
    msg = str(e).lower()
    if "readonly" in msg or "read-only" in msg or isinstance(e, PermissionError):
        return "the results folder or database is read-only"
    if "unable to open" in msg or isinstance(e, (FileNotFoundError, NotADirectoryError, FileExistsError,
                                                 IsADirectoryError)):
        return "the results database cannot be opened (missing, not a file, or no permission)"
    if "disk i/o" in msg or "full" in msg or isinstance(e, OSError):
        return "the results disk failed or is full"
    if "locked" in msg or "busy" in msg:
        return "the results database stayed locked by another writer"
    if _corrupt(e):
        return "the results database file is corrupt"
    return f"the results database failed ({type(e).__name__})"


class ResultsDB:
    """ResultsDB(results_dir): opens (creating if needed) RESULTS_DIR/results.sqlite."""

    def __init__(self, results_dir, timeout_s: float = 30.0, quiet: bool = False):
        self.dir = Path(results_dir)
        self.path = self.dir / DB_NAME
        self.journal = self.dir / JOURNAL_NAME
        self.timeout_s = float(timeout_s)
        self.notice = ""               # what happened when it was opened (a corrupt file moved aside, ...)
        self.last_error = ""           # why the last write failed ("" when the last write succeeded)
        self.unsaved: list[dict] = []  # answers kept but not yet in the database
        self.wal = False
        self._sessions: dict[str, dict] = {}   # sessions started by this process (to re-create after a fault)
        self._jlock = threading.Lock()
        self._quiet = quiet
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResultsDBError(f"results folder '{self.dir.name}' cannot be created: {_why(e)}") from None
        if self.path.exists() and not self.path.is_file():
            raise ResultsDBError(f"results database '{DB_NAME}' cannot be opened: it is not a file")
        try:
            self._open()
        except sqlite3.DatabaseError as e:
            if not _corrupt(e):
                raise ResultsDBError(f"results database '{DB_NAME}' cannot be used: {_why(e)}") from None
            self._recover(str(e))
        self._replay_journal()

    def _open(self) -> None:
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]   # persistent: stored in the file
            self.wal = str(mode).lower() == "wal"
            ver = con.execute("PRAGMA user_version").fetchone()[0]
            if ver > SCHEMA_VERSION:
                raise ResultsDBError(f"results database '{DB_NAME}': written by a newer EchoGen "
                                     f"(schema {ver} > {SCHEMA_VERSION})")
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            if str(check).lower() != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            with self._write(con):
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _say(self, msg: str) -> None:
        if not self._quiet:
            print(f"EchoGen results: {msg}", file=sys.stderr, flush=True)

    def _recover(self, reason: str) -> None:
        """Move a corrupt database (and its WAL/SHM) aside with a timestamp and start a new one, loudly."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{DB_NAME}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            for ext in ("-wal", "-shm"):
                side = self.path.with_name(DB_NAME + ext)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + ext))
            self._open()
        except (OSError, sqlite3.DatabaseError) as e:
            raise ResultsDBError(f"results database '{DB_NAME}' is corrupt and cannot be replaced: {_why(e)}") from None
        self.notice = (f"the results database was corrupt ({reason.splitlines()[0][:80]}); it was moved aside as "
                       f"'{aside.name}' and a new, empty one was started")
        self._say("WARNING: " + self.notice)

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
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        con.execute("COMMIT")

    def _read(self, fn):
        """Run a read; sqlite faults become one-line ResultsDBErrors."""
        try:
            with self._connect() as con:
                return fn(con)
        except sqlite3.DatabaseError as e:
            raise ResultsDBError(f"results cannot be read: {_why(e)}") from None

    # ---- sessions ----------------------------------------------------------------------------
    def start_session(self, kind: str, source: str, rater: str = "", source_path: str = "",
                      meta: dict | None = None) -> str:
        if kind not in KINDS:
            raise ValueError(f"session kind must be one of {KINDS}, got '{kind}'")
        sid = random_id(6)
        row = {"id": sid, "kind": kind, "rater": (rater or "").strip()[:100], "source": str(source),
               "source_path": str(source_path), "started": _now(), "meta": json.dumps(meta or {})}
        try:
            with self._connect() as con, self._write(con):
                self._insert_session(con, row)
        except sqlite3.DatabaseError as e:
            self.last_error = _why(e)
            raise ResultsDBError(f"cannot start a session: {self.last_error}") from None
        self._sessions[sid] = row
        self.flush()
        return sid

    @staticmethod
    def _insert_session(con, row: dict, ignore: bool = False) -> None:
        con.execute(f"INSERT {'OR IGNORE ' if ignore else ''}INTO sessions "
                    "(id, kind, rater, source, source_path, started, meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row["id"], row["kind"], row["rater"], row["source"], row["source_path"], row["started"],
                     row["meta"]))

    def session(self, sid: str) -> dict:
        try:
            with self._connect() as con:
                r = con.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
        except sqlite3.DatabaseError as e:
            if sid in self._sessions:        # started here: its answers are being kept, so is its record
                return _session_dict(self._sessions[sid])
            raise ResultsDBError(f"results cannot be read: {_why(e)}") from None
        if r is None:
            if sid in self._sessions:
                return _session_dict(self._sessions[sid])
            raise KeyError(f"no session '{sid}' in the results database")
        return _session_dict(r)

    def sessions(self, kind: str | None = None, source: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM sessions WHERE 1=1", []
        if kind:
            q, args = q + " AND kind = ?", args + [kind]
        if source:
            q, args = q + " AND source = ?", args + [source]
        return self._read(lambda con: [_session_dict(r) for r in con.execute(q + " ORDER BY started", args)])

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
        rec = {"session": session, "position": int(position), "case_id": str(case_id), "truth_ef": _f(truth_ef),
               "truth_category": truth_category, "truth_label": truth_label, "answer_ef": _f(answer_ef),
               "answer_category": answer_category, "answer_label": answer_label,
               "confidence": None if confidence is None else int(confidence), "comment": (comment or "")[:2000],
               "response_ms": None if response_ms is None else int(response_ms), "created": _now()}
        self.flush()
        try:
            return self._insert_answer(rec)
        except KeyError:
            raise
        except sqlite3.DatabaseError as e:   # kept, reported, retried: never dropped
            self._keep(rec, e)
            return True

    def _insert_answer(self, rec: dict) -> bool:
        for attempt in range(3):
            try:
                with self._connect() as con, self._write(con):
                    r = con.execute("SELECT rater FROM sessions WHERE id = ?", (rec["session"],)).fetchone()
                    if r is None and rec["session"] in self._sessions:   # lost with a corrupt file: re-create
                        self._insert_session(con, self._sessions[rec["session"]], ignore=True)
                        r = {"rater": self._sessions[rec["session"]]["rater"]}
                    if r is None:
                        raise KeyError(f"no session '{rec['session']}'")
                    cur = con.execute(
                        "INSERT OR IGNORE INTO answers (session, rater, position, case_id, truth_ef, "
                        "truth_category, truth_label, answer_ef, answer_category, answer_label, confidence, "
                        "comment, response_ms, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (rec["session"], r["rater"], rec["position"], rec["case_id"], rec["truth_ef"],
                         rec["truth_category"], rec["truth_label"], rec["answer_ef"], rec["answer_category"],
                         rec["answer_label"], rec["confidence"], rec["comment"], rec["response_ms"], rec["created"]))
                    return cur.rowcount == 1
            except sqlite3.OperationalError as e:   # "database is locked" past busy_timeout: try again
                if "locked" not in str(e) or attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return False

    # ---- faults: keep, journal, retry --------------------------------------------------------
    def _keep(self, rec: dict, e: Exception) -> None:
        self.last_error = _why(e)
        with self._jlock:
            self.unsaved.append(rec)
            try:
                with open(self.journal, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"answer": rec, "session": self._sessions.get(rec["session"])}) + "\n")
                where = "kept in the journal"
            except OSError:
                where = "kept in memory only (the journal cannot be written either)"
        self._say(f"an answer could not be written ({self.last_error}); {where}; it will be retried")
        if _corrupt(e):
            try:
                self._recover(str(e))
            except ResultsDBError as err:
                self._say(str(err))

    def unsaved_message(self) -> str:
        """One line for the user when answers are waiting to be written, else ''."""
        if not self.unsaved:
            return ""
        n = len(self.unsaved)
        return (f"{n} answer{'s are' if n != 1 else ' is'} kept but not yet saved ({self.last_error}); "
                "saving is retried with every answer — tell the organiser")

    def flush(self) -> int:
        """Write kept answers now; returns how many are still unsaved."""
        with self._jlock:
            pending, self.unsaved = self.unsaved, []
        left = []
        for rec in pending:
            try:
                self._insert_answer(rec)
            except KeyError:
                continue                      # its session is gone for good: nothing to attach it to
            except sqlite3.DatabaseError as e:
                self.last_error = _why(e)
                left.append(rec)
        with self._jlock:
            self.unsaved = left + self.unsaved
            if pending and not self.unsaved:
                self.last_error = ""
                try:
                    self.journal.unlink(missing_ok=True)
                except OSError:
                    pass
            return len(self.unsaved)

    def _replay_journal(self) -> None:
        """Answers journaled by an earlier run (the database was not writable then) are written now."""
        try:
            lines = self.journal.read_text(encoding="utf-8").splitlines() if self.journal.is_file() else []
        except OSError:
            return
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if item.get("session"):
                self._sessions.setdefault(item["session"]["id"], item["session"])
            self.unsaved.append(item["answer"])
        if lines:
            n = len(self.unsaved)
            left = self.flush()
            self._say(f"replayed {n} journaled answer(s); {left} still unsaved")

    def answers(self, session: str | None = None, kind: str | None = None, source: str | None = None) -> list[dict]:
        q = ("SELECT a.* FROM answers a JOIN sessions s ON s.id = a.session WHERE 1=1")
        args = []
        for col, val in (("a.session", session), ("s.kind", kind), ("s.source", source)):
            if val:
                q, args = q + f" AND {col} = ?", args + [val]
        return self._read(lambda con: [dict(r) for r in con.execute(q + " ORDER BY a.session, a.position", args)])


def _f(x):
    return None if x is None else float(x)


def _session_dict(r) -> dict:
    d = dict(r)
    d["meta"] = json.loads(d.get("meta") or "{}")
    return d


def rater_label(session: dict) -> str:
    """A rater's display name: the name given, else the login ('login bob'), else 'anonymous-' + the session id."""
    user = (session.get("meta") or {}).get("user")
    return session["rater"] or (f"login {user}" if user else f"anonymous-{session['id']}")
