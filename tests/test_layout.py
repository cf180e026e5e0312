"""The package's architecture, checked: the library never reaches up into the CLI or the Gradio layer."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "echogen"
UPPER = ("echogen.cli", "echogen.ui", "gradio", "gradio_client")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def library_modules() -> list[Path]:
    return [p for p in PKG.rglob("*.py") if p.relative_to(PKG).parts[0] not in ("cli", "ui", "__main__.py")]


def test_library_never_imports_cli_ui_or_gradio():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith(UPPER)) for p in library_modules()}
    assert not {k: v for k, v in bad.items() if v}


def test_importing_the_library_loads_no_gradio():
    mods = sorted({".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                   for p in library_modules()})
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client') "
            "or m.startswith(('echogen.cli', 'echogen.ui'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_no_sys_path_edits_anywhere():
    hits = [str(p.relative_to(ROOT)) for d in ("echogen", "train", "bench", "tests") for p in (ROOT / d).rglob("*.py")
            if "sys.path.insert" in p.read_text() and p.name != "test_layout.py"]
    hits += ["app.py"] if "sys.path" in (ROOT / "app.py").read_text() else []
    assert not hits


# ------------------------------------------------------------------------------ the Generate page's wording
def _stage(name="temporal", frames=32, side=112, fps=25.0, sampled=True):
    from types import SimpleNamespace
    return SimpleNamespace(name=name, video=SimpleNamespace(shape=(1, 1, frames, side, side)), fps=fps, sampled=sampled)


def test_stage_caption_gives_the_loops_frames_and_duration_not_the_clips():
    from types import SimpleNamespace
    from echogen.ui.layout import stage_label
    eng = SimpleNamespace(untrained=False)
    cap = stage_label(_stage(), eng, loop_frames=14, complete=True)
    assert "loop: 14 frames" in cap and "0.56 s" in cap and "25 fps" in cap      # 14 frames / 25 fps
    assert "32-frame clip" in cap and "32 frames" not in cap                     # the clip only as its source
    assert "**temporal**" in cap and "112×112 px" in cap and "sampled" in cap
    base = stage_label(_stage("base", 16, 28, 12.5), eng, loop_frames=7, complete=True)
    assert "loop: 7 frames" in base and "0.56 s" in base and "16-frame clip" in base
    # no seamless cycle found: the whole clip is shown, and the caption says so
    whole = stage_label(_stage(), eng, loop_frames=32, complete=False)
    assert "whole clip" in whole and "no seamless heart cycle" in whole and "32 frames" in whole and "1.28 s" in whole
    assert "whole clip" in stage_label(_stage(), eng)                            # no loop length given
    assert "crossfaded" not in cap and "last 4 frames crossfaded" in stage_label(_stage(), eng, 14, True, 4)
    assert "OFF: upsampled" in stage_label(_stage(sampled=False), eng, 14)
    assert "UNTRAINED" in stage_label(_stage(), SimpleNamespace(untrained=True), 14)


def test_readout_tiles_have_short_keys():
    """Tile keys stay short (the reader, the sign convention go in a small note), so they do not wrap word by word."""
    import re
    from echogen.ui.layout import readout_html
    r = {"requested_ef": 35.0, "read_ef": 31.2, "difference": -3.8, "per_clip_ef": [34.1],
         "read_by": "mean of the EF regressor and LV tracing", "regressor": "r", "weights": "w", "seed": 6,
         "stages": [], "readers": [{"method": "EF regressor", "ef": 34.1, "model": "m"},
                                   {"method": "LV tracing", "ef": 28.4, "model": "t", "confidence": 0.9,
                                    "ed_frame": 0, "es_frame": 7}],
         "tracing": {"ef": 28.4}}
    html = readout_html(r)
    keys = re.findall(r"<div class='k'>(.*?)</div>", html)
    assert keys == ["Requested EF", "EF read from the loop", "Difference"]
    assert all(len(k) <= 36 for k in keys)
    assert "<div class='n'>read − requested</div>" in html and "class='eg-tiles'" in html
    assert "<div class='n'>mean: regressor 34.1 %, tracing 28.4 %</div>" in html
    # 34.1 and 28.4 are one ESC class (reduced, <= 40); 41.0 vs 39.0 straddle it: said, both readers named
    assert "different classes" not in html
    r2 = dict(r, read_ef=40.0, difference=5.0, readers=[dict(r["readers"][0], ef=41.0), dict(r["readers"][1], ef=39.0)])
    html = readout_html(r2)
    assert "different classes: EF regressor 41.0&thinsp;% = mildly reduced, LV tracing 39.0&thinsp;% = reduced" in html
    # one reader only: the tile says which
    one = dict(r, read_ef=34.1, difference=-0.9, read_by="EF regressor", readers=r["readers"][:1])
    assert "<div class='n'>by EF regressor</div>" in readout_html(one)
