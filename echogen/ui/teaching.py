"""The app's teaching tabs: "EF trainer" and "Blinded review" for participants, "Organiser" for the
teacher (docs/TEACHING.md).

    from echogen.ui.teaching import TeachingState, add_teaching_tabs
    state = TeachingState(results_dir, engines, weight_choices, organisers={"teacher"})
    with gr.Tabs():
        ...                      # the app's own tabs
        add_teaching_tabs(state) # three more

Roles. Participants (trainees, raters) log in with the app's --auth credentials; the organiser with
--organiser credentials. Building pools and review sets, summaries, CSV exports, session exclusion and
anything holding a truth are organiser-only, in the UI (the Organiser tab is shown to organisers only)
and in the API: every organiser endpoint checks the request's login (gr.Request.username) itself. With
no login at all (a local single-user app on 127.0.0.1) the local user is the organiser.

Files. Pools, review sets, review keys and the database live under RESULTS, which is never served:
a case is shown through a copy under a random name in a media folder (so no URL names a pool, a case id
or a file from which an answer could be read), and pickers carry bare names, never server paths.
Participants get feedback as the session's rules allow: the trainer's truth after each answer; nothing
in a review (the organiser reports the study).
"""

import os
import shutil
import tempfile
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from echogen.teaching import sessions as T
from echogen.teaching import stats
from echogen.teaching.db import ANSWER_COLUMNS, ResultsDB
from echogen.teaching.gate import DEFAULT_TOLERANCE
from echogen.teaching.media import BuildCancelled, random_id
from echogen.teaching.pool import PoolLimits, load_pool, rejected_summary
from echogen.teaching.review import load_review_set
from echogen.teaching.summary import plural, review_rows, summarise_review, summarise_trainer, trainer_rows
from echogen.ui import guard as G

CASE_BYTES = 400_000            # disk estimate per case (a 112x112 loop is ~50-200 kB) for the budget check
MEDIA_MAX_AGE_S = 3 * 3600


class NotAllowed(PermissionError):
    """An organiser-only action asked for by someone else."""


@dataclass
class TeachingState:
    results_dir: Path
    engines: object = None                 # echogen.ui.support.Engines (for building pools)
    weight_choices: list = field(default_factory=list)
    organisers: set = field(default_factory=set)     # login names of organisers
    local_organiser: bool = False          # no login configured: the (local) user is the organiser
    data_root: Path | None = None          # EchoNet-format datasets an organiser may draw real clips from
    limits: PoolLimits = field(default_factory=PoolLimits)
    disk_budget_mb: float = 5000.0         # RESULTS may not grow past this
    tolerance: float = DEFAULT_TOLERANCE   # pool quality gate (EF points)
    jobs: dict = field(default_factory=dict)
    export_root: Path | None = None        # CSV downloads (the app: its private temp folder, pruned and removed)
    media_root: Path | None = None         # where the media folder is made (the app: its private temp folder)

    def __post_init__(self):
        self.results_dir = Path(self.results_dir)
        for d in (self.pools_root, self.reviews_root, self.keys_root):
            d.mkdir(parents=True, exist_ok=True)
        self.db = ResultsDB(self.results_dir)
        self.organisers = set(self.organisers or ())
        self.data_root = Path(self.data_root).resolve() if self.data_root else None
        self.media_dir = Path(tempfile.mkdtemp(prefix="echogen-media-", dir=self.media_root))
        # removed by close(), when this state is collected, or at exit (links to case videos: never left behind)
        self._drop_media = weakref.finalize(self, shutil.rmtree, str(self.media_dir), True)
        self._lock = threading.Lock()
        self._disk = (0.0, 0)             # (checked at, bytes)

    pools_root = property(lambda self: self.results_dir / T.POOLS)
    reviews_root = property(lambda self: self.results_dir / T.REVIEWS)
    keys_root = property(lambda self: self.results_dir / T.KEYS)

    def key_path(self, review_dir) -> Path:
        return T.review_key_path(self.results_dir, Path(review_dir).name)

    def served_paths(self) -> list[str]:
        """Folders the browser may fetch files from by path: none (cases are shown through media copies)."""
        return []

    # ---- roles -----------------------------------------------------------------------------------
    def is_organiser(self, request) -> bool:
        user = getattr(request, "username", None) if request is not None else None
        if user:
            return user in self.organisers
        return self.local_organiser and not self.organisers

    def require_organiser(self, request) -> None:
        if not self.is_organiser(request):
            raise NotAllowed("organiser only: log in with the organiser's credentials")

    def close(self) -> None:
        """Remove the media folder (the app calls this when it stops)."""
        self._drop_media()

    # ---- media -----------------------------------------------------------------------------------
    def media(self, path) -> str:
        """A copy of a case file under a random name in the media folder (hard link when possible): what
        the browser is given, so no URL names the pool, the case or anything else on the server."""
        self._clean_media()
        dst = self.media_dir / f"{random_id(12)}{Path(path).suffix}"
        try:
            os.link(path, dst)
        except OSError:
            shutil.copyfile(path, dst)
        return str(dst)

    def _clean_media(self) -> None:
        now = time.time()
        for p in self.media_dir.glob("*"):
            try:
                if now - p.stat().st_mtime > MEDIA_MAX_AGE_S:
                    p.unlink()
            except OSError:
                pass

    # ---- pickers ---------------------------------------------------------------------------------
    def pool_names(self, ready_only: bool = True) -> list[str]:
        return [p.name for p in T.find_pools(self.pools_root, ready_only=ready_only) if p != self.pools_root]

    def review_names(self) -> list[str]:
        return [p.name for p in T.find_review_sets(self.reviews_root)
                if p != self.reviews_root and self.key_path(p).is_file()]

    def datasets(self) -> list[str]:
        """EchoNet-format folders (FileList.csv) inside --data-root, as names relative to it."""
        if not self.data_root or not self.data_root.is_dir():
            return []
        hits = [p.parent for p in self.data_root.glob("*/FileList.csv")] + \
            [p.parent for p in self.data_root.glob("*/*/FileList.csv")]
        if (self.data_root / "FileList.csv").is_file():
            hits.insert(0, self.data_root)
        return sorted({str(h.relative_to(self.data_root)) for h in hits})

    def dataset_path(self, name) -> Path:
        """A dataset picked by name; only names datasets() lists (no path is ever taken from a client)."""
        if not name or str(name) not in self.datasets():
            raise ValueError("choose one of the listed datasets")
        p = (self.data_root / str(name)).resolve()
        if not p.is_relative_to(self.data_root):
            raise ValueError("choose one of the listed datasets")
        return p

    def check_pool(self, name) -> None:
        """ValueError with the participant's message unless `name` is a listed pool."""
        if not name:
            raise ValueError("Choose a pool first." if self.pool_names() else
                             "No pool yet: the organiser builds one in the Organiser tab first.")
        if str(name) not in self.pool_names():
            raise ValueError("That pool is not available.")

    def check_review(self, name) -> None:
        """ValueError with the rater's message unless `name` is a listed review set."""
        if not name:
            raise ValueError("Choose a review set first." if self.review_names() else
                             "No review set yet: the organiser builds one in the Organiser tab first.")
        if str(name) not in self.review_names():
            raise ValueError("That review set is not available.")

    def pool(self, name):
        self.check_pool(name)
        return load_pool(T.by_name(self.pools_root, name))

    def review(self, name, need_key: bool = True):
        self.check_review(name)
        d = T.by_name(self.reviews_root, name)
        return load_review_set(d, key_path=self.key_path(d), need_key=need_key)

    # ---- disk ------------------------------------------------------------------------------------
    def usage_bytes(self, max_age_s: float = 2.0) -> int:
        t, b = self._disk
        if time.monotonic() - t > max_age_s:
            b = sum(f.stat().st_size for f in self.results_dir.rglob("*") if f.is_file())
            self._disk = (time.monotonic(), b)
        return b

    def check_disk(self, extra_bytes: int = 0) -> None:
        budget = self.disk_budget_mb * 1e6
        if self.usage_bytes() + extra_bytes > budget:
            raise ValueError(f"disk budget: the teaching folder would pass {self.disk_budget_mb:g} MB "
                             f"(now {self.usage_bytes() / 1e6:.0f} MB); delete old pools or raise --teaching-disk-mb")

    # browsers see folders relative to the results folder and bundles by name: no absolute server path
    def under(self, value) -> Path:
        """A pool/review-set folder sent by a browser (relative to the results folder) -> its path."""
        p = (self.results_dir / str(value or "")).resolve()
        if self.results_dir.resolve() not in p.parents:
            raise ValueError(f"'{Path(str(value or '')).name}' is not a pool or review set of this server")
        return p

    def bundle(self, label) -> str:
        for c in self.weight_choices:
            if label in (c, Path(c).name):
                return c
        raise ValueError(f"unknown weights bundle '{Path(str(label)).name}'")


class _LockedCascade:
    """The engine's cascade, holding the engine's lock for one sample call at a time only, so
    interactive generations interleave with a pool being built."""

    def __init__(self, engine):
        self._e = engine
        self.config, self.source = engine.cascade.config, engine.cascade.source

    def sample(self, *a, **k):
        with self._e.lock:
            return self._e.cascade.sample(*a, **k)

    def conditioning_ef(self, *a, **k):
        """The EFs the networks are given (the bundle's EF calibration; reads no network, needs no lock)."""
        return self._e.cascade.conditioning_ef(*a, **k)


# ---------------------------------------------------------------------------------------- actions
NAME_MAX = 60


def _safe_name(name: str) -> str:
    """The folder name of a new pool / review set: as given when it is 1-60 letters, digits, '-' or '_' (never a
    path), a time stamp when empty; anything else is refused with the rule, not silently rewritten."""
    name = (name or "").strip()
    if not name:
        return time.strftime("%Y%m%d-%H%M%S")
    if len(name) > NAME_MAX or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name) or \
            name[0] in "-_":
        raise ValueError(f"name: use 1-{NAME_MAX} letters, digits, '-' or '_' (starting with a letter or digit), "
                         f"got {name[:40]!r}{'…' if len(name) > 40 else ''}")
    return name


def _weights(state: TeachingState, weights) -> str:
    """A weights choice by its shown name (or index), never a client-given path."""
    for c in state.weight_choices:
        if weights in (c, Path(c).name):
            return c
    if state.weight_choices and not weights:
        return state.weight_choices[0]
    raise ValueError("choose one of the listed weights")


def start_build(state: TeachingState, kind: str, name: str, weights: str, frames=(), efs: str = "20, 35, 50, 65, 80",
                per_frame=1, dataset: str = "", split: str = "TEST", real_n=0, steps: str = "", uploads=(),
                tolerance=None, allow_non_a4c: bool = False) -> str:
    """Start building a pool / review set in a background thread; returns the job id. One build at a
    time per server; sizes bounded by state.limits; the disk budget is checked before and during."""
    from echogen.diffusion.stage import parse_per_stage
    from echogen.ef import parse_efs

    with state._lock:
        running = [j for j in state.jobs.values() if not j["done"]]
        if running:
            raise ValueError("a build is already running on this server; wait for it or cancel it")
        out = (state.reviews_root if kind == "review" else state.pools_root) / _safe_name(name)
        if kind != "review" and _empty_pool(out):   # a pool no case passed was never offered and no session
            _remove(state, out)                      # refers to it: its name is free again
        if out.exists() or state.key_path(out).exists():
            raise ValueError(f"'{out.name}' already exists; choose another name")
        engine = state.engines.get(_weights(state, weights))
        kw = {"steps": parse_per_stage(steps, engine.cascade.config.stage_names, int, "steps")} if steps else {}
        for v in kw.get("steps", {}).values():
            G.check_steps(v)                                         # the app's bound, as for a generation
        real_n = int(real_n or 0)
        per_frame = int(per_frame or 1)
        frames = [getattr(f, "name", f) for f in (frames or [])]
        uploads = [getattr(f, "name", f) for f in (uploads or [])]
        tol = state.tolerance if tolerance in (None, "") else float(tolerance)
        if not 0 < tol <= 50:
            raise ValueError("tolerance must be 0-50 EF points")
        real = state.dataset_path(dataset) if dataset else None
        if kind == "review":
            if not (real or uploads):
                raise ValueError("a review set needs real clips: pick a dataset or upload clips/DICOMs")
            n = len(uploads) if uploads else real_n
            if n < 1:
                raise ValueError("give the number of real clips (pairs)")
            state.limits.check(0, 0, 1, n)
            if uploads:      # uploaded clips / DICOMs must look like apical-4-chamber echoes (organiser override)
                from echogen.teaching.pool import check_source_frames
                check_source_frames(uploads, _weights(state, weights), allow=bool(allow_non_a4c))
            ef_list = []
            estimate = 2 * n
        else:
            if not frames:
                raise ValueError("upload at least one source frame")
            ef_list = parse_efs(efs)
            if real_n and not real:
                raise ValueError("pick a dataset for the real clips (or set their number to 0)")
            state.limits.check(len(frames), len(ef_list), per_frame, real_n if real else 0)
            estimate = len(frames) * len(ef_list) * per_frame + (real_n if real else 0)
            # frames that do not look like apical-4-chamber echoes are refused unless the organiser overrides
            from echogen.teaching.pool import check_source_frames
            check_source_frames(frames, _weights(state, weights), allow=bool(allow_non_a4c))
        state.check_disk(estimate * CASE_BYTES)
        cancel = threading.Event()
        job = {"fraction": 0.0, "message": "queued", "done": False, "error": None, "result": None,
               "name": out.name, "kind": kind, "cancel": cancel, "started": time.time()}
        jid = random_id(6)
        state.jobs[jid] = job

    def progress(frac, msg):
        job["fraction"], job["message"] = max(job["fraction"], float(frac)), msg

    last_disk = [0.0]

    def guard():
        if cancel.is_set():
            raise BuildCancelled("cancelled by the organiser")
        if time.monotonic() - last_disk[0] > 2.0:
            last_disk[0] = time.monotonic()
            state.check_disk()

    def run():
        try:
            casc = _LockedCascade(engine)
            if kind == "review":
                from echogen.teaching.review import build_review_set
                rs = build_review_set(casc, real, split, real_n, out, key_path=state.key_path(out), progress=progress,
                                      sample_kwargs=kw, uploads=uploads or None, regressor=engine.regressor,
                                      guard=guard)
                job["result"] = f"review set '{out.name}': {len(rs.cases)} clips" + \
                    (f" ({rs.meta['dropped']} pairs dropped: no whole heart cycle)" if rs.meta.get("dropped") else "")
            else:
                from echogen.teaching.pool import build_pool
                rc = {"root": real, "split": split, "n": real_n} if real and real_n else None
                pool = build_pool(casc, engine.regressor, frames, ef_list, per_frame=per_frame, out_dir=out,
                                  progress=progress, real_clips=rc, sample_kwargs=kw, tolerance=tol, guard=guard)
                r = rejected_summary(pool)
                job["result"] = (f"pool '{out.name}': {plural(len(pool.cases), 'case')}; {r['text']} (the gate: "
                                 f"EF read within ±{tol:g} of the requested EF)")
                if not pool.cases:
                    job["result"] += (" — no case passed, so the pool is empty and not offered to trainees (build "
                                      "again under the same name, e.g. with more repeats or a wider gate)")
        except BuildCancelled:
            _remove(state, out)
            job["error"] = "cancelled; nothing was kept"
        except Exception as e:  # shown to the organiser; the app keeps serving
            _remove(state, out)
            job["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            traceback.print_exc()
        finally:
            job["fraction"] = 1.0 if not job["error"] else job["fraction"]
            job["done"] = True

    threading.Thread(target=run, daemon=True, name=f"teaching-build-{jid}").start()
    return jid


def _empty_pool(out: Path) -> bool:
    """A finished pool folder with no case (every loop rejected by the gate). Not one still building: a `pool`
    command may be writing it from another process."""
    try:
        pool = load_pool(out) if out.is_dir() else None
        return pool is not None and pool.meta.get("status", "ready") == "ready" and not pool.cases
    except (OSError, ValueError, KeyError):
        return False


def _remove(state: TeachingState, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    state.key_path(out).unlink(missing_ok=True)


def cancel_build(state: TeachingState) -> str:
    running = [j for j in state.jobs.values() if not j["done"]]
    for j in running:
        j["cancel"].set()
    return "cancelling…" if running else "no build is running"


def job_status(state: TeachingState, jid=None) -> str:
    """The latest (or given) job, as one line for the organiser."""
    if not state.jobs:
        return ""
    j = state.jobs.get(jid) if jid in state.jobs else list(state.jobs.values())[-1]
    if j["error"]:
        return f"**Stopped ({j['name']}):** {j['error']}"
    if j["done"]:
        return f"**Done:** {j['result']}"
    return f"Building {j['name']}… {j['fraction']:.0%} — {j['message']}"


def _csv(rows, prefix: str, excluded, root) -> str:
    """A CSV download in a fresh private folder under `root` (the app: its exports folder, pruned and removed;
    None: the system temp folder, for library use)."""
    path = Path(tempfile.mkdtemp(prefix="echogen-csv-", dir=root)) / f"{prefix}.csv"
    rows = [{**r, "excluded": r["session"] in excluded} for r in rows]
    return str(stats.write_csv(path, rows, ANSWER_COLUMNS + ["excluded"]))


def session_summary(state: TeachingState, sid: str):
    """A trainee's own session: (markdown, table rows, Bland-Altman Figure or None)."""
    s = state.db.session(sid)
    rows = state.db.answers(session=sid)
    summ = summarise_trainer(rows, s["meta"].get("categories"))
    skipped = len(s["meta"].get("skipped", []))
    md = (f"**Session finished:** {len(rows)} answered, {skipped} skipped"
          + (f" · EF mean absolute error **{summ['mae']:.1f} %**, bias {summ['bias']:+.1f} %" if summ.get("n_ef") else ""))
    fig = None
    ef_rows = [r for r in rows if r["answer_ef"] is not None]
    if len(ef_rows) >= 2:
        fig = stats.plot_bland_altman([r["truth_ef"] for r in ef_rows], [r["answer_ef"] for r in ef_rows])
    return md, trainer_rows(summ)[1], fig


def trainer_results(state: TeachingState, pool_name: str):
    """Organiser: every included trainer session on a pool: (markdown, rows, Figure, CSV)."""
    pool = load_pool(T.by_name(state.pools_root, pool_name))
    ss = state.db.sessions(kind="trainer", source=pool.id)
    excluded = T.excluded_ids(ss)
    rows_all = state.db.answers(kind="trainer", source=pool.id)
    rows = [r for r in rows_all if r["session"] not in excluded]
    summ = summarise_trainer(rows)
    ef_rows = [r for r in rows if r["answer_ef"] is not None]
    fig = stats.plot_bland_altman([r["truth_ef"] for r in ef_rows], [r["answer_ef"] for r in ef_rows],
                                  title="Bland-Altman: trainees' EF - true EF") if len(ef_rows) >= 2 else None
    md = (f"**Pool {pool_name}:** {plural(len(ss) - len(excluded), 'session')} ({len(excluded)} excluded), "
          f"{plural(len(rows), 'answer')}")
    csv = _csv(rows_all, f"trainer-{pool_name}", excluded, state.export_root)
    return md, trainer_rows(summ)[1], fig, csv


def review_summary(state: TeachingState, review_name: str):
    """Organiser: (markdown, rows, CSV) of a review set's included sessions."""
    rs = state.review(review_name, need_key=False)
    ss = state.db.sessions(kind="review", source=rs.id)
    excluded = T.excluded_ids(ss)
    rows_all = state.db.answers(kind="review", source=rs.id)
    rows = [r for r in rows_all if r["session"] not in excluded]
    summ = summarise_review(rows, T.included(ss))
    md = (f"**Review set {review_name}:** {plural(len(ss) - len(excluded), 'rater')} ({len(excluded)} excluded), "
          f"{plural(len(rows), 'answer')}")
    if summ.get("n"):
        md += (f" · {summ['correct']}/{summ['n']} correct ({summ['accuracy']:.1%}), exact binomial test vs 50 %: "
               f"p = {summ['p_value']:.4g}")
    return md, review_rows(summ)[1], _csv(rows_all, f"review-{review_name}", excluded, state.export_root)


def followed(now: tuple, seen: tuple, current):
    """A name list's dropdown after a Timer tick: (new seen, update). Unchanged names: skip both; new names:
    new choices, and when nothing is picked yet (a pool built after the page opened) the first one is picked."""
    import gradio as gr

    if now == seen:
        return gr.skip(), gr.skip()
    if not current and now:
        return now, gr.update(choices=list(now), value=now[0])
    return now, gr.update(choices=list(now))


def sessions_table(state: TeachingState) -> list[list]:
    names = T.source_names(state.results_dir)
    counts = {}
    for a in state.db.answers():
        counts[a["session"]] = counts.get(a["session"], 0) + 1
    return [[s["id"], s["kind"], names.get(s["source"], s["source"]), s["rater"], s["meta"].get("user", ""),
             s["started"][:19], counts.get(s["id"], 0), len(s["meta"].get("skipped", [])),
             "excluded" if s["meta"].get("excluded") else ""] for s in reversed(state.db.sessions())]


def pool_table(state: TeachingState, pool_name: str):
    pool = load_pool(T.by_name(state.pools_root, pool_name))
    r = rejected_summary(pool)
    n_real = sum(c["kind"] == "real" for c in pool.cases)
    md = (f"**{pool_name}**: {plural(len(pool.cases), 'case')} ({n_real} real) · "
          f"quality gate ±{pool.meta.get('tolerance')} EF points with {', '.join(pool.meta.get('readers') or []) or '-'}"
          f" · **{r['text']}**"
          f" · status {pool.meta.get('status', 'ready')}")
    rows = [[c["kind"], c.get("ef_requested"), c["ef"], c.get("ef_source"),
             ", ".join(f"{k} {v}" for k, v in (c.get("ef_readings") or {}).items()), c.get("frames")]
            for c in pool.cases]
    rows += [["rejected", x.get("requested"), None, x.get("kind"), x.get("reason", ""), None]
             for x in pool.meta.get("rejected", [])]
    return md, rows


# --------------------------------------------------------------------------------------------- UI
def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def add_teaching_tabs(state: TeachingState, concurrency_limit: int = 8) -> None:
    """Add the teaching tabs inside the caller's `with gr.Blocks(): with gr.Tabs():` context."""
    import gradio as gr
    from gradio.context import Context

    demo = Context.root_block
    schemes = list(stats.SCHEMES)

    def err(e):
        raise gr.Error(str(e).splitlines()[0] if str(e) else type(e).__name__, duration=10, print_exception=False) from None

    def org(request):
        if not state.is_organiser(request):
            err("Organiser only: log in with the organiser's credentials.")

    def user_of(request):
        return (getattr(request, "username", None) or "") if request is not None else ""

    # ---- EF trainer --------------------------------------------------------------------------
    def t_show(st, note=""):
        """Outputs for the current case: state, video, status, feedback, EF box, category, summary, table, plot."""
        i = st["pos"]
        if i >= len(st["cases"]):
            md, rows, fig = session_summary(state, st["sid"])
            return (st, None, f"Session finished ({plural(len(st['cases']), 'case')}).", "", None, None, md,
                    gr.update(value=rows, visible=True), gr.update(value=fig, visible=fig is not None))
        case = st["pool"].case(st["cases"][i])
        st["shown"], st["answered"] = _now_ms(), False
        status = f"Case {i + 1} of {len(st['cases'])}: estimate the EF, then Submit (or Skip)."
        if note:
            status += f"  \n{note}"
        return (st, state.media(st["pool"].path(case)), status, "", None, None, "",
                gr.update(value=None, visible=False), gr.update(value=None, visible=False))

    def t_start(name, pool_name, n, scheme, st, request: gr.Request):
        try:
            pool = state.pool(pool_name)
            n = int(n or 10)
            sid, cases = T.start_trainer(state.db, pool, n, rater=name or "", categories=scheme,
                                         user=user_of(request))
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)
        st = {"sid": sid, "cases": cases, "pos": 0, "pool": pool}
        names = [c.name for c in stats.parse_categories(scheme)]
        out = list(t_show(st, T.repeat_note(len(pool.cases), n)))
        out[5] = gr.update(choices=names, value=None)
        return tuple(out)

    def _current(st):
        if not st or st["pos"] >= len(st["cases"]):
            err("Start a session first.")

    def t_answer(ef, category, st):
        _current(st)
        if st.get("answered"):
            err("This case is answered: press Next case.")
        if ef is None and not category:
            err("Give your EF estimate and/or a category (or press Skip).")
        try:
            fb = T.record_trainer_answer(state.db, st["sid"], st["pos"], st["pool"], st["cases"][st["pos"]],
                                         answer_ef=None if ef is None else float(ef), answer_category=category or None,
                                         response_ms=_now_ms() - st.get("shown", _now_ms()))
        except (ValueError, KeyError) as e:
            err(e)
        st["answered"] = True
        # one decimal: the category and the error are of this value (40.2 % is "mildly reduced", not "40 %")
        lines = [f"**True EF {fb['true_ef']:.1f} %** ({fb['true_category']})"]
        if fb["error"] is not None:
            lines.append(f"your error {fb['error']:+.1f} %")
        if fb["category_correct"] is not None:
            lines.append("category ✔" if fb["category_correct"] else f"category ✘ (should be {fb['true_category']})")
        if fb["kind"] == "real":
            lines.append("a real clip (EF measured)")
        else:
            how = " and ".join(f"{k} {v:.1f} %" for k, v in fb["readings"].items() if isinstance(v, (int, float)))
            lines.append(f"a generated loop asked for {fb['requested_ef']:.0f} %" +
                         (f"; read back by {how}" if how and fb["ef_source"] == "verified" else ""))
        if state.db.unsaved:                  # kept and retried, never dropped: say so
            gr.Warning(state.db.unsaved_message())
        return st, " · ".join(lines)

    def t_next(st):
        _current(st)
        if not st.get("answered"):
            err("Answer this case (EF and/or category) or press Skip.")
        st["pos"] += 1
        return t_show(st)

    def t_skip(st):
        _current(st)
        if st.get("answered"):
            err("This case is answered: press Next case.")
        T.skip_trainer_case(state.db, st["sid"], st["pos"], st["cases"][st["pos"]])
        st["pos"] += 1
        return t_show(st, "Skipped (recorded as skipped).")

    def precheck(check):
        """A UI-only first step of a Start button: check's message on the status line alone (an error raised by the
        start handler itself would flag every one of its outputs, video and answer boxes included, as failed)."""
        def run(name):
            try:
                check(name)
            except ValueError as e:
                err(e)
            return gr.skip()
        return run

    def follow(names, dropdown, initial) -> None:
        """Keep `dropdown`'s choices equal to names() without a reload (a pool or set built meanwhile appears).
        Called inside the tab: a Timer or State placed directly in gr.Tabs makes Gradio 6 draw a second button
        for the next tab once it is clicked, and a Timer ticks only while its tab has been shown."""
        def tick(seen, current):
            return followed(tuple(names()), seen, current)
        seen = gr.State(tuple(initial))
        gr.Timer(2.0).tick(tick, [seen, dropdown], [seen, dropdown], api_name=False, show_progress="hidden",
                           queue=False)

    pools0, sets0 = state.pool_names(), state.review_names()
    with gr.Tab("EF trainer", id="teach-trainer"):
        t_state = gr.State(None)
        with gr.Row():
            t_name = gr.Textbox(label="Your name (optional for practice)", elem_id="trainer-name")
            t_pool = gr.Dropdown(pools0, value=pools0[0] if pools0 else None, label="Pool", elem_id="trainer-pool",
                                 allow_custom_value=True, info="pools are built by the organiser (Organiser tab)")
            t_n = gr.Number(value=10, precision=0, minimum=1, maximum=500, label="Cases", elem_id="trainer-n")
            t_scheme = gr.Dropdown(schemes, value=stats.DEFAULT_SCHEME, label="EF categories",
                                   info="esc2021: 2021 ESC HF guideline; ase2015: ASE/EACVI chamber quantification")
        t_go = gr.Button("Start session", variant="primary", elem_id="trainer-start")
        t_status = gr.Markdown(elem_id="trainer-status")
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("**Case loop** (one heart cycle, repeating)", elem_classes="eg-small")
                t_video = gr.Video(show_label=False, autoplay=True, loop=True, interactive=False, height=320,
                                   elem_id="trainer-video", buttons=[])
            with gr.Column():
                t_ef = gr.Number(value=None, minimum=0, maximum=100, precision=0, label="Your EF estimate (%)",
                                 info="Enter submits", elem_id="trainer-ef")
                t_cat = gr.Radio([c.name for c in stats.parse_categories()], value=None, label="Category",
                                 elem_id="trainer-cat")
                with gr.Row():
                    t_submit = gr.Button("Submit", variant="primary", elem_id="trainer-submit")
                    t_skipb = gr.Button("Skip", elem_id="trainer-skip")
                    t_nextb = gr.Button("Next case", elem_id="trainer-next")
                t_fb = gr.Markdown(elem_id="trainer-feedback")
        t_sum = gr.Markdown(elem_id="trainer-summary")
        with gr.Row():
            t_table = gr.Dataframe(headers=["measure", "value", "note"], interactive=False, visible=False,
                                   label="Your results", elem_id="trainer-table")
            t_plot = gr.Plot(label="Bland-Altman", visible=False, elem_id="trainer-plot")
        shown = [t_state, t_video, t_status, t_fb, t_ef, t_cat, t_sum, t_table, t_plot]
        conc = dict(concurrency_limit=concurrency_limit, concurrency_id="teaching")
        t_go.click(precheck(state.check_pool), [t_pool], [t_status], api_name=False, queue=False).success(
            t_start, [t_name, t_pool, t_n, t_scheme, t_state], shown, api_name="trainer_start", **conc)
        follow(state.pool_names, t_pool, pools0)
        t_submit.click(t_answer, [t_ef, t_cat, t_state], [t_state, t_fb], api_name="trainer_answer", **conc)
        t_ef.submit(t_answer, [t_ef, t_cat, t_state], [t_state, t_fb], api_name=False, **conc)
        t_skipb.click(t_skip, [t_state], shown, api_name="trainer_skip", **conc)
        t_nextb.click(t_next, [t_state], shown, api_name="trainer_next", **conc)

    # ---- Blinded review ----------------------------------------------------------------------
    def r_show(st):
        i = st["pos"]
        if i >= len(st["cases"]):
            return st, None, f"Finished: {len(st['cases'])} clips rated. Thank you — the organiser reports the study."
        st["shown"] = _now_ms()
        case = next(c for c in st["set"].cases if c["id"] == st["cases"][i])
        return st, state.media(st["set"].path(case)), f"Clip {i + 1} of {len(st['cases'])}: real or generated?"

    def r_start(name, review_name, st, request: gr.Request):
        try:
            rs = state.review(review_name)
            sid, order = T.start_review(state.db, rs, rater=name or "", user=user_of(request))
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)
        return r_show({"sid": sid, "cases": order, "pos": 0, "set": rs})

    def r_answer(label, confidence, comment, st):
        if not st or st["pos"] >= len(st["cases"]):
            err("Start a review first.")
        if label not in ("real", "generated"):
            err("Choose real or generated.")
        if confidence in (None, ""):
            err("Choose your confidence (1-5).")
        T.record_review_answer(state.db, st["sid"], st["pos"], st["set"], st["cases"][st["pos"]], label,
                               confidence=int(confidence), comment=comment or "",
                               response_ms=_now_ms() - st.get("shown", _now_ms()))
        if state.db.unsaved:
            gr.Warning(state.db.unsaved_message())
        st["pos"] += 1
        return r_show(st) + (None, None, "")

    with gr.Tab("Blinded review", id="teach-review"):
        r_state = gr.State(None)
        with gr.Row():
            r_name = gr.Textbox(label="Your name (required: answers are part of a study)", elem_id="review-name")
            r_set = gr.Dropdown(sets0, value=sets0[0] if sets0 else None, label="Review set", elem_id="review-set",
                                allow_custom_value=True, info="sets are built by the organiser (Organiser tab)")
            r_go = gr.Button("Start review", variant="primary", elem_id="review-start")
        r_status = gr.Markdown(elem_id="review-status")
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("**Clip** (one heart cycle, repeating)", elem_classes="eg-small")
                r_video = gr.Video(show_label=False, autoplay=True, loop=True, interactive=False, height=320,
                                   elem_id="review-video", buttons=[])
            with gr.Column():
                r_label = gr.Radio(["real", "generated"], value=None, label="This clip is", elem_id="review-label")
                r_conf = gr.Radio(["1", "2", "3", "4", "5"], value=None, label="Confidence (1 guess - 5 certain)",
                                  elem_id="review-confidence")
                r_comment = gr.Textbox(label="Comment (optional)", lines=2, elem_id="review-comment")
                r_submit = gr.Button("Submit and next", variant="primary", elem_id="review-submit")
        r_go.click(precheck(state.check_review), [r_set], [r_status], api_name=False, queue=False).success(
            r_start, [r_name, r_set, r_state], [r_state, r_video, r_status], api_name="review_start", **conc)
        follow(state.review_names, r_set, sets0)
        r_submit.click(r_answer, [r_label, r_conf, r_comment, r_state],
                       [r_state, r_video, r_status, r_label, r_conf, r_comment], api_name="review_answer", **conc)


    # ---- Organiser ---------------------------------------------------------------------------
    def o_build(kind, name, weights, frames, efs, per_frame, dataset, split, real_n, steps, tolerance, uploads,
                allow_non_a4c=False, request: gr.Request = None):
        org(request)
        try:
            start_build(state, "review" if kind.startswith("Blinded") else "pool", name, weights, frames,
                        efs, per_frame, dataset or "", split, real_n, (steps or "").strip(), uploads, tolerance,
                        allow_non_a4c=bool(allow_non_a4c))
        except (ValueError, KeyError, FileNotFoundError) as e:
            err(e)

    def o_status(request: gr.Request):
        org(request)
        return job_status(state)

    def o_tick(seen, request: gr.Request):
        """The build line, and the organiser's pickers when pools or sets came or went (no refresh needed)."""
        if not state.is_organiser(request):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        now = (tuple(state.pool_names(ready_only=False)), tuple(state.review_names()))
        if now == seen:
            return job_status(state), gr.skip(), gr.skip(), gr.skip()
        return job_status(state), now, gr.update(choices=list(now[0])), gr.update(choices=list(now[1]))

    def o_cancel(request: gr.Request):
        org(request)
        return cancel_build(state)

    def o_lists(request: gr.Request):
        org(request)
        all_pools = state.pool_names(ready_only=False)
        return (gr.update(choices=all_pools, value=all_pools[-1] if all_pools else None),
                gr.update(choices=state.review_names()), sessions_table(state), gr.update(choices=state.datasets()))

    def o_pool_details(name, request: gr.Request):
        org(request)
        try:
            return pool_table(state, name)
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)

    def o_trainer(name, request: gr.Request):
        org(request)
        try:
            md, rows, fig, csv = trainer_results(state, name)
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)
        return md, rows, fig, csv

    def o_review(name, request: gr.Request):
        org(request)
        try:
            return review_summary(state, name)
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)

    def o_exclude(sid, exclude, request: gr.Request):
        org(request)
        try:
            T.exclude_session(state.db, (sid or "").strip(), exclude)
        except KeyError:
            err("No such session.")
        return sessions_table(state)

    with gr.Tab("Organiser", id="teach-organiser"):
        o_locked = gr.Markdown("For the organiser (teacher) only: log in with the organiser's credentials.",
                               elem_id="org-locked")
        with gr.Column(visible=False, elem_id="org-panel") as o_tab:    # shown to organisers only (on page load)
            if state.db.notice:                    # e.g. a corrupt database was moved aside: loudly
                gr.Markdown(f"⚠️ {state.db.notice}", elem_id="results-notice")
            gr.Markdown("Build pools and review sets ahead of a session, follow and cancel a build, report results, "
                        "and exclude throwaway sessions. See docs/TEACHING.md §0.")
            with gr.Accordion("1 · Build a trainer pool or a blinded review set", open=True):
                with gr.Row():
                    b_kind = gr.Radio(["EF-trainer pool", "Blinded review set"], value="EF-trainer pool", label="Build",
                                      elem_id="build-kind")
                    b_name = gr.Textbox(label="Name", placeholder="e.g. ward-a-2026", elem_id="build-name")
                    b_weights = gr.Dropdown([Path(c).name for c in state.weight_choices],
                                            value=Path(state.weight_choices[0]).name if state.weight_choices else None,
                                            label="Weights bundle")
                b_frames = gr.File(label="Trainer pool: source frames (images, DICOM, clips), one anatomy each",
                                   file_count="multiple", elem_id="build-frames")
                b_allow = gr.Checkbox(False, label="Allow source frames that do not look like apical-4-chamber echoes "
                                      "(refused by default)", elem_id="build-allow-non-a4c")
                with gr.Row():
                    b_efs = gr.Textbox(value="20, 35, 50, 65, 80", label="EFs (%)", elem_id="build-efs")
                    b_per = gr.Number(value=1, precision=0, minimum=1, maximum=state.limits.per_frame,
                                      label="Repeats per frame and EF")
                    b_tol = gr.Number(value=state.tolerance, minimum=0.5, maximum=50, label="Quality gate: tolerance "
                                      "(EF points between the requested EF and the EF read from the loop)",
                                      elem_id="build-tolerance")
                    b_steps = gr.Textbox(value="", label="Sampler steps (blank: the preset's; or base=N,spatial=M)",
                                         elem_id="build-steps")
                gr.Markdown(f"Limits per build: {state.limits.frames} frames × {state.limits.efs} EFs × "
                            f"{state.limits.per_frame} repeats, {state.limits.cases} cases, {state.limits.real} real clips; "
                            f"one build at a time; the teaching folder may use {state.disk_budget_mb:g} MB.",
                            elem_classes="eg-small")
                with gr.Row():
                    b_data = gr.Dropdown([], value=None, label="Real clips: a dataset inside the data root "
                                         "(EchoNet format)" if state.data_root else "Real clips: no --data-root given",
                                         elem_id="build-dataset", allow_custom_value=True)
                    b_split = gr.Dropdown(["TEST", "VAL", "TRAIN", "ALL"], value="TEST", label="Split")
                    b_n = gr.Number(value=0, precision=0, minimum=0, label="Real clips (review: pairs)", elem_id="build-n")
                b_up = gr.File(label="Review set: or upload real clips / DICOMs (their EF is read by the regressor)",
                               file_count="multiple", elem_id="build-uploads")
                with gr.Row():
                    b_go = gr.Button("Build", variant="primary", elem_id="build-btn")
                    b_cancel = gr.Button("Cancel the build", variant="stop", elem_id="build-cancel")
                b_status = gr.Markdown(elem_id="build-status")
            with gr.Accordion("2 · Pools, results and sessions", open=True):
                o_refresh = gr.Button("Refresh lists", size="sm", elem_id="org-refresh")
                with gr.Row():
                    o_pool = gr.Dropdown([], label="Trainer pool", elem_id="org-pool", allow_custom_value=True)
                    o_pool_btn = gr.Button("Pool details", size="sm", elem_id="org-pool-btn")
                    o_tr_btn = gr.Button("Trainer results", size="sm", elem_id="org-trainer-btn")
                o_pool_md = gr.Markdown(elem_id="org-pool-md")
                o_pool_tab = gr.Dataframe(headers=["kind", "requested EF", "true EF (verified)", "source",
                                                   "readings / reason", "frames"], interactive=False,
                                          elem_id="org-pool-table")
                o_tr_md = gr.Markdown(elem_id="org-trainer-md")
                with gr.Row():
                    o_tr_tab = gr.Dataframe(headers=["measure", "value", "note"], interactive=False,
                                            elem_id="org-trainer-table")
                    o_tr_plot = gr.Plot(label="Bland-Altman (all included trainees)")
                o_tr_csv = gr.File(label="Trainer answers (CSV)", interactive=False, elem_id="org-trainer-csv")
                with gr.Row():
                    o_set = gr.Dropdown([], label="Review set", elem_id="org-set", allow_custom_value=True)
                    o_rv_btn = gr.Button("Review summary", size="sm", elem_id="review-summary-btn")
                o_rv_md = gr.Markdown(elem_id="review-summary")
                o_rv_tab = gr.Dataframe(headers=["rater", "answers", "correct", "accuracy", "p (binomial vs 50 %)",
                                                 "mean confidence"], interactive=False, elem_id="review-summary-table")
                o_rv_csv = gr.File(label="Review answers (CSV)", interactive=False, elem_id="review-csv")
                o_sessions = gr.Dataframe(headers=["session", "kind", "pool / set", "name", "login", "started", "answers",
                                                   "skipped", "excluded"], interactive=False, label="Sessions",
                                          elem_id="org-sessions")
                with gr.Row():
                    o_sid = gr.Textbox(label="Session id", elem_id="org-sid")
                    o_excl = gr.Checkbox(value=True, label="exclude (untick to include again)")
                    o_excl_btn = gr.Button("Apply", size="sm", elem_id="org-exclude-btn")
        b_go.click(o_build, [b_kind, b_name, b_weights, b_frames, b_efs, b_per, b_data, b_split, b_n, b_steps, b_tol,
                             b_up, b_allow], None, api_name="build_start").then(o_status, None, b_status, api_name=False)
        b_cancel.click(o_cancel, None, b_status, api_name="build_cancel", queue=False)
        o_check = gr.Button("status", visible=False)
        o_check.click(o_status, None, b_status, api_name="build_status", queue=False)
        o_timer = gr.Timer(1.0, active=False)
        o_seen = gr.State(None)
        o_timer.tick(o_tick, [o_seen], [b_status, o_seen, o_pool, o_set], api_name=False, show_progress="hidden",
                     queue=False)
        lists_out = [o_pool, o_set, o_sessions, b_data]
        o_refresh.click(o_lists, None, lists_out, api_name="organiser_lists")
        o_pool_btn.click(o_pool_details, [o_pool], [o_pool_md, o_pool_tab], api_name="pool_details")
        o_tr_btn.click(o_trainer, [o_pool], [o_tr_md, o_tr_tab, o_tr_plot, o_tr_csv], api_name="trainer_results")
        o_rv_btn.click(o_review, [o_set], [o_rv_md, o_rv_tab, o_rv_csv], api_name="review_summary")
        o_excl_btn.click(o_exclude, [o_sid, o_excl], o_sessions, api_name="session_exclude")

    def on_load(request: gr.Request):
        if not state.is_organiser(request):
            return gr.skip(), gr.skip(), gr.Timer(active=False), *([gr.skip()] * len(lists_out))
        return (gr.Column(visible=True), gr.Markdown(visible=False), gr.Timer(active=True), *o_lists(request))

    if demo is not None:
        demo.load(on_load, None, [o_tab, o_locked, o_timer] + lists_out, api_name=False, show_progress="hidden")


def build_teaching_demo(state: TeachingState):
    """The teaching tabs alone in a Blocks (for tests, screenshots, or a teaching-only server)."""
    import gradio as gr

    with gr.Blocks(title="EchoGen teaching") as demo:
        with gr.Tabs():
            add_teaching_tabs(state)
    return demo


def parse_credentials(items, what: str) -> dict:
    """['user:pass', ...] (each item may also hold several, comma-separated) -> {user: pass}."""
    out = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            user, sep, pw = part.partition(":")
            if not sep or not user or not pw:
                raise ValueError(f"{what} must be user:pass")
            out[user] = pw
    return out


def make_auth(participants: dict, organisers: dict):
    """A gradio auth function over both roles (organiser names must differ from participants')."""
    import hmac

    clash = set(participants) & set(organisers)
    if clash:
        raise ValueError(f"organiser and participant logins must differ ({', '.join(sorted(clash))})")
    table = {**participants, **organisers}

    def auth(user, password):
        pw = table.get(user)
        return pw is not None and hmac.compare_digest(str(pw).encode(), str(password or "").encode())

    return auth
