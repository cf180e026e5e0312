"""EchoGen app: one echo frame + a chosen ejection fraction -> beating echo loops, with an EF readout.

    python app.py [--share] [--host 0.0.0.0] [--port 7860] [--weights DIR] [--device cpu|cuda]
                  [--auth user:pass] [--random-init]

The Gradio app (the work happens in echogen/ui/support.py); app.py at the top is its entry point. Named API endpoints
"generate" and "sweep" make every action callable with gradio_client.
"""
from __future__ import annotations

import os

# before gradio is imported: no analytics, no hub calls (these machines may be offline)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import atexit  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

from echogen.ef import SWEEP_MAX, parse_efs  # noqa: E402
from echogen.ui import support as S  # noqa: E402

MAX_SLOTS = 4          # stage columns shown (the largest preset has four stages)
EXAMPLES = ROOT / "assets" / "examples"


def stage_choices(engine) -> list[tuple[str, str]]:
    return [(f"{s.name} — {S.STAGE_ROLE.get(s.name, 'refinement')}", s.name) for s in engine.stages[1:]]


def build_app(engines: S.Engines, choices: list[str], out_root: Path, teaching=None):
    import gradio as gr

    from echogen.ui.layout import banner_html, check_html, input_error_types, readout_html, stage_label, weights_md
    errors = input_error_types()
    first = engines.get(choices[0])
    n_cols = max(S.stage_count(c) for c in choices)   # one loop column per stage of the largest cascade

    def fail(e):
        raise gr.Error(str(e).splitlines()[0], duration=12) from None

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
        return [toggles, weights_md(engine), banner_html(engine)] + ups

    # ---- events -------------------------------------------------------------------------------
    def on_input(path, weights):
        """New upload/example: frame picker, conditioning frame preview, EF default from a clip."""
        if not path:
            return gr.update(visible=False, value=0), None, "", gr.update()
        try:
            frames, info = S.read_input(path)
            frame, pinfo = S.conditioning_frame(path, 0)
        except errors as e:
            gr.Warning(str(e).splitlines()[0])
            return gr.update(visible=False, value=0), None, f"⚠️ {e}", gr.update()
        n = len(frames)
        ef = gr.update()
        note = S.input_summary({**info, **pinfo}, 0)
        try:
            est = S.clip_ef(engines.get(weights), frames, float(info.get("fps") or 0))
        except Exception as e:  # an estimate is a convenience; never block the upload on it
            est, note = None, note + f" · (EF estimate failed: {e})"
        if est is not None:
            ef = gr.update(value=round(min(90, max(10, est))))
            note += f" · regressor reads EF {est:.1f}% from this clip (slider set to it)"
        picker = gr.update(visible=n > 1, maximum=max(1, n - 1), value=0)
        return picker, S.display_frames(frame[None])[0], note, ef

    def on_frame(path, index):
        if not path:
            return None, ""
        try:
            frame, info = S.conditioning_frame(path, int(index))
        except errors as e:
            fail(e)
        return S.display_frames(frame[None])[0], S.input_summary(info, int(index))

    def on_check(path, weights):
        """Upload check (issue 19): does it look like an apical-4-chamber echo? A warning with the score;
        generation stays allowed."""
        if not path:
            return ""
        try:
            return check_html(S.input_check(engines.get(weights), path).to_dict())
        except Exception:  # noqa: BLE001  unreadable (on_input says why) or the check failed: advice only
            return ""

    def show_overlay(on, shown):
        """The displayed loops with (on) or without the traced LV contour; unchanged before a generation."""
        shown = shown or {}
        paths = shown.get("overlay" if on else "plain") or []
        if on and not paths and shown.get("plain"):
            gr.Info("This weights bundle has no LV tracer: there is no contour to draw.")
        return [gr.update(value=paths[i]) if i < len(paths) and paths[i] else gr.update() for i in range(n_cols)]

    def _setup(path, frame_index, weights, stages, seed, slots):
        if not path:
            raise gr.Error("Upload an echo frame, DICOM or clip (or pick an example) first.")
        try:
            engine = engines.get(weights)
            frame, _ = S.conditioning_frame(path, int(frame_index or 0))
        except errors as e:
            fail(e)
        st = engine.stages
        steps = {s.name: int(slots[2 * i]) for i, s in enumerate(st) if i < MAX_SLOTS}
        guidance = {s.name: float(slots[2 * i + 1]) for i, s in enumerate(st) if i < MAX_SLOTS}
        enabled = [s for s in (stages or []) if s in {x.name for x in st}]
        return engine, frame, enabled, steps, guidance, int(seed if seed is not None else 0)

    def generate(input_file, frame_index, ef, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3,
                 progress=gr.Progress()):
        engine, frame, enabled, steps, guidance, seed = _setup(input_file, frame_index, weights, stages, seed,
                                                               [s0, g0, s1, g1, s2, g2, s3, g3])
        names = [s.name for s in engine.stages if s.is_base or s.name in enabled]
        progress(0, desc="starting")

        def cb(stage, step, total):
            k = names.index(stage)
            progress((k + step / total) / len(names), desc=f"{stage}: step {step}/{total}")

        try:
            check = S.input_check(engine, input_file, int(frame_index or 0))
            g = S.run_generation(engine, frame, float(ef), enabled, steps, guidance, seed,
                                 S.new_result_dir(out_root), cb, check=check)
        except errors as e:
            fail(e)
        vids, caps = [], []
        shown = {"plain": [str(g.display[r.name]) for r in g.stages],
                 "overlay": [str(g.overlay[r.name]) for r in g.stages if r.name in g.overlay]}
        for i in range(n_cols):
            if i < len(g.stages):
                r = g.stages[i]
                vids.append(gr.update(value=str(g.display[r.name]), visible=True))
                caps.append(gr.update(value=stage_label(r, engine), visible=True))
            else:
                vids.append(gr.update(value=None, visible=False))
                caps.append(gr.update(value="", visible=False))
        return vids + caps + [readout_html(g.readout), str(g.plot), [str(f) for f in g.files], g.readout, shown]

    def sweep(input_file, frame_index, efs, stages, weights, seed, s0, g0, s1, g1, s2, g2, s3, g3,
              progress=gr.Progress()):
        engine, frame, enabled, steps, guidance, seed = _setup(input_file, frame_index, weights, stages, seed,
                                                               [s0, g0, s1, g1, s2, g2, s3, g3])
        try:
            values = parse_efs(efs, max_count=SWEEP_MAX)
        except ValueError as e:
            fail(e)
        names = [s.name for s in engine.stages if s.is_base or s.name in enabled]

        def cb(i, stage, step, total):
            k = names.index(stage)
            progress((i + (k + step / total) / len(names)) / len(values),
                     desc=f"EF {values[i]:g}%: {stage} step {step}/{total}")

        try:
            grid, rows, files, _ = S.run_sweep(engine, frame, values, enabled, steps, guidance, seed,
                                               S.new_result_dir(out_root), cb)
        except errors as e:
            fail(e)
        return str(grid), rows, [str(f) for f in files]

    # ---- layout -------------------------------------------------------------------------------
    with gr.Blocks(title="EchoGen", delete_cache=(1800, 3600)) as demo:
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
                        with gr.Row():
                            preview = gr.Image(label="Conditioning frame (112×112, preprocessed)", height=224,
                                               width=224,
                                               interactive=False, buttons=[], elem_id="preview")
                        input_info = gr.Markdown(elem_classes="eg-small", elem_id="input-info")
                        a4c = gr.HTML("", elem_id="a4c-box")      # the apical-4-chamber check of the upload
                    with gr.Column(scale=5, elem_classes="eg-card"):
                        gr.Markdown("### 2 · Target")
                        ef = gr.Slider(10, 90, value=55, step=1, label="Ejection fraction (EF, %)", elem_id="ef-slider",
                                       info="2021 ESC: preserved ≥ 50 %, mildly reduced 41–49 %, reduced ≤ 40 %")
                        toggles = gr.CheckboxGroup(label="Cascade stages after the base (off = plain upsampling)",
                                                   choices=stage_choices(first),
                                                   value=[s.name for s in first.stages[1:]],
                                                   elem_id="stage-toggles")
                        weights = gr.Dropdown(choices=[(S.RANDOM_INIT if c == S.RANDOM_INIT else Path(c).name, c)
                                                       for c in choices], value=choices[0], label="Weights bundle")
                        wmd = gr.Markdown(weights_md(first), elem_classes="eg-small")
                        with gr.Accordion("Advanced: sampling steps, guidance, seed", open=False):
                            with gr.Row():
                                seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, elem_id="seed")
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
                            lv_overlay = gr.Checkbox(False, label="Show the traced LV contour (LV tracer)",
                                                     elem_id="lv-overlay", scale=0)
                            shown = gr.State({})     # display loops of the last generation: plain / with contour
                        with gr.Row(equal_height=False):
                            readout = gr.HTML("<div id='ef-readout' class='eg-readout muted'>"
                                              "No loop generated yet.</div>",
                                              label="EF readout")
                            plot = gr.Image(label="LV volume (LV tracing) or blood-pool area over time",
                                            show_label=False, height=240,
                                            interactive=False, buttons=[], elem_id="curve")
                        gr.Markdown("Each loop is one heart cycle, end-diastole to end-diastole, so it repeats "
                                    "without a jump; the whole generated clip is among the downloads.",
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
                        grid = gr.Video(label="Sweep (asked EF and the EF read back above each loop)", autoplay=True,
                                        loop=True, interactive=False, elem_id="sweep-grid")
                        table = gr.Dataframe(headers=["requested EF %", "read EF %", "difference"], interactive=False,
                                             label="Sweep readout", elem_id="sweep-table")
                        sweep_files = gr.File(label="Downloads", file_count="multiple", interactive=False)
            if teaching is not None:   # Build pool / EF trainer / Blinded review (echogen/ui/teaching.py)
                from echogen.ui.teaching import add_teaching_tabs
                add_teaching_tabs(teaching)

        # ---- wiring ---------------------------------------------------------------------------
        file_in.change(on_input, [file_in, weights], [frame_pick, preview, input_info, ef], api_name=False)
        file_in.change(on_check, [file_in, weights], [a4c], api_name="check_input")
        frame_pick.release(on_frame, [file_in, frame_pick], [preview, input_info], api_name=False)
        weights.change(lambda w: slot_updates(engines.get(w)), [weights], [toggles, wmd, banner] + slots,
                       api_name=False)
        dice.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_name=False)
        # one progress bar (on the readout), not one per output component
        go.click(generate, [file_in, frame_pick, ef, toggles, weights, seed] + slots,
                 videos + captions + [readout, plot, files, details, shown], api_name="generate",
                 show_progress_on=[readout]).then(
            lambda on, st: show_overlay(True, st) if on else [gr.update()] * n_cols, [lv_overlay, shown], videos,
            api_name=False, show_progress="hidden")
        lv_overlay.change(show_overlay, [lv_overlay, shown], videos, api_name="overlay", show_progress="hidden")
        go_sweep.click(sweep, [file_in, frame_pick, efs, toggles, weights, seed] + slots,
                       [grid, table, sweep_files], api_name="sweep", show_progress_on=[grid])
    return demo


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="EchoGen app: one echo frame + an EF -> generated echo loops")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (needs internet)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the whole network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--weights", default=None, help="weights bundle folder (default: bundles under assets/weights)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when present)")
    p.add_argument("--auth", action="append", default=None,
                   help="participant login user:pass (repeat, or comma-separate, for several); required to open the app")
    p.add_argument("--organiser", action="append", default=None,
                   help="organiser (teacher) login user:pass: builds pools and review sets, sees summaries, exports "
                        "and keys (repeatable). Without any login on 127.0.0.1 the local user is the organiser")
    p.add_argument("--data-root", default=None,
                   help="folder of EchoNet-format datasets the organiser may draw real clips from (nothing outside it)")
    p.add_argument("--pool-limits", default=None,
                   help="bounds per build, e.g. frames=10,efs=8,per_frame=3,cases=120,real=40 (these are the defaults)")
    p.add_argument("--teaching-disk-mb", type=float, default=5000.0,
                   help="the teaching folder (--results) may not grow past this (default 5000 MB)")
    p.add_argument("--gate-tolerance", type=float, default=7.0,
                   help="pool quality gate: EF points allowed between the requested EF and the EF read from a "
                        "generated loop (default 7)")
    p.add_argument("--random-init", action="store_true",
                   help="offer the demo preset with random weights (UNTRAINED noise, for testing the app)")
    p.add_argument("--results", default="results",
                   help="teaching results folder (pools, review sets, answers database; default ./results)")
    p.add_argument("--no-teaching", action="store_true", help="only the generation tab (no teaching tabs)")
    from echogen.cli.main import add_speed_arguments
    add_speed_arguments(p)
    p.add_argument("--concurrency", type=int, default=None,
                   help="generations run at once (default 1 on CPU, 2 on CUDA); others wait in the queue")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from echogen.device import pick_device, tune_cpu_malloc
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
        limits = PoolLimits.parse(args.pool_limits)
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
    out_root = Path(tempfile.mkdtemp(prefix="echogen-app-"))
    atexit.register(shutil.rmtree, out_root, ignore_errors=True)
    teaching = None
    if not args.no_teaching:
        from echogen.ui.teaching import TeachingState
        teaching = TeachingState(Path(args.results), engines, choices, organisers=set(organisers),
                                 local_organiser=auth is None and loopback and not args.share,
                                 data_root=args.data_root, limits=limits, disk_budget_mb=args.teaching_disk_mb,
                                 tolerance=args.gate_tolerance)
        if auth is None and not teaching.local_organiser:
            print("note: no --organiser login: the teaching tabs' organiser tools are off (serving beyond this "
                  "machine without a login)", flush=True)
    demo = build_app(engines, choices, out_root, teaching)
    from echogen.ui.layout import CSS, THEME
    conc = args.concurrency or (2 if device.type == "cuda" else 1)
    demo.queue(default_concurrency_limit=conc, max_size=64)
    demo.launch(share=args.share, server_name=args.host, server_port=args.port, auth=auth,
                prevent_thread_lock=True, theme=THEME, css=CSS, allowed_paths=[str(out_root)],
                footer_links=["api"], show_error=True, quiet=True)
    print(f"EchoGen serving at {demo.local_url} ({device}; weights: {choices[0]}; "
          f"{conc} generation(s) at a time)", flush=True)
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
    return 0


def run() -> None:
    """Console script `echogen-app` (= python app.py)."""
    sys.exit(main())
