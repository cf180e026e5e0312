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
