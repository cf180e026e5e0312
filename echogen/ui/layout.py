"""Look and wording of the app: theme, CSS, and the HTML/Markdown snippets it shows (pure functions)."""
from __future__ import annotations

import html

import gradio as gr

from echogen.eval.readout import DISAGREE, disagreement

THEME = gr.themes.Soft(primary_hue="teal", secondary_hue="sky", neutral_hue="slate",
                       font=["DejaVu Sans", "Helvetica", "Arial", "sans-serif"])

CSS = """
#eg-header h1 {margin: 0; font-size: 1.7rem; letter-spacing: .02em;}
#eg-header p {margin: .2rem 0 .4rem 0; opacity: .8;}
.eg-warn {background: #7f1d1d; color: #fff; padding: .5rem .8rem; border-radius: 8px; font-weight: 600;}
.eg-small {font-size: .85rem; opacity: .85;}
.eg-video video {background: #000;}
.eg-readout {display: flex; flex-wrap: wrap; gap: .6rem; padding: .2rem 0;}
.eg-readout.muted {opacity: .6; padding: 1rem;}
/* readout tiles: two columns (asked | read, difference | second reading), each as wide as its key on one line
   when there is room; only a column too narrow for that wraps its keys (balanced, never mid-word) */
.eg-tiles {flex-basis: 100%; display: grid; grid-template-columns: auto 1fr auto; gap: .6rem;}   /* requested, read (with its readers), difference */
@media (max-width: 640px) {.eg-tiles {grid-template-columns: 1fr;}}   /* a phone: one column, values never cut */
.eg-tile {min-width: 0; border-radius: 10px; padding: .55rem .8rem; background: var(--block-background-fill);
          border: 1px solid var(--border-color-primary);}
.eg-tile .k {font-size: .8rem; font-weight: 600; letter-spacing: .01em; opacity: .75; text-wrap: balance;}
.eg-tile .n {font-size: .74rem; opacity: .65; text-wrap: balance;}
.eg-tile .v {font-size: 1.7rem; font-weight: 700; line-height: 1.25; font-variant-numeric: tabular-nums;
             white-space: nowrap;}
.eg-tile.good .v {color: #0f766e;} .eg-tile.warn .v {color: #b45309;} .eg-tile.bad .v {color: #b91c1c;}
.eg-foot {flex-basis: 100%; font-size: .8rem; opacity: .75;}
.eg-caption {text-align: center; font-size: .85rem; margin-top: .3rem;}
.eg-caption p {margin: 0;}
.eg-image-caption {font-size: .85rem; font-weight: 600; margin: 0 0 .2rem 0;}
.eg-image-caption p {margin: 0;}
#lv-overlay label {white-space: nowrap;}
.eg-check {padding: .45rem .7rem; border-radius: 8px; font-size: .88rem;}
.eg-check.bad {background: #fef3c7; color: #7c2d12; border: 2px solid #b45309; font-weight: 600;}
.eg-check.bad ul {font-weight: 400; margin: .3rem 0 0 1rem;}
.eg-check.good {opacity: .8;}
.eg-methods {flex-basis: 100%; font-size: .85rem;}
.eg-methods .eg-history {text-decoration: underline dotted; cursor: help;}
"""


def input_error_types() -> tuple:
    """Errors that mean 'this input / these weights cannot be used': shown as a message, app keeps serving."""
    from echogen.data.inputs import InputError
    from echogen.data.video_io import VideoError
    from echogen.weights.bundle import WeightsError
    return (InputError, VideoError, WeightsError, ValueError)


def ef_class(ef: float) -> str:
    """Category of an EF in the 2021 ESC heart-failure guideline's words, as the EF trainer uses them
    (echogen.teaching.stats, scheme esc2021): reduced <= 40, mildly reduced < 50, preserved."""
    from echogen.teaching.stats import categorise, parse_categories
    return categorise(float(ef), parse_categories("esc2021"))


def _tile(key: str, value: str, cls: str = "", note: str = "") -> str:
    """One readout tile: key (one short line), an optional small note under it (who read it, how), the value."""
    n = f"<div class='n'>{html.escape(note)}</div>" if note else ""
    return (f"<div class='eg-tile {cls}'><div class='k'>{html.escape(key)}</div>{n}"
            f"<div class='v'>{value}</div></div>")


def methods_html(r: dict) -> str:
    """One line per EF reader: the method, its EF, and what its model was trained on."""
    rows = r.get("readers") or []
    if not rows:
        return ("<div id='ef-methods' class='eg-methods'>EF read by: nobody — this bundle has neither an EF "
                "regressor nor an LV tracer.</div>")
    items = []
    for m in rows:
        if m.get("ef") is not None:
            val = f"{m['ef']:.1f}&thinsp;%"
        else:
            val = "no EF" + (f" ({html.escape(m['failed'])})" if m.get("failed") else "")
        extra = ""
        if m["method"] == "LV tracing" and m.get("ef") is not None:
            n = (r.get("loop") or {}).get("frames")
            of = f" of the whole {n}-frame clip" if n else " of the whole clip"
            extra = (f", ED frame {m['ed_frame']}, ES frame {m['es_frame']}{of} (marked on the plot), "
                     f"confidence {m['confidence']:.2f}")
            if m.get("interpolated_frames"):
                extra += f", {m['interpolated_frames']} frame(s) with no plausible trace (interpolated)"
        who = html.escape(m.get("model") or "")
        if m.get("history"):      # the whole training history on hover, the data in a few words on the line
            who = (f"<span class='eg-history' title='{html.escape(m['history'], quote=True)}'>{who}</span>"
                   " (hover: its whole training history)")
        items.append(f"<li><b>{html.escape(m['method'])}</b>: {val}{extra} — {who}</li>")
    return ("<div id='ef-methods' class='eg-methods'>EF read by " + " and ".join(html.escape(m["method"]) for m in rows)
            + ":<ul>" + "".join(items) + "</ul></div>")


def check_html(check: dict | None, elem_id: str = "a4c-check") -> str:
    """The apical-4-chamber input check (echogen.eval.readout.Assessment.to_dict()): a warning box with the
    score and the reasons, or a quiet line when the input looks like an A4C echo; '' without a check."""
    if not check:
        return ""
    if check.get("ok"):
        return (f"<div id='{elem_id}' class='eg-check good'>Input check: looks like an apical-4-chamber echo "
                f"(score {check['score']:.2f} of 1).</div>")
    bad = [x.split(": ", 1)[1] for x in check.get("reasons", []) if x.startswith("warn")]
    return (f"<div id='{elem_id}' class='eg-check bad'>⚠️ This does not look like an apical-4-chamber echo "
            f"(score {check['score']:.2f} of 1). You can still generate, but the loop and any EF read from it "
            "are not meaningful.<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in bad) + "</ul></div>")


def readout_html(r: dict) -> str:
    """The EF readout beside the loops: requested, read back (by which method), difference, and every
    reader with what it was trained on (never a made-up number)."""
    req = r["requested_ef"]
    tiles = [_tile("Requested EF", f"{req:.0f}&thinsp;%")]
    if r.get("read_ef") is None:
        tiles.append(_tile("EF read from the loop", "—"))
        foot = html.escape(r.get("regressor") or "no EF regressor in this bundle")
    else:
        d = r["difference"]
        cls = "good" if abs(d) <= 5 else "warn" if abs(d) <= 10 else "bad"
        by = r.get("read_by") or "EF regressor"
        each = {m["method"]: m["ef"] for m in r.get("readers") or [] if m.get("ef") is not None}
        both = by.startswith("mean") and len(each) == 2
        short = {"EF regressor": "regressor", "LV tracing": "tracing"}
        note = ("mean: " + ", ".join(f"{short.get(m, m)} {e:.1f} %" for m, e in each.items())) if both else f"by {by}"
        tiles.append(_tile("EF read from the loop", f"{r['read_ef']:.1f}&thinsp;%", note=note))
        tiles.append(_tile("Difference", f"{d:+.1f}", cls, note="read − requested"))
        clips = ", ".join(f"{e:.1f}" for e in r.get("per_clip_ef", []))
        foot = (f"Regressor: {html.escape(r.get('regressor', ''))}; per-clip EF {clips}. " if clips else "")
        foot += (f"2021 ESC class: requested {req:.0f}&thinsp;% = {ef_class(req)} EF, read {r['read_ef']:.1f}&thinsp;% = "
                 f"{ef_class(r['read_ef'])} EF.")
        classes = {m: ef_class(e) for m, e in each.items()}
        if len(set(classes.values())) > 1:          # the readers straddle a class boundary: say so, name both
            foot += (" <b>The readers put this loop in different classes: "
                     + ", ".join(f"{html.escape(m)} {each[m]:.1f}&thinsp;% = {c}" for m, c in classes.items())
                     + ".</b>")
        if not 0 <= r["read_ef"] <= 100:
            foot += " <b>The read EF lies outside 0–100 %: the reading cannot be trusted on this loop.</b>"
        gap = disagreement(each.get("EF regressor"), each.get("LV tracing"))
        if gap is not None and gap > DISAGREE:
            foot = (f"<b>⚠ The regressor ({each['EF regressor']:.1f}&thinsp;%) and LV tracing ({each['LV tracing']:.1f}&thinsp;%) "
                    f"disagree by {gap:.1f} points: trust neither reading without looking at the loop (and the traced "
                    "contour).</b><br>") + foot
    loop = r.get("loop") or {}
    if loop and not loop.get("complete", True):
        foot += (f"<br><b>Loop:</b> no whole heart cycle that repeats without a jump was found ({html.escape(str(loop.get('method', '')))}); "
                 "the whole clip is shown and may jump when it repeats.")
    sampled = ", ".join(f"{s['stage']} {s['seconds']:.1f}s" if s["sampled"] else f"{s['stage']} upsampled"
                        for s in r.get("stages", []))
    if r.get("conditioning"):
        foot += f"<br>EF conditioning: {html.escape(r['conditioning'])}."
    foot += f"<br>Weights: {html.escape(r.get('weights', ''))} · seed {r.get('seed')} · {sampled}"
    if r.get("view"):
        foot += f"<br>Input view: {html.escape(r['view'])}."
    if r.get("untrained"):
        foot = "<b style='color:#b91c1c'>UNTRAINED weights — noise, for testing only.</b> " + foot
    check = r.get("input_check")
    warn = check_html(check, "a4c-check-readout") if check and not check.get("ok") else ""
    return (f"<div id='ef-readout' class='eg-readout'>{warn}<div class='eg-tiles'>{''.join(tiles)}</div>{methods_html(r)}"
            f"<div class='eg-foot'>{foot}</div></div>")


def stage_label(r, engine, loop_frames: int | None = None, complete: bool = True, crossfade: int = 0,
                show_fps: float | None = None) -> str:
    """Video caption: what this stage is, whether it was sampled or replaced by upsampling, and what is shown:
    the loop (one heart cycle cut from the generated clip: loop_frames of the stage's frames, its duration)
    or, when no seamless cycle was found (complete False) or no loop length is given, the whole clip; crossfade:
    frames of the last stage's loop blended at the seam (echogen.data.loops.crossfaded), said when > 0; show_fps:
    the rate its loop is played at (support.in_step_fps), said when it is not the stage's own."""
    h = r.video.shape[-1]
    clip = int(r.video.shape[2])
    how = "sampled" if r.sampled else "OFF: upsampled"
    tag = " · UNTRAINED" if engine.untrained else ""
    head = f"**{r.name}** · {h}×{h} px · {how}{tag}"
    if loop_frames is None or not complete or int(loop_frames) >= clip:
        why = " (no seamless heart cycle found)" if loop_frames is not None and not complete else ""
        return f"{head}<br>whole clip{why}: {clip} frames ({clip / r.fps:.2f} s @ {r.fps:g} fps)"
    n = int(loop_frames)
    seam = f", its last {crossfade} frames crossfaded into the first" if crossfade else ""
    step = (f"; played at {show_fps:.1f} fps to stay in step with the last stage's loop"
            if show_fps and abs(show_fps / r.fps - 1) > 0.005 else "")
    return (f"{head}<br>loop: {n} frames ({n / r.fps:.2f} s @ {r.fps:g} fps), one heart cycle cut from the "
            f"{clip}-frame clip{seam}{step}")


def banner_html(engine) -> str:
    if not engine.untrained:
        return ""
    return ("<div class='eg-warn'>UNTRAINED weights: the loops are noise and any EF read from them means "
            "nothing. For testing the app only; pass --weights DIR for a trained bundle.</div>")


def weights_md(engine) -> str:
    from echogen.diffusion.stage import cascade_nfe
    st = " → ".join(f"{s.name} {s.size}px×{s.frames}f" for s in engine.stages)
    reg = "EF regressor: yes" if engine.regressor is not None else engine.regressor_note
    tr = "LV tracer: yes" if getattr(engine, "tracer", None) is not None else "no LV tracer"
    from echogen.ui.live import LIVE_MAX_NFE
    nfe = cascade_nfe(engine.cascade.config)
    kind = "fast (live EF on)" if nfe <= LIVE_MAX_NFE else "multi-step (quality; slower)"
    return f"{engine.label} · **{kind}, {nfe} network evaluations per loop** · {st} · {reg} · {tr}"
