"""The attacks of issue 12 replayed on running servers: `python app.py` and `chainlit run
chainlit_app.py`, both on loopback ports, started side by side, probed with plain HTTP, raw
sockets and a Socket.IO client (no browser).

What a web page on another site, a DNS-rebinding page, a visitor behind a proxy or a client with
oversized bodies can do is checked against what docs/security.md promises."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from gradio_support import free_port, make_checkpoints, make_data
from gradio_support import stop_process_group as _stop

ROOT = Path(__file__).resolve().parents[2]
EVIL = "https://evil.example"
PROXIED = {"X-Forwarded-For": "203.0.113.9"}
PASSWORD = "probe-pass"  # both servers start with sign-in on (WORKBENCH_PASSWORD)
USER = ("owner", PASSWORD)
SECURITY_ENV = ("WORKBENCH_ALLOW_TRAINING", "WORKBENCH_ALLOW_LARGE_MODELS", "SPACE_ID",
                "SPACE_HOST", "WORKBENCH_ALLOWED_HOSTS", "WORKBENCH_PASSWORD", "WORKBENCH_USER")


def _runs_with_traps(root: Path) -> Path:
    """A runs folder with a dangling symlink and, as the current job, a run whose
    metrics.jsonl has well-formed lines of the wrong shape."""
    runs = root / "runs"
    run = runs / "odd"
    run.mkdir(parents=True)
    (runs / "gone").symlink_to(root / "nowhere")
    events = [{"type": "start", "step": 0, "max_steps": 10, "time": 0.0},
              {"type": "train", "step": 1, "max_steps": 10, "loss": 2.0, "time": 1.0},
              {"type": "train", "step": "x", "loss": "low", "time": 2.0},
              {"type": "train", "loss": 1.0}, {"type": "eval", "step": 1}, [1], "text",
              {"type": "train", "step": 2, "max_steps": 10, "loss": 1.5, "time": 3.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "job.json").write_text(json.dumps({"state": "stopped", "pid": 999999}))
    (runs / "current-job.json").write_text(json.dumps({"run_dir": str(run)}))
    return runs


def _wait(proc, url: str, log: Path, headers=None) -> None:
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both apps on loopback ports, started at once (they take seconds each to import)."""
    root = tmp_path_factory.mktemp("probes")
    checkpoints, data, runs = make_checkpoints(root), make_data(root), _runs_with_traps(root)
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_ENV}
    env.update({"WORKBENCH_CHECKPOINTS": str(checkpoints), "WORKBENCH_RUNS": str(runs),
                "WORKBENCH_DATA": str(data), "GRADIO_TEMP_DIR": str(root / "uploads"),
                "WORKBENCH_PASSWORD": PASSWORD, "WORKBENCH_USER": USER[0]})
    app_root = root / "chainlit-root"
    (app_root / ".chainlit").mkdir(parents=True)
    (app_root / ".chainlit" / "config.toml").symlink_to(ROOT / ".chainlit" / "config.toml")
    (app_root / "public").symlink_to(ROOT / "public")
    (app_root / "chainlit.md").symlink_to(ROOT / "chainlit.md")
    gport, cport = free_port(), free_port()
    glog, clog = root / "gradio.log", root / "chainlit.log"
    with open(glog, "wb") as gout, open(clog, "wb") as cout:
        gradio = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(gport),
             "--checkpoints", str(checkpoints), "--runs", str(runs), "--device", "cpu",
             "--allowed-hosts", "workbench.lan", "--api"],
            cwd=ROOT, env=env, stdout=gout, stderr=subprocess.STDOUT, start_new_session=True)
        chainlit = subprocess.Popen(
            [sys.executable, "-m", "chainlit", "run", str(ROOT / "chainlit_app.py"), "--headless",
             "--host", "127.0.0.1", "--port", str(cport)],
            cwd=app_root, env={**env, "CHAINLIT_APP_ROOT": str(app_root),
                               "WORKBENCH_DEVICE": "cpu"},
            stdout=cout, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(gradio, f"http://127.0.0.1:{gport}/", glog)
        _wait(chainlit, f"http://127.0.0.1:{cport}/", clog)
        yield {"gradio": f"http://127.0.0.1:{gport}", "chainlit": f"http://127.0.0.1:{cport}",
               "gport": gport, "cport": cport, "uploads": root / "uploads", "root": root}
    finally:
        _stop(gradio)
        _stop(chainlit)


@pytest.fixture(scope="module")
def client(servers):
    return Client(servers["gradio"] + "/", verbose=False, auth=USER)


def _gradio_session(servers) -> httpx.Client:
    """An HTTP client signed in to the Gradio app (its login form)."""
    session = httpx.Client(base_url=servers["gradio"])
    r = session.post("/login", data={"username": USER[0], "password": PASSWORD})
    assert r.status_code == 200, r.text
    return session


def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes, return the start of the response (for requests no HTTP client sends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return s.recv(4096)


# --- Gradio --------------------------------------------------------------------------------------

def test_gradio_refuses_foreign_host_names(servers):
    """DNS rebinding: evil.example resolves to 127.0.0.1, the page's requests say Host: evil."""
    url = servers["gradio"] + "/"
    r = httpx.get(url, headers={"Host": f"evil.example:{servers['gport']}"})
    assert r.status_code == 400 and "WORKBENCH_ALLOWED_HOSTS" in r.json()["error"]
    r = httpx.post(servers["gradio"] + "/gradio_api/queue/join", json={},
                   headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert httpx.get(url, headers={"Host": f"localhost:{servers['gport']}"}).status_code == 200
    assert httpx.get(url, headers={"Host": "workbench.lan"}).status_code == 200  # --allowed-hosts


def test_gradio_refuses_cross_site_uploads(servers):
    up = servers["gradio"] + "/gradio_api/upload"
    before = sorted(servers["uploads"].rglob("*")) if servers["uploads"].exists() else []
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        r = httpx.post(up, files={"files": ("x.txt", b"forged")}, headers=headers)
        assert r.status_code == 403, headers
    after = sorted(servers["uploads"].rglob("*")) if servers["uploads"].exists() else []
    assert after == before  # nothing stored
    r = _gradio_session(servers).post("/gradio_api/upload", files={"files": ("x.txt", b"mine")},
                                      headers={"Origin": servers["gradio"]})
    assert r.status_code == 200 and r.json()[0].endswith("x.txt")


def test_gradio_sign_in(servers):
    """WORKBENCH_PASSWORD: nothing but the login page without it."""
    assert httpx.get(servers["gradio"] + "/config").status_code == 401
    with pytest.raises(Exception):
        Client(servers["gradio"] + "/", verbose=False, auth=("owner", "guess"))
    r = httpx.post(servers["gradio"] + "/login", data={"username": "owner", "password": "guess"})
    assert r.status_code == 400
    assert _gradio_session(servers).get("/config").status_code == 200


def test_gradio_refuses_oversized_bodies(servers):
    r = httpx.post(servers["gradio"] + "/gradio_api/queue/join", content=b"x" * 9_000_000,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    # A 300 MB upload announced by its Content-Length is refused before any byte is read.
    head = _raw(servers["gport"], (
        "POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 300000000\r\n\r\n"
    ).encode())
    assert head.startswith(b"HTTP/1.1 413")


def test_gradio_refuses_builder_dataset_names(client):
    form = dict(preset="cpu-demo", source="Hugging Face dataset", corpus=None, upload=None,
                run_name="", init_from="(a new model)", param_7=2, param_8=0.001, param_9=2,
                param_10=16, api_name="/train_start")
    for name in ("text", "json", "csv", "parquet"):
        with pytest.raises(AppError, match="reads files from this machine"):
            client.predict(hf_name=name, **form)
    assert client.predict(api_name="/train_status")["run"] == "odd"  # nothing started


def test_gradio_judges_each_request(servers, client):
    """The server listens on 127.0.0.1, but a visitor through a proxy or tunnel is not local."""
    local = [spec for _, spec in client.predict(api_name="/models")]
    assert "gpt2-xl" in local
    status = client.predict(api_name="/train_status")
    assert status["pid"] == 999999 and status["run_dir"].endswith("odd")
    proxied = Client(servers["gradio"] + "/", verbose=False, headers=PROXIED, auth=USER)
    assert "gpt2-xl" not in [spec for _, spec in proxied.predict(api_name="/models")]
    status = proxied.predict(api_name="/train_status")
    assert status["pid"] is None and status["run_dir"] is None
    with pytest.raises(AppError, match="proxy or tunnel"):
        proxied.predict(preset="cpu-demo", source="Bundled corpus", corpus=None, upload=None,
                        hf_name="", run_name="", init_from="(a new model)", param_7=2,
                        param_8=0.001, param_9=2, param_10=16, api_name="/train_start")


def _chat_args(client, **args) -> dict:
    """/chat's arguments: these, the first listed model, and an empty value for any other text
    field the chat form has (the free-chat system prompt)."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/chat"]
    names = [p["parameter_name"] for p in api["parameters"]]
    args.setdefault("model", client.predict(api_name="/models")[0][1])
    return {**{n: "" for n in names if n == "system"}, **args}


def test_the_api_on_the_gradio_port_judges_each_request(servers):
    """/v1 (the OpenAI-compatible API, python app.py --api) is not a Gradio event: it reads the
    request HostGuard recorded."""
    key = {"Authorization": f"Bearer {PASSWORD}"}
    url = servers["gradio"] + "/v1/models"
    assert httpx.get(url).status_code == 401  # the password is the API key
    mine = json.dumps(httpx.get(url, headers=key).json())
    theirs = json.dumps(httpx.get(url, headers={**key, **PROXIED}).json())
    assert "gpt2-xl" in mine and "gpt2-xl" not in theirs and "gpt2-medium" in theirs


def test_gradio_refuses_oversized_history(client):
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": "y" * 7999}
               for i in range(200)]
    t = time.perf_counter()
    with pytest.raises(AppError, match="chat history is"):
        client.predict(**_chat_args(client, message="hi", history=history,
                                    mode_label="Free chat", temperature=0, max_new_tokens=4),
                       api_name="/chat")
    assert time.perf_counter() - t < 20


def test_gradio_survives_symlinks_and_malformed_metrics(client):
    """The server started with a dangling symlink in runs/ and a current run whose metrics
    have lines of the wrong shape; its progress reads past them."""
    status = client.predict(api_name="/train_status")
    assert status["state"] == "stopped" and status["step"] == 2 and status["loss"] == 1.5
    assert [p["step"] for p in status["curve"]] == [1, 2]


# --- Chainlit ------------------------------------------------------------------------------------

def test_chainlit_refuses_foreign_host_names(servers):
    url = servers["chainlit"] + "/"
    assert httpx.get(url, headers={"Host": "evil.example"}).status_code == 400
    assert httpx.get(url, headers={"Host": f"localhost:{servers['cport']}"}).status_code == 200
    r = httpx.post(servers["chainlit"] + "/project/file", content=b"x" * 9_000_000)
    assert r.status_code == 413


def _polling_handshake(servers, origin: str | None, host: str | None = None) -> httpx.Response:
    headers = {"Origin": origin} if origin else {}
    if host:
        headers["Host"] = host
    return httpx.get(servers["chainlit"] + "/ws/socket.io/?EIO=4&transport=polling",
                     headers=headers)


def test_chainlit_socket_checks_the_origin(servers):
    """Chainlit's own socket server accepts any Origin; a page on another site must not reach it
    (the first request of a Socket.IO connection is this polling handshake)."""
    assert _polling_handshake(servers, EVIL).status_code == 400
    assert _polling_handshake(servers, "null").status_code == 400
    ok = _polling_handshake(servers, f"http://localhost:{servers['cport']}")
    assert ok.status_code == 200 and ok.text.startswith("0{")
    assert _polling_handshake(servers, None).status_code == 200  # scripts send no Origin


def _chainlit_login(servers, password: str) -> httpx.Response:
    return httpx.post(servers["chainlit"] + "/login",
                      data={"username": USER[0], "password": password})


def _socket_connects(servers, origin: str, cookie: str | None) -> bool:
    """A full Socket.IO connection over a WebSocket, as Chainlit's page opens it."""
    import socketio

    sio = socketio.Client(reconnection=False)
    auth = {"sessionId": f"probe-{time.time()}", "clientType": "webapp", "userEnv": "{}",
            "chatProfile": None, "threadId": None}
    headers = {"Origin": origin, **({"Cookie": cookie} if cookie else {})}
    try:
        sio.connect(servers["chainlit"], socketio_path="/ws/socket.io", transports=["websocket"],
                    headers=headers, auth=auth, wait_timeout=10)
        return sio.connected
    except socketio.exceptions.ConnectionError:
        return False
    finally:
        sio.disconnect()


def test_chainlit_sign_in_and_socket_origin(servers):
    """The password callback guards the socket; a signed-in browser's cookie does not let a
    page on another site in."""
    assert _chainlit_login(servers, "guess").status_code == 401
    r = _chainlit_login(servers, PASSWORD)
    assert r.status_code == 200
    cookie = "; ".join(f"{k}={v}" for k, v in r.cookies.items())
    assert cookie
    local = f"http://127.0.0.1:{servers['cport']}"
    assert not _socket_connects(servers, local, None)  # not signed in
    assert _socket_connects(servers, local, cookie)
    assert not _socket_connects(servers, EVIL, cookie)  # a page elsewhere, with the cookie


def test_chainlit_with_a_password_has_no_other_way_in(servers):
    """With WORKBENCH_PASSWORD set, the header sign-in that spares the local user a form is not
    offered (not even to this machine), and saved conversations need the password."""
    assert httpx.post(servers["chainlit"] + "/auth/header").status_code == 400
    threads = {"pagination": {"first": 20}, "filter": {}}
    assert httpx.post(servers["chainlit"] + "/project/threads", json=threads).status_code == 401
    cookies = _chainlit_login(servers, PASSWORD).cookies
    r = httpx.post(servers["chainlit"] + "/project/threads", json=threads, cookies=cookies)
    assert r.status_code == 200 and r.json()["data"] == []
