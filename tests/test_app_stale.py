"""A result must belong to the input on screen: a generation or sweep still running when the page's input changes
(a new upload or example, ✕, a refused file) shows nothing when it ends (issue 19: a new user pressed ✕ right
after a live generation and the old loops came back). The real app's event functions, built in-process with a
tiny random bundle; the input change arrives through the app's own clear event in the middle of sampling."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from echogen.ui import support as S
from tests.test_app import STEPS, make_bundle, make_inputs


def _fns(demo) -> dict:
    return {getattr(f.fn, "__name__", ""): f.fn for f in demo.fns.values() if f.fn is not None}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from echogen.ui.app import build_app
    tmp = tmp_path_factory.mktemp("stale")
    bundle = make_bundle(tmp / "tiny")
    (tmp / "out").mkdir()
    demo = build_app(S.Engines("cpu"), [str(bundle)], tmp / "out")
    return SimpleNamespace(demo=demo, fns=_fns(demo), inputs=make_inputs(tmp), bundle=bundle)


def _weights(app) -> str:
    from echogen.ui.app import weight_labels
    return next(iter(weight_labels([str(app.bundle)])))


def _changing_input_midway(monkeypatch, app, req, fn_name):
    """Patch the sampling entry point so that, at the first sampler step, the page's input changes (the app's
    clear event, as a new upload or ✕ sends it). Both take the progress callback as their 9th argument."""
    real = getattr(S, fn_name)

    def patched(*a, **k):
        a, fired = list(a), []
        cb = a[8]

        def cb2(*x):
            if not fired:
                fired.append(1)
                app.fns["clear_results"](None, _weights(app), request=req)   # ✕
            return cb(*x)
        a[8] = cb2
        return real(*a, **k)
    monkeypatch.setattr(S, fn_name, patched)


def test_generation_for_an_input_changed_midway_shows_nothing(app, monkeypatch):
    req = SimpleNamespace(session_hash="page-1", username=None, headers={}, client=None)
    args = [str(app.inputs["png"]), 0, 40, ["spatial", "temporal"], _weights(app), 3, *STEPS]
    quiet = lambda *a, **k: None  # noqa: E731
    out = app.fns["generate"](*args, request=req, progress=quiet)
    assert out[0]["value"].endswith(".mp4")                   # unchanged input: the loop is shown
    _changing_input_midway(monkeypatch, app, req, "run_generation")
    out = app.fns["generate"](*args, request=req, progress=quiet)
    assert all(u == {"__type__": "update"} for u in out)      # changed midway: nothing replaces the cleared page
    other = SimpleNamespace(session_hash="page-2", username=None, headers={}, client=None)
    out = app.fns["generate"](*args, request=other, progress=quiet)
    assert out[0]["value"].endswith(".mp4")                   # another page's change never drops this page's loop


def test_sweep_for_an_input_changed_midway_shows_nothing(app, monkeypatch):
    req = SimpleNamespace(session_hash="page-3", username=None, headers={}, client=None)
    args = [str(app.inputs["png"]), 0, "30, 60", ["spatial", "temporal"], _weights(app), 3, *STEPS]
    quiet = lambda *a, **k: None  # noqa: E731
    _changing_input_midway(monkeypatch, app, req, "run_sweep")
    out = app.fns["sweep"](*args, request=req, progress=quiet)
    assert all(u == {"__type__": "update"} for u in out)
