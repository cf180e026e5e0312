"""EchoGen app: one echo frame + a chosen ejection fraction -> beating echo loops, with an EF readout.

    python app.py [--share] [--host 0.0.0.0] [--port 7860] [--weights DIR] [--device cpu|cuda]
                  [--auth user:pass] [--ssl-certfile CERT --ssl-keyfile KEY] [--random-init]
                  [--max-file-mb MB] [--max-megapixels MPX] [--max-frames N] [--time-budget S]

The Gradio app (the work happens in echogen/ui/support.py); app.py at the top is its entry point. Named API endpoints
"generate" and "sweep" make every action callable with gradio_client.
"""
from __future__ import annotations

import os

# before gradio is imported: no analytics, no hub calls (these machines may be offline)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import atexit  # noqa: E402
import functools  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

from echogen.diffusion.cascade import SEED_MAX  # noqa: E402
from echogen.ef import SWEEP_MAX, parse_efs  # noqa: E402
from echogen.ui import guard as G  # noqa: E402
from echogen.ui import live  # noqa: E402
from echogen.ui.options import parse_args  # noqa: E402
from echogen.ui import support as S  # noqa: E402

MAX_SLOTS = 4          # stage columns shown (the largest preset has four stages)
EXAMPLES = ROOT / "assets" / "examples"


@dataclass
class Serving:
    """How the app protects a shared server (echogen/ui/guard.py); the defaults do nothing."""
    uploads: G.Uploads | None = None      # uploads deleted after use
    budget_s: float | None = None         # per-request time budget
    janitor: G.Janitor | None = None      # prunes result folders
    upload_ttl_s: int = 3600              # gradio's cache (uploads, output copies) kept at most this long


NO_INPUT = live.NO_INPUT
# the frame picker's value put in its range (the range input's min/max) in the page, before an event sends it
FRAME_IN_RANGE = """(...a) => { const r = document.querySelector('#frame-pick input[type=range]');
  const lo = Number(r?.min ?? 0), hi = Number(r?.max ?? a[1]), v = Number(a[1]);
  if (Number.isFinite(v)) a[1] = Math.round(Math.min(hi, Math.max(lo, v)));
  return a; }"""
NO_INPUT_HTML = f"<div id='ef-readout' class='eg-readout muted'>⚠ {NO_INPUT}</div>"


def refused_html(why: str) -> str:
    """The readout after Generate on an upload that was refused: the reason (already scrubbed), what to do."""
    import html
    return (f"<div id='ef-readout' class='eg-readout muted'>⚠ This upload was refused ({html.escape(why)}): nothing "
            "to generate from. Upload an echo frame, DICOM or clip, or pick an example.</div>")


def weight_labels(choices: list[str]) -> dict[str, str]:
    """Picker label -> bundle folder. Labels (the folder's name) are what browsers and API clients see and
    send: no absolute server path reaches /config or a message."""
    out = {}
    for c in choices:
        base = S.RANDOM_INIT if c == S.RANDOM_INIT else Path(c).name
        label, k = base, 2
        while label in out:
            label, k = f"{base} ({k})", k + 1
        out[label] = c
    return out


def log(msg: str) -> None:
    """One line on the server console (never a file name: callers pass scrubbed text)."""
    print(f"EchoGen: {msg}", file=sys.stderr, flush=True)


def stage_choices(engine) -> list[tuple[str, str]]:
    return [(f"{s.name} — {S.STAGE_ROLE.get(s.name, 'refinement')}", s.name) for s in engine.stages[1:]]


def build_app(engines: S.Engines, choices: list[str], out_root: Path, teaching=None, *,
              teaching_off: str | None = None, serving: Serving | None = None):
    """teaching: a TeachingState (the three teaching tabs), or None; teaching_off: why they are off (shown
    in each of them instead)."""
    import gradio as gr

    from echogen.device import trim_memory
    from echogen.ui.layout import banner_html, check_html, input_error_types, readout_html, stage_label, weights_md
    errors = input_error_types() + (G.BudgetExceeded,)
    serving = serving or Serving()
    labels = weight_labels(choices)
    first = engines.get(choices[0])
    n_cols = max(S.stage_count(c) for c in choices)   # one loop column per stage of the largest cascade
    page_inputs = live.PageInputs()                    # per page: input changes (a stale generation shows nothing)

    def bundle(label) -> str:
        if label in labels:
            return labels[label]
        if label in labels.values():                  # a full path still works from a script on the server
            return label
        raise ValueError(f"unknown weights bundle '{G.scrub(label)}' (choose one of: {', '.join(labels)})")

    def fail(e, *uploads):
        msg = G.scrub(e, *uploads)
        log(f"request refused: {msg}")
        raise gr.Error(msg, duration=12, print_exception=False) from None

    def typed(fn):
        """This module's annotations are strings (PEP 563) naming a local `gr`: make `request: gr.Request`
        the real class so gradio passes the request in."""
        fn.__annotations__ = {k: gr.Request if v == "gr.Request" else v for k, v in fn.__annotations__.items()}
        return fn

    def guarded(fn):
        """Unexpected errors too reach the user and the console as one scrubbed line, never a traceback
        naming an upload."""
        typed(fn)

        @functools.wraps(fn)
        def wrapper(*a, **k):
            try:
                return fn(*a, **k)
            except gr.Error:
                raise
            except Exception as e:
                paths = [x for x in a if isinstance(x, str) and "/" in x]
                msg = G.scrub(f"{type(e).__name__}: {e}", *paths)
                log(f"request failed: {msg}")
                raise gr.Error(f"internal error: {msg}", duration=12, print_exception=False) from None
            finally:
                trim_memory()                     # give the request's peak memory back to the OS
        return wrapper

    def session(request) -> str | None:
        return getattr(request, "session_hash", None)

    def finish(request, path, poke: bool = True) -> None:
        if serving.uploads is not None:
            serving.uploads.done(session(request), path)
        if serving.janitor is not None and poke:
            serving.janitor.poke()

    def slot_updates(engine):
        st = engine.stages
        toggles = gr.update(choices=stage_choices(engine), value=[s.name for s in st[1:]])
        ups = []
        for i in range(MAX_SLOTS):
            ok = i < len(st)
            ups += [gr.update(visible=ok, label=f"{st[i].name}: steps" if ok else "steps",
                              value=st[i].steps if ok else 1),
                    gr.update(visible=ok, label=f"{st[i].name}: guidance" if ok else "guidance",
                              value=st[i].guidance if ok else 1.0)]
        return [toggles, weights_md(engine), banner_html(engine)] + ups + [live.checkbox_update(engine)]

    # ---- events -------------------------------------------------------------------------------
    @guarded
    def on_input(path, weights, current_ef, request: gr.Request):
        """New upload/example: frame picker, conditioning frame preview, EF default from a clip (a single frame
        has no motion to read: the note says the slider keeps its value)."""
        if not path:
            return gr.update(visible=False, value=0), None, "", gr.update(), "", 0
        if serving.uploads is not None:       # kept while this page is open, deleted when it closes
            serving.uploads.keep(session(request), path)
            serving.uploads.done(session(request), path)      # its upload has been used (and is kept)
        try:
            frames, info = S.read_input(path)
            engine = _engine_or_none(weights)
            S.upload_view(engine, path, frames)               # decided once, on this decode (kept per upload)
            frame, pinfo = S.conditioning_frame(path, 0, engine)
        except errors as e:
            msg = G.scrub(e, path)
            log(f"upload refused: {msg}")
            gr.Warning(msg)
            return gr.update(visible=False, value=0), None, f"⚠️ {msg}", gr.update(), msg, 0
        n = len(frames)
        ef = gr.update()
        note = S.input_summary({**info, **pinfo}, 0)
        if info.get("truncated"):
            note += f" · {info['truncated']}"
        try:
            est, other = S.clip_ef(engines.get(bundle(weights)), frames, float(info.get("fps") or 0), both=True)
        except Exception as e:  # an estimate is a convenience; never block the upload on it
            est, other, note = None, None, note + f" · (EF estimate failed: {G.scrub(e, path)})"
        if est is not None:
            ef = gr.update(value=round(min(90, max(10, est[0]))))
            note += f" · {est[1]} reads EF {est[0]:.1f}% from this clip (slider set to it)"
        elif n == 1:
            try:
                kept = f" (it was at {float(current_ef):g} % then)"
            except (TypeError, ValueError):
                kept = ""
            note += (" · one frame has no motion to read an EF from, so this upload did not move the EF "
                     f"slider{kept}; set the EF you want the loop to have")
        if est is not None and other is not None:   # both readings, as `echogen ef` prints them
            from echogen.eval.readout import DISAGREE, disagreement
            gap = disagreement(est[0], other[0])
            note += f"; {other[1]} reads {other[0]:.1f}%"
            if gap > DISAGREE:
                note += (f" · ⚠ the two readings disagree by {gap:.1f} EF points: trust neither without looking "
                         "at the clip")
        picker = gr.update(visible=n > 1, maximum=max(1, n - 1), value=0)
        return picker, S.display_frames(frame[None])[0], note, ef, "", 0     # 0: the frame the preview shows

    def _engine_or_none(weights):
        try:
            return engines.get(bundle(weights))
        except Exception:  # noqa: BLE001  the weights menu says what is wrong with a bundle
            return None

    @guarded
    def on_frame(path, index, weights=None, previewed=0):
        """The frame picker changed (dragged, or typed: a number past the clip's end is put in range by the page
        first, FRAME_IN_RANGE): the preview and its note follow, so they always show the frame Generate uses. A
        frame the preview already shows (a new input resets the picker to 0) changes nothing, which keeps the
        input's own note (EF estimate, warnings)."""
        if not path or index is None or int(index) == int(previewed or 0):
            return gr.skip(), gr.skip(), gr.skip()
        try:
            index = G.check_request(index, None, 0, [])[0]
            frame, info = S.conditioning_frame(path, index, _engine_or_none(weights))
        except errors as e:
            fail(e, path)
        return S.display_frames(frame[None])[0], S.input_summary(info, int(index)), int(index)

    def clear_results(path, weights, request: gr.Request):
        """A new, cleared or refused input: the loops, readout, plot, downloads and sweep of the previous input
        go, so nobody takes them for this input's results (and a generation still running for it shows nothing:
        page_inputs)."""
        page_inputs.changed(session(request))
        try:
            names = [st.name for st in engines.get(bundle(weights)).stages]
        except Exception:  # noqa: BLE001  the weights menu says what is wrong with a bundle
            names = []
        caps = [f"**{names[i]}**" if i < len(names) else "" for i in range(n_cols)]
        empty = ("<div id='ef-readout' class='eg-readout muted'>No loop generated yet"
                 + (" for this input.</div>" if path else ": upload an echo frame, DICOM or clip.</div>"))
        return [None] * n_cols + caps + [empty, None, None, None, {}, None, None, None, ""]   # "": the live status

    def on_check(path, weights):
        """Upload check (issue 19): does it look like an apical-4-chamber echo? A warning with the score;
        generation stays allowed."""
        if not path:
            return ""
        try:
            return check_html(S.input_check(engines.get(bundle(weights)), path).to_dict())
        except Exception:  # noqa: BLE001  unreadable (on_input says why) or the check failed: advice only
            return ""

    def show_overlay(on, shown):
        """The displayed loops with (on) or without the traced LV contour; unchanged before a generation."""
        shown = shown or {}
        paths = shown.get("overlay" if on else "plain") or []
        if on and not paths and shown.get("plain"):
            gr.Info("This weights bundle has no LV tracer: there is no contour to draw.")
        return [gr.update(value=paths[i]) if i < len(paths) and paths[i] else gr.update() for i in range(n_cols)]

    def _settings(frame_index, weights, stages, seed, slots, ef=None, path=None):
        """A request's numbers checked, its bundle (folder, engine) and per-stage settings; no input read."""
        try:
            frame_index, ef, seed, slots = G.check_request(frame_index, ef, seed, slots)
            choice = bundle(weights)
            engine = engines.get(choice)
        except errors as e:
            fail(e, path)
        st = engine.stages
        steps = {s.name: int(slots[2 * i]) for i, s in enumerate(st) if i < MAX_SLOTS}
        guidance = {s.name: float(slots[2 * i + 1]) for i, s in enumerate(st) if i < MAX_SLOTS}
        enabled = [s for s in (stages or []) if s in {x.name for x in st}]
        return choice, engine, frame_index, enabled, steps, guidance, seed, ef

    def _frame(path, frame_index, engine=None):
        try:
            return S.conditioning_frame(path, frame_index, engine)[0]
        except errors as e:
            fail(e, path)

    def _setup(path, frame_index, weights, stages, seed, slots, ef=None):
        if not path:
            raise gr.Error(NO_INPUT, print_exception=False)
        _, engine, frame_index, enabled, steps, guidance, seed, ef = _settings(frame_index, weights, stages, seed,
                                                                               slots, ef, path)
        return engine, _frame(path, frame_index, engine), enabled, steps, guidance, seed, ef

    def for_current_input(request, input_file, n_out, run):
        """run(stop) for the page's input as it is now, then done with the upload. stop() (after every sampler
        step, and once more at the end) raises live.InputChanged when the page's input has changed since: then
        nothing is shown (the page already cleared its results for the new input) and one line is said."""
        sess = session(request)
        seen = page_inputs.now(sess)

        def stop():
            page_inputs.check(sess, seen)
        try:
            out = run(stop)
            stop()
            return out
        except live.InputChanged as e:
            log(f"request dropped: {e}")
            gr.Info("The input changed while this was being generated: its result is not shown.")
            return [gr.update()] * n_out
        finally:
            finish(request, input_file)

    @guarded
    def generate(input_file, frame_index, ef, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3,
                 request: gr.Request, progress=gr.Progress()):
        slots = [s0, g0, s1, g1, s2, g2, s3, g3]
        return for_current_input(request, input_file, 2 * n_cols + 5, lambda stop: _generate(
            input_file, frame_index, ef, stages, weights, seed, slots, progress, stop=stop))

    def _generate(input_file, frame_index, ef, stages, weights, seed, slots, progress, stop=None):
        """The one generate path (the Generate button, live mode, scrub). stop(): called after every sampler
        step; raises to end the request (live mode: a newer release; scrub: its time budget)."""
        engine, frame, enabled, steps, guidance, seed, ef = _setup(input_file, frame_index, weights, stages, seed,
                                                                   slots, ef)
        names = [s.name for s in engine.stages if s.is_base or s.name in enabled]
        progress(0, desc="starting")

        def cb(stage, step, total):
            k = names.index(stage)
            progress((k + step / total) / len(names), desc=f"{stage}: step {step}/{total}")
            if stop is not None:
                stop()

        try:
            check = S.input_check(engine, input_file, int(frame_index or 0))
            g = S.run_generation(engine, frame, float(ef), enabled, steps, guidance, seed,
                                 S.new_result_dir(out_root), G.Budget(serving.budget_s).wrap(cb), check=check)
            v = S.upload_view(engine, input_file)                 # what was turned / mirrored (the input line says it too)
            g.readout["view"] = S.view_note(v, then=S.SHOWN_IN_VIEW)
        except errors as e:
            fail(e, input_file)
        vids, caps = [], []
        shown = {"plain": [str(g.display[r.name]) for r in g.stages],
                 "overlay": [str(g.overlay[r.name]) for r in g.stages if r.name in g.overlay]}
        for i in range(n_cols):
            if i < len(g.stages):
                r = g.stages[i]
                vids.append(gr.update(value=str(g.display[r.name]), visible=True))
                row = g.readout["stages"][i]
                last = i == len(g.stages) - 1                   # the crossfade is the last stage's
                caps.append(gr.update(value=stage_label(r, engine, row.get("loop_frames"), g.readout["loop"]["complete"],
                                                        g.readout["loop"]["crossfade"] if last else 0,
                                                        row.get("show_fps")), visible=True))
            else:
                vids.append(gr.update(value=None, visible=False))
                caps.append(gr.update(value="", visible=False))
        return vids + caps + [readout_html(g.readout), str(g.plot), [str(f) for f in g.files], g.readout, shown]

    @guarded
    def sweep(input_file, frame_index, efs, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3,
              request: gr.Request, progress=gr.Progress()):
        slots = [s0, g0, s1, g1, s2, g2, s3, g3]
        return for_current_input(request, input_file, 3, lambda stop: _sweep(
            input_file, frame_index, efs, stages, weights, seed, slots, progress, stop=stop))

    def _sweep(input_file, frame_index, efs, stages, weights, seed, slots, progress, stop=None):
        engine, frame, enabled, steps, guidance, seed, _ = _setup(input_file, frame_index, weights, stages, seed,
                                                                  slots)
        try:
            values = parse_efs(efs, max_count=SWEEP_MAX)
        except ValueError as e:
            fail(e)
        budget = G.Budget(serving.budget_s)
        names = [s.name for s in engine.stages if s.is_base or s.name in enabled]

        def cb(i, stage, step, total):
            k = names.index(stage)
            progress((i + (k + step / total) / len(names)) / len(values),
                     desc=f"EF {values[i]:g}%: {stage} step {step}/{total}")
            budget.check()
            if stop is not None:
                stop()

        try:
            grid, rows, files, _ = S.run_sweep(engine, frame, values, enabled, steps, guidance, seed,
                                               S.new_result_dir(out_root), cb)
        except errors as e:
            fail(e, input_file)
        return str(grid), rows, [str(f) for f in files]

    # ---- layout -------------------------------------------------------------------------------
    ttl = int(serving.upload_ttl_s)
    with gr.Blocks(title="EchoGen", delete_cache=(max(60, min(ttl, 900)), ttl)) as demo:
        gr.HTML("<div id='eg-header'><h1>EchoGen</h1><p>Echocardiogram loops from a single frame and a chosen "
                "ejection fraction — a cascaded video diffusion model (Reynaud et al., MICCAI 2023). "
                "For teaching and research; not for diagnosis.</p></div>")
        banner = gr.HTML(banner_html(first))
        with gr.Tabs(elem_id="eg-tabs"):
            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, elem_classes="eg-card"):
                        gr.Markdown("### 1 · Input")
                        file_in = gr.File(label="Echo frame, DICOM or clip (PNG/JPEG, DCM, AVI/MP4)",
                                          elem_id="input-file",
                                          file_types=[".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm",
                                                      ".dicom",
                                                      ".avi", ".mp4", ".mov", ".webm", ".npy"], height=110)
                        examples = S.list_examples(EXAMPLES)
                        if examples:
                            gr.Examples([[p] for p in examples], inputs=[file_in], label="Bundled examples",
                                        examples_per_page=8)
                        frame_pick = gr.Slider(0, 9999, value=0, step=1, label="Frame of the clip to condition on",
                                               visible=False, elem_id="frame-pick")
                        previewed = gr.State(0)           # the frame index the preview shows
                        # the caption sits above the image (a shown label of gr.Image floats over the picture)
                        gr.Markdown("Conditioning frame (112×112, preprocessed)", elem_classes="eg-image-caption",
                                    elem_id="preview-caption")
                        with gr.Row():
                            preview = gr.Image(label="Conditioning frame (112×112, preprocessed)", show_label=False,
                                               height=224, width=224,
                                               interactive=False, buttons=[], elem_id="preview")
                        input_info = gr.Markdown(elem_classes="eg-small", elem_id="input-info")
                        a4c = gr.HTML("", elem_id="a4c-box")      # the apical-4-chamber check of the upload
                    with gr.Column(scale=5, elem_classes="eg-card"):
                        gr.Markdown("### 2 · Target")
                        ef = gr.Slider(10, 90, value=55, step=1, label="Ejection fraction (EF, %)", elem_id="ef-slider",
                                       info="2021 ESC: preserved ≥ 50 %, mildly reduced 41–49 %, reduced ≤ 40 %")
                        live_ui = live.controls(first)     # live mode, scrub and their status (echogen/ui/live.py)
                        toggles = gr.CheckboxGroup(label="Cascade stages after the base (off = plain upsampling)",
                                                   choices=stage_choices(first),
                                                   value=[s.name for s in first.stages[1:]],
                                                   elem_id="stage-toggles")
                        weights = gr.Dropdown(choices=list(labels), value=next(iter(labels)), label="Weights bundle")
                        wmd = gr.Markdown(weights_md(first), elem_classes="eg-small")
                        with gr.Accordion("Advanced: sampling steps, guidance, seed", open=False):
                            with gr.Row():
                                seed = gr.Number(value=0, label=f"Seed (0 to {SEED_MAX})", elem_id="seed")
                                dice = gr.Button("Random seed", size="sm", elem_id="random-seed")
                            slots = []
                            for i in range(MAX_SLOTS):
                                st = first.stages[i] if i < len(first.stages) else None
                                with gr.Row():
                                    slots += [gr.Slider(1, 50, step=1, value=st.steps if st else 1,
                                                        visible=st is not None,
                                                        elem_id=f"slot-steps-{i}",
                                                        label=f"{st.name}: steps" if st else "steps"),
                                              gr.Slider(0, 10, step=0.5, value=st.guidance if st else 1.0,
                                                        visible=st is not None,
                                                        label=f"{st.name}: guidance" if st else "guidance")]
                        go = gr.Button("Generate loop", variant="primary", elem_id="generate-btn", size="lg")
                gr.Markdown("### 3 · Result")
                with gr.Tabs():
                    with gr.Tab("Generated loop", id="gen"):
                        videos, captions = [], []
                        with gr.Row():
                            for i in range(n_cols):
                                with gr.Column(min_width=200):
                                    videos.append(gr.Video(label=f"stage {i}", show_label=False, autoplay=True,
                                                           loop=True,
                                                           height=260, interactive=False, elem_id=f"video-{i}",
                                                           elem_classes="eg-video", visible=i < len(first.stages)))
                                    captions.append(gr.Markdown(f"**{first.stages[i].name}**" if i < len(first.stages)
                                                                else "", elem_classes="eg-caption",
                                                                elem_id=f"caption-{i}"))
                        with gr.Row():
                            lv_overlay = gr.Checkbox(False, label="Show traced LV contour",
                                                     info="the LV tracer's outline, drawn on every loop",
                                                     elem_id="lv-overlay", scale=0, min_width=300)
                            shown = gr.State({})     # display loops of the last generation: plain / with contour
                            refusal = gr.State("")   # why the current upload was refused ("" when it was not)
                        with gr.Row(equal_height=False):
                            readout = gr.HTML("<div id='ef-readout' class='eg-readout muted'>"
                                              "No loop generated yet.</div>",
                                              label="EF readout")
                            plot = gr.Image(label="LV volume (LV tracing) or blood-pool area over time",
                                            show_label=False, height=240,
                                            interactive=False, buttons=[], elem_id="curve")
                        gr.Markdown("Each loop is one heart cycle, end-diastole to end-diastole, so it repeats "
                                    "without a jump (when no such cycle is found, the readout says so and the whole "
                                    "clip is shown); the whole generated clip is among the downloads.",
                                    elem_classes="eg-small")
                        with gr.Accordion("Downloads (loop MP4 + GIF per stage, the full clip) and details",
                                          open=False):
                            files = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                            elem_id="downloads")
                            details = gr.JSON(label="Readout (as returned by the API)")
                    with gr.Tab("Counterfactual sweep", id="sweep"):
                        gr.Markdown("The same frame and the same noise (seed) at several EFs: only the requested EF "
                                    "changes. Each loop is captioned with the EF asked for and the EF read back.")
                        with gr.Row():
                            efs = gr.Textbox(value=", ".join(str(v) for v in S.SWEEP_EFS), label="EFs (%)", scale=3)
                            go_sweep = gr.Button("Run sweep", variant="primary", scale=1, elem_id="sweep-btn")
                        # the caption above the grid (a shown label of gr.Video floats over the first tiles' captions)
                        gr.Markdown("Sweep: the asked EF and the EF read back (mean of the regressor and LV tracing, "
                                    "as the table says) are written above each "
                                    "loop; each loop is resampled to one common length, so heart rates in the grid "
                                    "are not real (the downloads are)", elem_classes="eg-image-caption",
                                    elem_id="sweep-caption")
                        grid = gr.Video(label="Sweep", show_label=False, autoplay=True,
                                        loop=True, interactive=False, elem_id="sweep-grid")
                        table = gr.Dataframe(headers=["requested EF %", "read EF %", "difference", "read by"], interactive=False,
                                             label="Sweep readout", elem_id="sweep-table")
                        sweep_files = gr.File(label="Downloads", file_count="multiple", interactive=False)
            if teaching is not None:   # Build pool / EF trainer / Blinded review (echogen/ui/teaching.py)
                from echogen.ui.teaching import add_teaching_tabs
                add_teaching_tabs(teaching)
            elif teaching_off:         # the results folder/database cannot be used: say why, keep Generate
                for name, tid in (("Build pool", "teach-build"), ("EF trainer", "teach-trainer"),
                                  ("Blinded review", "teach-review")):
                    with gr.Tab(name, id=tid):
                        gr.Markdown(f"**Teaching tabs are off:** {teaching_off}", elem_id=f"{tid}-off")

        # ---- wiring ---------------------------------------------------------------------------
        # a new input first clears the old results, THEN says what it is: a Generate click once the input line
        # shows (e.g. a refused upload's reason) can no longer be overwritten by a late clear (seen in Chromium on a
        # loaded box: the refusal replaced by "No loop generated yet")
        file_in.change(typed(clear_results), [file_in, weights],
                       videos + captions + [readout, plot, files, details, shown, grid, table, sweep_files,
                                            live_ui.status], api_name=False, queue=False).then(
            on_input, [file_in, weights, ef], [frame_pick, preview, input_info, ef, refusal, previewed],
            api_name=False, concurrency_limit=2, concurrency_id="inputs")
        file_in.change(guarded(on_check), [file_in, weights], [a4c], api_name="check_input",
                       concurrency_limit=2, concurrency_id="inputs")
        # change (a drag, a typed number): a number typed past the clip's last frame was refused by Gradio (its own
        # range check, before on_frame), which then showed the last frame's number without sending it, so the
        # preview stayed on frame 0 while Generate used the last frame. The page puts the number in the picker's
        # range before sending (FRAME_IN_RANGE).
        frame_pick.change(on_frame, [file_in, frame_pick, weights, previewed], [preview, input_info, previewed],
                          js=FRAME_IN_RANGE, api_name=False, concurrency_limit=2, concurrency_id="inputs",
                          trigger_mode="always_last")
        weights.change(guarded(lambda w: slot_updates(engines.get(bundle(w)))), [weights],
                       [toggles, wmd, banner] + slots + [live_ui.live], api_name=False)
        if serving.uploads is not None:           # the page closed: its uploads go
            def page_closed(request: gr.Request):
                serving.uploads.release(session(request))
            demo.unload(typed(page_closed))
        dice.click(lambda: random.randint(0, SEED_MAX), None, seed, api_name=False)
        # no input, or a refused upload: say so where the result would be (the error toast alone was missed by new users)
        go.click(lambda f, why: NO_INPUT_HTML if not f else refused_html(why) if why else gr.update(), [file_in, refusal],
                 [readout], queue=False, api_name=False, show_progress="hidden")
        # one progress bar (on the readout), not one per output component
        go.click(generate, [file_in, frame_pick, ef, toggles, weights, seed] + slots,
                 videos + captions + [readout, plot, files, details, shown], api_name="generate",
                 show_progress_on=[readout]).then(
            lambda on, st: show_overlay(True, st) if on else [gr.update()] * n_cols, [lv_overlay, shown], videos,
            api_name=False, show_progress="hidden")
        lv_overlay.change(show_overlay, [lv_overlay, shown], videos, api_name="overlay", show_progress="hidden")
        live.wire(demo, live_ui, ef, [file_in, frame_pick, ef, toggles, weights, seed] + slots,
                  videos + captions + [readout, plot, files, details, shown], lv_overlay, readout,
                  live.Hooks(_generate, _settings, _frame, session, finish, show_overlay, fail,
                             lambda: G.Budget(serving.budget_s), log, n_cols), guarded, page_inputs=page_inputs)
        go_sweep.click(sweep, [file_in, frame_pick, efs, toggles, weights, seed] + slots,
                       [grid, table, sweep_files], api_name="sweep", show_progress_on=[grid])
    return demo


def main(argv=None) -> int:
    args = parse_args(argv)
    from echogen.cli.main import apply_input_limits
    from echogen.device import pick_device, tune_cpu_malloc
    try:
        limits = apply_input_limits(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for flag, v in (("--time-budget", args.time_budget), ("--keep-results-min", args.keep_results_min),
                    ("--max-results-mb", args.max_results_mb), ("--upload-ttl-min", args.upload_ttl_min)):
        if not v >= 0:
            print(f"error: {flag} must be >= 0, got {v}", file=sys.stderr)
            return 2
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("error: --ssl-certfile and --ssl-keyfile go together (see README: a self-signed certificate)",
              file=sys.stderr)
        return 2
    for flag, f in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if f and not Path(f).is_file():
            print(f"error: {flag} {f}: no such file", file=sys.stderr)
            return 2
    tune_cpu_malloc()
    from echogen.weights.bundle import WeightsError
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.weights and not Path(args.weights).is_dir():
        print(f"error: --weights {args.weights}: not a folder", file=sys.stderr)
        return 2
    choices = S.weight_choices(args.weights, args.random_init)
    if not choices:
        print("error: " + S.no_weights_message(S.DEFAULT_WEIGHTS), file=sys.stderr)
        return 2
    from echogen.ui.teaching import make_auth, parse_credentials
    try:
        participants = parse_credentials(args.auth, "--auth")
        organisers = parse_credentials(args.organiser, "--organiser")
        auth = make_auth(participants, organisers) if participants or organisers else None
        from echogen.teaching.pool import PoolLimits
        pool_limits = PoolLimits.parse(args.pool_limits)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.data_root and not Path(args.data_root).is_dir():
        print("error: --data-root: not a folder", file=sys.stderr)
        return 2
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    engines = S.Engines(device, args.precision, args.compile)
    try:
        engines.get(choices[0])
    except (WeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # everything this run writes for users lives in one private temporary folder, removed at exit,
    # on SIGTERM (systemd, docker stop) and on Ctrl-C; gradio's upload cache is inside it
    run = G.RunDirs()
    atexit.register(run.close)
    os.environ["GRADIO_TEMP_DIR"] = str(run.uploads)
    G.install_signal_handlers()
    if os.environ.get("ECHOGEN_TRACEBACKS") != "1":      # gradio prints a traceback per refused request
        sys.stderr = G.QuietTracebacks(sys.stderr, private=[run.root])
    try:
        return _serve(args, device, choices, auth, engines, limits, run, organisers, pool_limits, loopback)
    except KeyboardInterrupt:
        return 0
    finally:
        run.close()


def _serve(args, device, choices, auth, engines, limits, run, organisers, pool_limits, loopback) -> int:
    teaching, teaching_off = None, None
    if not args.no_teaching:
        import sqlite3

        from echogen.teaching.db import ResultsDBError
        from echogen.ui.teaching import TeachingState
        try:
            teaching = TeachingState(Path(args.results), engines, choices, organisers=set(organisers),
                                     local_organiser=auth is None and loopback and not args.share,
                                     data_root=args.data_root, limits=pool_limits,
                                     disk_budget_mb=args.teaching_disk_mb, tolerance=args.gate_tolerance,
                                     export_root=run.exports, media_root=run.root)
            run.on_close(teaching.close)
        except (OSError, sqlite3.Error, ResultsDBError) as e:
            why = e if isinstance(e, ResultsDBError) else getattr(e, "strerror", None) or type(e).__name__
            teaching_off = G.scrub(f"the results folder '{Path(args.results).name}' cannot be used ({why})")
            log(f"teaching tabs off: {teaching_off} (results folder: {args.results})")
        if teaching is not None and teaching.db.notice:
            log(f"WARNING: {teaching.db.notice}")
        if teaching is not None and auth is None and not teaching.local_organiser:
            log("note: no --organiser login: the teaching tabs' organiser tools are off (serving beyond this "
                "machine without a login)")
    uploads = G.Uploads(run.uploads, S.list_examples(EXAMPLES))
    ttl = max(60.0, args.upload_ttl_min * 60)
    janitor = G.Janitor([(run.results, args.keep_results_min * 60, args.max_results_mb),
                         (run.exports, 600.0, 100.0)], every=60.0,
                        extra=[lambda: uploads.sweep(ttl)] + ([teaching.db.flush] if teaching is not None else [])).start()
    run.on_close(janitor.stop)
    serving = Serving(uploads=uploads,
                      budget_s=args.time_budget or None, janitor=janitor,
                      upload_ttl_s=int(max(60, args.upload_ttl_min * 60)))
    demo = build_app(engines, choices, run.results, teaching, teaching_off=teaching_off, serving=serving)
    from echogen.ui.layout import CSS, THEME
    conc = args.concurrency or (2 if device.type == "cuda" else 1)
    demo.queue(default_concurrency_limit=conc, max_size=64)
    from starlette.middleware import Middleware
    middleware = [Middleware(G.TrackUploads, uploads=uploads)]
    if auth:
        middleware.append(Middleware(G.ThrottleLogins, throttle=G.LoginThrottle()))
    app_kwargs = {"middleware": middleware}
    ssl = {}
    if args.ssl_certfile:
        ssl = {"ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile, "ssl_verify": False,
               "ssl_keyfile_password": args.ssl_keyfile_password}
    run.on_close(demo.close)
    demo.launch(share=args.share, server_name=args.host, server_port=args.port, auth=auth,
                prevent_thread_lock=True, theme=THEME, css=CSS, allowed_paths=[str(run.results), str(run.exports)],
                footer_links=["api"], show_error=True, quiet=True, max_file_size=int(limits.max_file_mb * 2 ** 20),
                app_kwargs=app_kwargs, **ssl)
    print(f"EchoGen serving at {demo.local_url} ({device}; weights: {Path(choices[0]).name}; "
          f"{conc} generation(s) at a time; inputs up to {limits.max_file_mb:g} MB, {limits.max_megapixels:g} Mpx "
          f"a frame, {limits.max_frames} frames; {args.time_budget:g} s a request)", flush=True)
    if args.share:
        if demo.share_url:
            print(f"public share link: {demo.share_url}", flush=True)
        else:
            print("--share: no public link could be made (offline, or the share tunnel could not be "
                  f"downloaded); serving locally only at {demo.local_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    if teaching is not None and teaching.db.flush():
        log(f"WARNING: {teaching.db.unsaved_message()}")
    return 0


def run() -> None:
    """Console script `echogen-app` (= python app.py)."""
    sys.exit(main())
