"""The app's teaching tabs: "Build pool", "EF trainer", "Blinded review" (docs/TEACHING.md).

    from echogen.ui.teaching import TeachingState, add_teaching_tabs
    state = TeachingState(results_dir, engines, weight_choices)
    with gr.Tabs():
        ...                      # the app's own tabs
        add_teaching_tabs(state) # three more

A thin UI over echogen.teaching: every answer goes through echogen.teaching.sessions into the SQLite
results database; truths come from the pool / the review key on the server, never from the browser.
Each browser has its own session (gr.State). Pools and review sets are built in a background thread,
so the app keeps serving while they are made; a timer shows the progress.

Files: pools under RESULTS/pools, review sets under RESULTS/reviews (both served to browsers), review
keys under RESULTS/keys (never served).
"""
from __future__ import annotations

import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from echogen.teaching import sessions as T
from echogen.teaching import stats
from echogen.teaching.db import ResultsDB
from echogen.teaching.pool import load_pool
from echogen.teaching.review import load_review_set
from echogen.teaching.summary import format_review, format_trainer, summarise_review, summarise_trainer


@dataclass
class TeachingState:
    results_dir: Path
    engines: object = None                 # echogen.ui.support.Engines (for building pools)
    weight_choices: list = field(default_factory=list)
    jobs: dict = field(default_factory=dict)
    export_root: Path | None = None        # CSV downloads (the app: its private temp folder, pruned and removed)

    def __post_init__(self):
        self.results_dir = Path(self.results_dir)
        for d in (self.pools_root, self.reviews_root, self.keys_root):
            d.mkdir(parents=True, exist_ok=True)
        self.db = ResultsDB(self.results_dir)
        self._lock = threading.Lock()

    pools_root = property(lambda self: self.results_dir / "pools")
    reviews_root = property(lambda self: self.results_dir / "reviews")
    keys_root = property(lambda self: self.results_dir / "keys")

    def key_path(self, review_dir) -> Path:
        return self.keys_root / f"{Path(review_dir).name}.key.json"

    def served_paths(self) -> list[str]:
        """Folders the browser may fetch files from (the keys folder is deliberately not one)."""
        return [str(self.pools_root), str(self.reviews_root)]

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


# ---------------------------------------------------------------------------------------- actions
def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "-" for c in (name or "").strip())[:60].strip("-")
    return keep or time.strftime("%Y%m%d-%H%M%S")


def start_build(state: TeachingState, kind: str, name: str, weights: str, frames, efs: str, per_frame,
                real: str, split: str, real_n, steps: str) -> str:
    """Start building a pool / review set in a background thread; returns the job id."""
    from echogen.diffusion.stage import parse_per_stage
    from echogen.ef import parse_efs

    out = (state.reviews_root if kind == "review" else state.pools_root) / _safe_name(name)
    if out.exists():
        raise ValueError(f"'{out.name}' already exists; choose another name")
    engine = state.engines.get(weights)
    kw = {"steps": parse_per_stage(steps, engine.cascade.config.stage_names, int, "steps")} if steps else {}
    real_n = int(real_n or 0)
    if real and not (Path(real) / "FileList.csv").is_file():
        raise ValueError(f"{real}: no FileList.csv there (not an EchoNet-format dataset)")
    if kind == "review":
        if not real or real_n < 1:
            raise ValueError("a review set needs an EchoNet-format dataset and a clip count")
    elif not frames:
        raise ValueError("upload at least one source frame")
    ef_list = parse_efs(efs) if kind != "review" else []
    job = {"fraction": 0.0, "message": "queued", "done": False, "error": None, "result": None, "out": str(out)}
    jid = f"{out.name}-{len(state.jobs)}"
    state.jobs[jid] = job

    def progress(frac, msg):
        job["fraction"], job["message"] = float(frac), msg

    def run():
        try:
            casc = _LockedCascade(engine)
            if kind == "review":
                from echogen.teaching.review import build_review_set
                rs = build_review_set(casc, real, split, real_n, out, key_path=state.key_path(out),
                                      progress=progress, sample_kwargs=kw)
                job["result"] = f"review set '{out.name}': {len(rs.cases)} clips"
            else:
                from echogen.teaching.pool import build_pool
                rc = {"root": real, "split": split, "n": real_n} if real and real_n else None
                pool = build_pool(casc, engine.regressor, [getattr(f, "name", f) for f in frames], ef_list,
                                  per_frame=int(per_frame or 1), out_dir=out, progress=progress, real_clips=rc,
                                  sample_kwargs=kw)
                job["result"] = f"pool '{out.name}': {len(pool.cases)} cases"
        except Exception as e:  # shown in the tab; the app keeps serving
            job["error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            job["done"] = True

    threading.Thread(target=run, daemon=True, name=f"teaching-build-{jid}").start()
    return jid


def job_status(state: TeachingState, jid) -> str:
    if not jid or jid not in state.jobs:
        return ""
    j = state.jobs[jid]
    if j["error"]:
        return f"**Failed:** {j['error']}"
    if j["done"]:
        return f"**Done:** {j['result']}"
    return f"Building… {j['fraction']:.0%} — {j['message']}"


def _csv(rows, prefix: str, root=None) -> str:
    """A CSV download in a fresh private folder under `root` (the app prunes and removes them)."""
    from echogen.teaching.db import ANSWER_COLUMNS
    path = Path(tempfile.mkdtemp(prefix="echogen-csv-", dir=root)) / f"{prefix}.csv"
    return str(stats.write_csv(path, rows, ANSWER_COLUMNS))


def trainer_summary(state: TeachingState, sid: str):
    """(markdown, Bland-Altman Figure or None, CSV path) of one trainer session."""
    s = state.db.session(sid)
    rows = state.db.answers(session=sid)
    summ = summarise_trainer(rows, s["meta"].get("categories"))
    fig = None
    ef_rows = [r for r in rows if r["answer_ef"] is not None]
    if len(ef_rows) >= 2:
        fig = stats.plot_bland_altman([r["truth_ef"] for r in ef_rows], [r["answer_ef"] for r in ef_rows])
    return "```\n" + format_trainer(summ, "Your session") + "\n```", fig, _csv(rows, f"trainer-{sid}", state.export_root)


def review_summary(state: TeachingState, review_dir: str):
    rs = load_review_set(review_dir, key_path=state.key_path(review_dir))
    ss = state.db.sessions(kind="review", source=rs.id)
    rows = state.db.answers(kind="review", source=rs.id)
    return "```\n" + format_review(summarise_review(rows, ss), f"Review set {Path(review_dir).name}") + "\n```", \
        _csv(rows, f"review-{Path(review_dir).name}", state.export_root)


# --------------------------------------------------------------------------------------------- UI
def _choices(paths, root=None) -> list[tuple[str, str]]:
    """(label, value): values relative to `root` (or bare names), never absolute server paths."""
    out = []
    for p in paths:
        try:
            out.append((Path(p).name, str(Path(p).resolve().relative_to(Path(root).resolve())) if root else Path(p).name))
        except ValueError:
            out.append((Path(p).name, Path(p).name))
    return out


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def add_teaching_tabs(state: TeachingState, concurrency_limit: int = 8) -> None:
    """Add the three tabs inside the caller's `with gr.Tabs():` (or Blocks) context."""
    import gradio as gr

    gr.set_static_paths(state.served_paths())
    schemes = list(stats.SCHEMES)

    def err(e):
        raise gr.Error(str(e).splitlines()[0], duration=10, print_exception=False) from None

    # ---- Build pool --------------------------------------------------------------------------
    def on_build(kind, name, weights, frames, efs, per_frame, real, split, real_n, steps):
        try:
            return start_build(state, "review" if kind.startswith("Blinded") else "pool", name,
                               state.bundle(weights), frames,
                               efs, per_frame, (real or "").strip(), split, real_n, (steps or "").strip())
        except (ValueError, KeyError, FileNotFoundError) as e:
            err(e)

    with gr.Tab("Build pool", id="teach-build"):
        if state.db.notice:                    # e.g. a corrupt database was moved aside: loudly
            gr.Markdown(f"⚠️ {state.db.notice}", elem_id="results-notice")
        gr.Markdown("Make cases ahead of a session (runs in the background; the app keeps serving). "
                    "A **trainer pool** holds generated loops at the EFs below (plus real clips with a known EF "
                    "if a dataset is given); a **blinded review set** pairs real clips with generations from "
                    "their own frame at their own EF. See docs/TEACHING.md.")
        with gr.Row():
            b_kind = gr.Radio(["EF-trainer pool", "Blinded review set"], value="EF-trainer pool", label="Build")
            b_name = gr.Textbox(label="Name", placeholder="e.g. ward-a-2026", elem_id="build-name")
            b_weights = gr.Dropdown(choices=_choices(state.weight_choices),
                                    value=(_choices(state.weight_choices) or [(None, None)])[0][1],
                                    label="Weights bundle")
        b_frames = gr.File(label="Source frames (images, DICOM, clips): one anatomy each", file_count="multiple",
                           elem_id="build-frames")
        with gr.Row():
            b_efs = gr.Textbox(value="20, 35, 50, 65, 80", label="EFs (%)")
            b_per = gr.Number(value=1, precision=0, minimum=1, label="Repeats per frame and EF")
            b_steps = gr.Textbox(value="", label="Sampler steps (blank: the preset's; or base=N,spatial=M)")
        with gr.Row():
            b_real = gr.Textbox(label="Real clips: EchoNet-format folder on the server (optional for pools)")
            b_split = gr.Dropdown(["TEST", "VAL", "TRAIN", "ALL"], value="TEST", label="Split")
            b_n = gr.Number(value=0, precision=0, minimum=0, label="Real clips (review: pairs)")
        b_go = gr.Button("Build", variant="primary", elem_id="build-btn")
        b_job = gr.State(None)
        b_status = gr.Markdown(elem_id="build-status")
        b_go.click(on_build, [b_kind, b_name, b_weights, b_frames, b_efs, b_per, b_real, b_split, b_n, b_steps],
                   b_job, api_name="build_start").then(lambda j: job_status(state, j), b_job, b_status,
                                                       api_name=False)
        gr.Timer(1.0).tick(lambda j: job_status(state, j), b_job, b_status, api_name=False, show_progress="hidden")
        b_check = gr.Button("Refresh status", size="sm", visible=False)
        b_check.click(lambda j: job_status(state, j), b_job, b_status, api_name="build_status")

    # ---- EF trainer --------------------------------------------------------------------------
    def t_show(st):
        i = st["pos"]
        if i >= len(st["cases"]):
            md, fig, csv = trainer_summary(state, st["sid"])
            return st, None, f"Session finished ({len(st['cases'])} cases).", "", md, fig, csv
        case = st["pool"].case(st["cases"][i])
        st["shown"] = _now_ms()
        return (st, str(st["pool"].path(case)), f"Case {i + 1} of {len(st['cases'])}: estimate the EF.", "", "",
                None, None)

    def t_start(name, pool_dir, n, scheme, st):
        try:
            pool = load_pool(state.under(pool_dir))
            sid, cases = T.start_trainer(state.db, pool, int(n or 10), rater=name or "", categories=scheme)
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)
        st = {"sid": sid, "cases": cases, "pos": 0, "pool": pool, "answered": set()}
        names = [c.name for c in stats.parse_categories(scheme)]
        return t_show(st) + (gr.update(choices=names, value=None),)

    def t_answer(ef, category, st):
        if not st or st["pos"] >= len(st["cases"]):
            err("Start a session first.")
        if ef is None and not category:
            err("Give an EF and/or a category.")
        fb = T.record_trainer_answer(state.db, st["sid"], st["pos"], st["pool"], st["cases"][st["pos"]],
                                     answer_ef=None if ef is None else float(ef), answer_category=category or None,
                                     response_ms=_now_ms() - st.get("shown", _now_ms()))
        st["answered"].add(st["pos"])
        lines = [f"**True EF {fb['true_ef']:.0f} %** ({fb['true_category']})"]
        if fb["error"] is not None:
            lines.append(f"your error {fb['error']:+.1f} %")
        if fb["category_correct"] is not None:
            lines.append("category ✔" if fb["category_correct"] else f"category ✘ (should be {fb['true_category']})")
        lines.append("regressor reads " + (f"{fb['regressor_ef']:.1f} %" if fb["regressor_ef"] is not None
                                           else "— (no regressor)"))
        lines.append("a real clip" if fb["kind"] == "real" else "a generated loop")
        if state.db.unsaved:                  # kept and retried, never dropped: say so
            gr.Warning(state.db.unsaved_message())
        return st, " · ".join(lines)

    def t_next(st):
        if not st:
            err("Start a session first.")
        st["pos"] += 1
        return t_show(st)

    with gr.Tab("EF trainer", id="teach-trainer"):
        t_state = gr.State(None)
        with gr.Row():
            t_name = gr.Textbox(label="Your name (optional)", elem_id="trainer-name")
            pools = T.find_pools(state.pools_root)
            t_pool = gr.Dropdown(_choices(pools, state.results_dir),
                                 value=_choices(pools, state.results_dir)[0][1] if pools else None, label="Pool",
                                 elem_id="trainer-pool")
            t_n = gr.Number(value=10, precision=0, minimum=1, label="Cases", elem_id="trainer-n")
            t_scheme = gr.Dropdown(schemes, value=stats.DEFAULT_SCHEME, label="EF categories",
                                   info="esc2021: 2021 ESC HF guideline; ase2015: ASE/EACVI chamber quantification")
        with gr.Row():
            t_refresh = gr.Button("Refresh pools", size="sm")
            t_go = gr.Button("Start session", variant="primary", elem_id="trainer-start")
        t_status = gr.Markdown(elem_id="trainer-status")
        with gr.Row(equal_height=False):
            t_video = gr.Video(label="Case", autoplay=True, loop=True, interactive=False, height=320,
                               elem_id="trainer-video")
            with gr.Column():
                t_ef = gr.Slider(0, 100, value=50, step=1, label="Your EF estimate (%)", elem_id="trainer-ef")
                t_cat = gr.Radio([c.name for c in stats.parse_categories()], label="Category", elem_id="trainer-cat")
                with gr.Row():
                    t_submit = gr.Button("Submit", variant="primary", elem_id="trainer-submit")
                    t_nextb = gr.Button("Next case", elem_id="trainer-next")
                t_fb = gr.Markdown(elem_id="trainer-feedback")
        t_sum = gr.Markdown(elem_id="trainer-summary")
        with gr.Row():
            t_plot = gr.Plot(label="Bland-Altman", elem_id="trainer-plot")
            t_csv = gr.File(label="Your answers (CSV)", interactive=False, elem_id="trainer-csv")
        shown = [t_state, t_video, t_status, t_fb, t_sum, t_plot, t_csv]
        t_refresh.click(lambda: gr.update(choices=_choices(T.find_pools(state.pools_root), state.results_dir)), None,
                        t_pool,
                        api_name=False)
        t_go.click(t_start, [t_name, t_pool, t_n, t_scheme, t_state], shown + [t_cat], api_name="trainer_start",
                   concurrency_limit=concurrency_limit, concurrency_id="teaching")
        t_submit.click(t_answer, [t_ef, t_cat, t_state], [t_state, t_fb], api_name="trainer_answer",
                       concurrency_limit=concurrency_limit, concurrency_id="teaching")
        t_nextb.click(t_next, [t_state], shown, api_name="trainer_next",
                      concurrency_limit=concurrency_limit, concurrency_id="teaching")

    # ---- Blinded review ----------------------------------------------------------------------
    def r_show(st):
        i = st["pos"]
        if i >= len(st["cases"]):
            return st, None, f"Finished: {len(st['cases'])} clips rated. Thank you."
        st["shown"] = _now_ms()
        case = next(c for c in st["set"].cases if c["id"] == st["cases"][i])
        return st, str(st["set"].path(case)), f"Clip {i + 1} of {len(st['cases'])}: real or generated?"

    def r_start(name, review_dir, st):
        try:
            review_dir = state.under(review_dir)
            rs = load_review_set(review_dir, key_path=state.key_path(review_dir), need_key=True)
            sid, order = T.start_review(state.db, rs, rater=name or "")
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)
        return r_show({"sid": sid, "cases": order, "pos": 0, "set": rs})

    def r_answer(label, confidence, comment, st):
        if not st or st["pos"] >= len(st["cases"]):
            err("Start a review first.")
        if label not in ("real", "generated"):
            err("Choose real or generated.")
        T.record_review_answer(state.db, st["sid"], st["pos"], st["set"], st["cases"][st["pos"]], label,
                               confidence=int(confidence), comment=comment or "",
                               response_ms=_now_ms() - st.get("shown", _now_ms()))
        if state.db.unsaved:
            gr.Warning(state.db.unsaved_message())
        st["pos"] += 1
        return r_show(st)

    def r_summary(review_dir):
        try:
            return review_summary(state, state.under(review_dir))
        except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
            err(e)

    with gr.Tab("Blinded review", id="teach-review"):
        r_state = gr.State(None)
        sets = T.find_review_sets(state.reviews_root)
        with gr.Row():
            r_name = gr.Textbox(label="Your name (optional)", elem_id="review-name")
            r_set = gr.Dropdown(_choices(sets, state.results_dir),
                                value=_choices(sets, state.results_dir)[0][1] if sets else None, label="Review set",
                                elem_id="review-set")
            r_go = gr.Button("Start review", variant="primary", elem_id="review-start")
        r_status = gr.Markdown(elem_id="review-status")
        with gr.Row(equal_height=False):
            r_video = gr.Video(label="Clip", autoplay=True, loop=True, interactive=False, height=320,
                               elem_id="review-video")
            with gr.Column():
                r_label = gr.Radio(["real", "generated"], label="This clip is", elem_id="review-label")
                r_conf = gr.Slider(1, 5, value=3, step=1, label="Confidence (1 guess - 5 certain)",
                                   elem_id="review-confidence")
                r_comment = gr.Textbox(label="Comment (optional)", lines=2, elem_id="review-comment")
                r_submit = gr.Button("Submit and next", variant="primary", elem_id="review-submit")
        with gr.Accordion("Organiser: summary of a review set", open=False):
            r_sum_btn = gr.Button("Show summary", elem_id="review-summary-btn")
            r_sum = gr.Markdown(elem_id="review-summary")
            r_csv = gr.File(label="All answers (CSV)", interactive=False)
        r_go.click(r_start, [r_name, r_set, r_state], [r_state, r_video, r_status], api_name="review_start",
                   concurrency_limit=concurrency_limit, concurrency_id="teaching")
        r_submit.click(r_answer, [r_label, r_conf, r_comment, r_state], [r_state, r_video, r_status],
                       api_name="review_answer", concurrency_limit=concurrency_limit, concurrency_id="teaching")
        r_submit.click(lambda: (None, ""), None, [r_label, r_comment], api_name=False)
        r_sum_btn.click(r_summary, [r_set], [r_sum, r_csv], api_name="review_summary")


def build_teaching_demo(state: TeachingState):
    """The three tabs alone in a Blocks (for tests, screenshots, or a teaching-only server)."""
    import gradio as gr

    with gr.Blocks(title="EchoGen teaching") as demo:
        with gr.Tabs():
            add_teaching_tabs(state)
    return demo
