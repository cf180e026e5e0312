"""The hardened classroom server, run as a real process (slow tier; issue #22).

One app per situation, each on a free local port with its temporary folders under the test's own TMPDIR:
- plain: /config and messages hold no server path, an upload's name never reaches a message or the
  console, an API upload is deleted after use, seed=2**64 is a project-worded error, SIGTERM removes
  every temporary folder;
- an unusable results folder: the app starts, Generate works, the teaching tabs say why they are off;
- HTTPS + --auth + a corrupt results database + a tiny time budget: the corrupt file is moved aside
  loudly, failed logins back off (429), a request past its budget is stopped with a one-line message.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from test_app import STEPS, make_bundle, make_inputs, start_app, stop_app

ROOT = Path(__file__).resolve().parent.parent


def _gen(client, path, bundle="bundle", seed=7, **kw):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), 0, 45, ["spatial", "temporal"], bundle, seed, *STEPS,
                          api_name="/generate", **kw)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hard")
    make_bundle(tmp / "bundle")
    files = make_inputs(tmp)
    named = tmp / "DOE_JANE_19500101.png"                 # a patient-named upload
    shutil.copy(files["png"], named)
    bad = tmp / "ROE_RICHARD_19610203.png"
    bad.write_bytes(b"\x89PNG garbage" * 50)
    (tmp / "tmp").mkdir()
    proc, url, _ = start_app(["--weights", str(tmp / "bundle")], tmp / "app.log", env={"TMPDIR": str(tmp / "tmp")})
    yield {"url": url, "proc": proc, "tmp": tmp, "named": named, "bad": bad, "log": tmp / "app.log", **files}
    stop_app(proc)


@pytest.fixture(scope="module")
def client(plain):
    from gradio_client import Client
    return Client(plain["url"], verbose=False)


def test_config_and_messages_hold_no_server_paths(plain, client):
    import httpx
    from gradio_client.exceptions import AppError
    cfg = httpx.get(plain["url"] + "config", timeout=30).text
    for secret in (str(ROOT), str(plain["tmp"]), "/tmp/", "/work/", "/home/"):
        assert secret not in cfg, secret
    assert '"bundle"' in cfg                                          # the bundle is offered by name
    with pytest.raises(AppError) as e:                                # a path the server does not offer
        _gen(client, plain["png"], bundle="/etc/passwd")
    assert str(ROOT) not in str(e.value) and "bundle" in str(e.value)


def test_upload_names_never_reach_messages_or_the_console(plain, client):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="the upload: not an image") as e:
        _gen(client, plain["bad"])
    assert "ROE" not in str(e.value)
    out = _gen(client, plain["named"])
    assert out[-1]["requested_ef"] == 45
    stop_log = plain["log"].read_text()
    assert "ROE_RICHARD" not in stop_log and "DOE_JANE" not in stop_log and "Traceback" not in stop_log
    assert "request refused: the upload: not an image" in stop_log    # failures are logged, without the name


def test_api_uploads_are_deleted_after_use(plain, client):
    _gen(client, plain["named"])
    time.sleep(0.5)
    left = [p for p in _files(plain["tmp"] / "tmp") if "DOE_JANE" in p.name or "ROE_RICHARD" in p.name]
    assert left == []


def test_seed_out_of_range_is_project_worded(plain, client):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="seed must be a whole number from 0 to 4294967295"):
        _gen(client, plain["png"], seed=2 ** 64)
    assert "Overflow" not in plain["log"].read_text()


def test_queue_tells_a_waiting_user_its_position(plain):
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status
    slow = [50, 1.0, 50, 1.0, 50, 1.0, 1, 1.0]                        # the tiny bundle's longest request
    c1, c2 = Client(plain["url"], verbose=False), Client(plain["url"], verbose=False)
    args = lambda c: (handle_file(str(plain["png"])), 0, 45, ["spatial", "temporal"], "bundle", 1, *slow)  # noqa: E731
    j1 = c1.submit(*args(c1), api_name="/generate")
    time.sleep(0.5)
    j2 = c2.submit(*args(c2), api_name="/generate")
    seen = []
    t0 = time.time()
    while not j2.done() and not seen and time.time() - t0 < 600:      # hang guard only (a loaded box is slow)
        st = j2.status()
        if st.code == Status.IN_QUEUE:
            seen.append((st.rank, st.queue_size))
        time.sleep(0.1)
    j2.cancel()                                                       # seen: its run would only cost time
    j1.result(timeout=600)
    assert seen and seen[0][0] is not None and seen[0][0] >= 0 and seen[0][1] >= 1   # position in the queue


def test_sigterm_removes_every_temporary_folder(plain, client):
    _gen(client, plain["png"])                                       # results exist now
    runs = list((plain["tmp"] / "tmp").glob("echogen-app-*"))
    assert len(runs) == 1 and _files(runs[0] / "results")
    plain["proc"].terminate()                                        # SIGTERM, as systemd / docker stop
    assert plain["proc"].wait(30) == 0
    assert list((plain["tmp"] / "tmp").glob("echogen-*")) == []      # the run folder and the teaching media


def test_unusable_results_folder_keeps_generate_and_says_why(tmp_path):
    import httpx
    from gradio_client import Client
    make_bundle(tmp_path / "bundle")
    files = make_inputs(tmp_path)
    (tmp_path / "blocker").write_text("a file where the results folder should be")
    proc, url, log = start_app(["--weights", str(tmp_path / "bundle"), "--results", str(tmp_path / "blocker" / "r"),
                                "--max-file-mb", "0.5"], tmp_path / "app.log")
    try:
        assert "teaching tabs off" in log and "Traceback" not in log
        cfg = httpx.get(url + "config", timeout=30).text
        assert "Teaching tabs are off" in cfg and "cannot be used (Not a directory)" in cfg and str(tmp_path) not in cfg
        c = Client(url, verbose=False)
        out = _gen(c, files["png"])
        assert out[-1]["requested_ef"] == 45
        big = tmp_path / "big.png"                                   # over --max-file-mb: stopped at the upload
        big.write_bytes(b"\x89PNG" + b"\0" * 700_000)
        with pytest.raises(Exception, match="exceeds the maximum file size"):     # the client checks first
            _gen(c, big)
        r = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", big.read_bytes())}, timeout=30)
        assert r.status_code == 413                                             # and the server refuses it
    finally:
        stop_app(proc)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a self-signed certificate")
def test_https_auth_throttle_corrupt_db_and_time_budget(tmp_path):
    import httpx
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    make_bundle(tmp_path / "bundle")
    files = make_inputs(tmp_path)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=300)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "results.sqlite").write_bytes(b"overwritten with garbage " * 100)
    proc, url, log = start_app(["--weights", str(tmp_path / "bundle"), "--results", str(tmp_path / "results"),
                                "--auth", "teacher:s3cret", "--ssl-certfile", str(tmp_path / "cert.pem"),
                                "--ssl-keyfile", str(tmp_path / "key.pem"), "--time-budget", "0.001"],
                               tmp_path / "app.log", scheme="https")
    try:
        assert url.startswith("https://")
        assert "WARNING" in log and "moved aside" in log and list((tmp_path / "results").glob("results.sqlite.corrupt-*"))
        with httpx.Client(verify=False, timeout=30) as h:
            assert h.get(url + "config").status_code in (401, 403) or "Teaching" not in h.get(url + "config").text
            codes = [h.post(url + "login", data={"username": "teacher", "password": "wrong"}).status_code
                     for _ in range(4)]
            assert codes == [400, 400, 400, 429]
            r = h.post(url + "login", data={"username": "teacher", "password": "s3cret"})
            assert r.status_code == 429 and "try again in" in r.text     # even the right password waits
            time.sleep(1.2)
            assert h.post(url + "login", data={"username": "teacher", "password": "s3cret"}).status_code == 200
        c = Client(url, auth=("teacher", "s3cret"), verbose=False, ssl_verify=False)
        with pytest.raises(AppError, match="time budget of 0.001 s"):
            _gen(c, files["png"])
    finally:
        stop_app(proc)
