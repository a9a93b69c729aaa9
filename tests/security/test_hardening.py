"""Issue 12's fixes, each checked without a server (tests/security/test_probes.py replays the
same attacks on running servers): builder dataset names, per-request exposure, Host/Origin
names, sign-in, input limits, malformed run files, damaged checkpoints, failed writes, and text
that reaches Markdown every visitor sees."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from app.auth import check_login
from app.catalog import ModelCatalog
from app.hosts import allowed_hosts, host_allowed, origin_allowed
from app.limits import (MAX_HISTORY_CHARS, SAMPLING, TRAINING, check, clean_history, clean_text,
                        sampling_params)
from app.markdown import plain
from app.policy import RequestExposure, request_is_local, training_policy
from app.training import TrainingDesk
from app.training_data import data_source
from engine import data as D
from engine.checkpoint import list_checkpoints, load_checkpoint
from engine.fileio import atomic_file
from engine.jobs import Job
from engine.train import code_block, train
from engine.train_config import TrainConfig

LOCAL = ("127.0.0.1", {"host": "127.0.0.1:7860"})


# --- hf: names that are `datasets`' own file loaders --------------------------------------------

@pytest.mark.parametrize("name", ["text", "json", "csv", "parquet", "arrow", "imagefolder",
                                  "pandas", "webdataset", "TEXT"])
def test_builder_names_are_refused_everywhere(name, tmp_path):
    with pytest.raises(D.DataError, match="built-in .* file loader"):
        D.open_source(f"hf:{name}")
    with pytest.raises(ValueError, match="reads files from this machine"):
        data_source(None, None, name, [], tmp_path)
    with pytest.raises(ValueError, match="reads files from this machine"):
        data_source(None, None, f"hf:{name}:default", [], tmp_path)


def test_hub_dataset_names_still_pass(tmp_path):
    assert data_source(None, None, "roneneldan/TinyStories", [], tmp_path) == \
        "hf:roneneldan/TinyStories"
    assert data_source(None, None, "wikitext:wikitext-2-raw-v1", [], tmp_path) == \
        "hf:wikitext:wikitext-2-raw-v1"


# --- exposure per request ----------------------------------------------------------------------

@pytest.mark.parametrize("client,headers,local", [
    ("127.0.0.1", {"host": "localhost:7860"}, True),
    ("::1", {"host": "[::1]:7860"}, True),
    ("127.0.0.1", {"host": "127.0.0.1"}, True),
    ("192.168.1.5", {"host": "localhost:7860"}, False),  # another machine
    ("127.0.0.1", {"host": "localhost", "x-forwarded-for": "203.0.113.9"}, False),  # nginx
    ("127.0.0.1", {"host": "localhost", "forwarded": "for=203.0.113.9"}, False),
    ("127.0.0.1", {"host": "localhost", "x-forwarded-host": "me.example"}, False),
    ("127.0.0.1", {"host": "abcd.ngrok.app"}, False),  # a tunnel keeping the public Host
    ("127.0.0.1", {"host": "localhost", "cf-connecting-ip": "203.0.113.9"}, False),
    ("127.0.0.1", {}, False),  # no Host at all: in doubt
    (None, {"host": "localhost"}, False),
])
def test_a_request_is_local_only_when_nothing_says_otherwise(client, headers, local):
    assert request_is_local(client, headers) is local


def test_training_and_large_models_follow_the_request(tmp_path, monkeypatch):
    for var in ("WORKBENCH_ALLOW_TRAINING", "WORKBENCH_ALLOW_LARGE_MODELS", "SPACE_ID"):
        monkeypatch.delenv(var, raising=False)
    current = {"request": LOCAL}
    exposure = RequestExposure(False, lambda: current["request"])
    models = ModelCatalog(tmp_path / "runs", tmp_path / "none", exposed=exposure)
    desk = TrainingDesk(tmp_path / "runs", tmp_path / "data", models, exposed=exposure)
    assert desk.policy().allowed and "gpt2-xl" in [s for _, s in models.choices()]
    current["request"] = ("127.0.0.1", {"host": "localhost", "x-forwarded-for": "203.0.113.9"})
    assert not desk.policy().allowed and "proxy or tunnel" in desk.policy().reason
    assert "gpt2-xl" not in [s for _, s in models.choices()]
    with pytest.raises(ValueError, match="WORKBENCH_ALLOW_LARGE_MODELS"):
        models.resolve("gpt2-xl")
    with pytest.raises(PermissionError):
        desk.start("cpu-demo", hf_name="roneneldan/TinyStories")
    monkeypatch.setenv("WORKBENCH_ALLOW_TRAINING", "1")  # the owner's explicit opt-in
    assert desk.policy().allowed
    # Outside a request (the page built at start-up) the server's own setting decides.
    current["request"] = None
    assert not RequestExposure(False, lambda: None)() and RequestExposure(True, lambda: None)()
    assert not training_policy(RequestExposure(True, lambda: LOCAL), environ={}).allowed


def test_routes_behind_the_guard_are_judged_per_request_too():
    """A route that is not a Gradio event (the OpenAI-compatible API on the Gradio port) reads
    its request from HostGuard."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from app import hosts
    from app.gradio.security import current_request

    exposure = RequestExposure(False, current_request)
    app = Starlette(routes=[Route("/", lambda request: JSONResponse({"exposed": exposure()}))])
    client = TestClient(hosts.HostGuard(app, allowed_hosts(None, environ={})),
                        base_url="http://localhost", client=("127.0.0.1", 5000))
    assert client.get("/").json() == {"exposed": False}
    assert client.get("/", headers={"X-Forwarded-For": "203.0.113.9"}).json() == {"exposed": True}
    assert hosts.current_request() is None  # nothing left behind outside a request


def test_chainlit_reads_the_session_from_its_socket_not_from_engineio(monkeypatch):
    """engineio's environ says REMOTE_ADDR 127.0.0.1 for every client; the real address and
    headers are in the ASGI scope the socket connected with."""
    import sys
    from types import SimpleNamespace

    from app.chainlit.security import current_request

    context_var = sys.modules["chainlit.context"].context_var  # (chainlit.context is a proxy)

    def session(client, headers):
        scope = {"client": (client, 5000),
                 "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
        environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "asgi.scope": scope}
        context_var.set(SimpleNamespace(session=SimpleNamespace(environ=environ)))

    exposure = RequestExposure(False, current_request)
    before = context_var.set(None)
    try:
        assert current_request() is None  # no session: start-up
        session("127.0.0.1", {"host": "localhost:8000"})
        assert current_request() == ("127.0.0.1", {"host": "localhost:8000"}) and not exposure()
        session("127.0.0.1", {"host": "localhost:8000", "x-forwarded-for": "203.0.113.9"})
        assert exposure()
        session("198.51.100.4", {"host": "localhost:8000"})
        assert exposure()
    finally:
        context_var.reset(before)


def test_the_gradio_launch_carries_the_guards(monkeypatch):
    import gradio as gr

    from app.gradio import layout, security
    from app.training_data import MAX_UPLOAD_BYTES

    monkeypatch.setenv("WORKBENCH_PASSWORD", "pw")
    with gr.Blocks() as demo:
        gr.Markdown("x")
    seen = {}
    monkeypatch.setattr(demo, "launch", lambda **kw: seen.update(kw))
    layout.launch(demo, host="0.0.0.0", share=False, allowed_hosts="box.lan")
    assert demo.delete_cache == security.UPLOAD_CLEANUP  # old uploads are deleted
    assert seen["max_file_size"] == MAX_UPLOAD_BYTES and seen["auth"]("any", "pw")
    guard = seen["app_kwargs"]["middleware"][0]
    assert guard.cls.__name__ == "HostGuard" and "box.lan" in guard.kwargs["hosts"]
    assert security.body_limit("/gradio_api/upload") > MAX_UPLOAD_BYTES > \
        security.body_limit("/gradio_api/queue/join")


def test_status_hides_paths_pids_and_logs_from_visitors(tmp_path):
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"state": "failed", "pid": 4242, "error": "boom"}))
    (run / "train.log").write_text(f"Traceback: {run}/secret.py\nerror: boom\n")
    (tmp_path / "runs" / "current-job.json").write_text(json.dumps({"run_dir": str(run)}))
    current = {"request": LOCAL}
    exposure = RequestExposure(False, lambda: current["request"])
    desk = TrainingDesk(tmp_path / "runs", tmp_path / "data",
                        ModelCatalog(tmp_path / "runs", tmp_path / "none"), exposed=exposure)
    mine = desk.status()
    assert mine["pid"] == 4242 and mine["run_dir"] == str(run) and "secret.py" in mine["log"]
    current["request"] = ("10.0.0.7", {"host": "localhost"})
    theirs = desk.status()
    assert theirs["run"] == "demo" and theirs["state"] == "failed"
    assert theirs["pid"] is None and theirs["run_dir"] is None and theirs["log"] is None
    assert str(tmp_path) not in json.dumps(theirs)


# --- names and origins -------------------------------------------------------------------------

def test_allowed_hosts_default_to_loopback_and_grow_by_setting():
    env = {}
    hosts = allowed_hosts("0.0.0.0", environ=env)
    assert hosts == ("localhost", "127.0.0.1", "::1")
    assert host_allowed("localhost:7860", hosts) and host_allowed("[::1]:80", hosts)
    assert not host_allowed("evil.example:7860", hosts) and not host_allowed(None, hosts)
    assert not host_allowed("localhost.evil.example", hosts)
    env = {"WORKBENCH_ALLOWED_HOSTS": "wb.example.org, *.corp.example", "SPACE_HOST": "me-wb.hf.space"}
    hosts = allowed_hosts("10.0.0.2", share=True, extra="box.lan", environ=env)
    for name in ("wb.example.org", "a.corp.example", "me-wb.hf.space", "x1.gradio.live", "10.0.0.2",
                 "box.lan"):
        assert host_allowed(name, hosts), name
    assert not host_allowed("corp.example.evil.com", hosts)


def test_on_a_space_the_host_is_not_checked_but_the_origin_is(monkeypatch):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from app.hosts import HostGuard

    monkeypatch.setenv("SPACE_ID", "me/wb")
    hosts = allowed_hosts("0.0.0.0", environ={"SPACE_HOST": "me-wb.hf.space"})
    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"), methods=["GET", "POST"])])
    client = TestClient(HostGuard(app, hosts), base_url="http://10.0.3.7:7860")
    assert client.get("/").status_code == 200  # the platform's own requests
    assert client.post("/", headers={"Origin": "https://me-wb.hf.space"}).status_code == 200
    assert client.post("/", headers={"Origin": EVIL_ORIGIN}).status_code == 403
    monkeypatch.delenv("SPACE_ID")
    assert TestClient(HostGuard(app, hosts), base_url="http://10.0.3.7:7860").get("/"
                                                                              ).status_code == 400


EVIL_ORIGIN = "https://evil.example"


def test_origins():
    hosts = allowed_hosts(None, environ={})
    assert origin_allowed(None, hosts)  # scripts send none; browsers always do cross-site
    assert origin_allowed("http://localhost:8000", hosts)
    assert origin_allowed("http://127.0.0.1:5173", hosts)
    for bad in ("https://evil.example", "null", "http://127.0.0.1.evil.example", "file://"):
        assert not origin_allowed(bad, hosts), bad


def test_sign_in(monkeypatch):
    env = {"WORKBENCH_PASSWORD": "s3cret-token"}
    assert check_login("anyone", "s3cret-token", env)
    assert not check_login("anyone", "wrong", env) and not check_login("anyone", "", env)
    env["WORKBENCH_USER"] = "owner"
    assert check_login("owner", "s3cret-token", env) and not check_login("x", "s3cret-token", env)
    assert not check_login("owner", "s3cret-token", {})  # no password set: nothing to sign in to


# --- input limits ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [10**400, -(10**400), "1e400"])
def test_huge_numbers_get_a_message(value):
    with pytest.raises(ValueError, match="top_k"):
        check("top_k", value, SAMPLING["top_k"])
    with pytest.raises(ValueError, match="seed"):
        sampling_params(seed=value)
    with pytest.raises(ValueError, match="max_steps"):
        check("max_steps", value, TRAINING["max_steps"])


def test_an_oversized_text_is_refused_before_it_is_scanned(monkeypatch):
    import app.limits as limits

    class Watch:
        def sub(self, *a):
            raise AssertionError("scanned")
    monkeypatch.setattr(limits, "_CONTROL", Watch())
    with pytest.raises(ValueError, match="10,000,000 characters long"):
        clean_text("x" * 10_000_000, "message")


def test_history_total_is_limited_before_any_work():
    big = [{"role": "user" if i % 2 == 0 else "assistant", "content": "y" * 7999}
           for i in range(200)]
    t = time.perf_counter()
    with pytest.raises(ValueError, match=f"limit is {MAX_HISTORY_CHARS:,}"):
        clean_history(big)
    assert time.perf_counter() - t < 1.0
    assert len(clean_history(big[-40:])) == 40  # a long but reasonable history is fine


def test_streaming_does_not_reclean_the_history_per_token(monkeypatch):
    """A 200-message history was cleaned and rendered again for every streamed token."""
    import app.gradio.chat as chat
    import app.limits as limits

    calls = {"n": 0}
    real = limits.clean_text

    def counting(text, *a, **k):
        calls["n"] += 1
        return real(text, *a, **k)

    from engine.assistant import Reply

    class Stream:  # what the engine streams: 300 tokens, no stats
        stats = None

        def __iter__(self):
            yield from ["tok "] * 300

    class WB:
        def chat(self, *a, **k):
            return Reply(mode="chat", stream=Stream())

    monkeypatch.setattr(limits, "clean_text", counting)
    monkeypatch.setattr(chat, "clean_text", counting)
    class EveryToken(chat.Throttle):  # the display throttle lets every token through
        def ready(self):
            return self.interval >= 1 and super().ready() or self.interval < 1

    monkeypatch.setattr(chat, "Throttle", EveryToken)
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
               for i in range(200)]
    outputs = list(chat.respond(WB(), "hello", history, "Free chat", "m"))
    assert len(outputs) > 300
    # Two cleanings of the history (check and first display), then a few messages per token.
    assert calls["n"] < 3 * 200 + 5 * 300, calls["n"]
    states = [o[1] for o in outputs[1:-1]]
    assert sum(isinstance(s, list) for s in states) < 10  # the raw history at most once a second
    assert outputs[-1][1][-1]["content"].startswith("tok tok")


# --- run directories the app reads -------------------------------------------------------------

def test_a_dangling_symlink_in_runs_does_not_stop_the_app(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "gone").symlink_to(tmp_path / "nowhere")
    models = ModelCatalog(runs, tmp_path / "none")
    assert [s for _, s in models.choices()][:1] == ["gpt2"]
    desk = TrainingDesk(runs, tmp_path / "data", models)
    assert desk.resumable_runs() == [] and desk.status()["state"] == "idle"


MALFORMED = [
    {"type": "train", "step": "7", "loss": 1.0, "time": 1.0},  # a step that is text
    {"type": "train", "loss": 1.0, "time": 1.0},  # no step
    {"type": "train", "step": 3, "loss": "low", "time": 2.0},
    {"type": "train", "step": 4, "loss": 1.0, "time": True},
    {"type": "eval", "step": 2},  # no val_loss
    {"type": "sample", "step": 2, "prompt": ["x"], "text": 5},
    {"type": 3}, [1, 2], "text", 12,
]


def test_malformed_metrics_lines_do_not_break_progress(tmp_path):
    run = tmp_path / "runs" / "odd"
    run.mkdir(parents=True)
    good = [{"type": "start", "step": 0, "max_steps": 10, "time": 0.0},
            {"type": "train", "step": 1, "max_steps": 10, "loss": 2.0, "time": 1.0},
            {"type": "train", "step": 2, "max_steps": 10, "loss": 1.5, "time": 2.0},
            {"type": "eval", "step": 2, "val_loss": 1.7, "time": 2.5}]
    lines = [json.dumps(e) for e in good[:2] + MALFORMED + good[2:]]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "job.json").write_text(json.dumps({"state": "running", "pid": None}))
    (tmp_path / "runs" / "current-job.json").write_text(json.dumps({"run_dir": str(run)}))
    desk = TrainingDesk(tmp_path / "runs", tmp_path / "data",
                        ModelCatalog(tmp_path / "runs", tmp_path / "none"))
    st = desk.status()
    assert st["step"] == 2 and st["loss"] == 1.5 and st["val_loss"] == 1.7
    assert [p["step"] for p in st["curve"] if p["split"] == "train"] == [1, 2]
    assert Job(run).status()["step"] == 2


# --- damaged checkpoints -----------------------------------------------------------------------

def _tiny(tmp_path, **overrides) -> TrainConfig:
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(f"word{i % 50}" for i in range(3000)), encoding="utf-8")
    values = dict(data=str(text), out=str(tmp_path / "run"), n_layer=1, n_head=2, n_embd=16,
                  block_size=16, tokenizer="bpe", vocab_size=280, batch_size=2, max_steps=4,
                  warmup_steps=1, eval_every=2, eval_batches=1, save_every=2, keep_last=3,
                  log_every=1, sample_tokens=4, cache_dir=str(tmp_path / "cache"), seed=0)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpts")
    train(_tiny(tmp), progress=False)
    return tmp


@pytest.mark.parametrize("damage", ["empty", "foreign", "tensor"])
def test_resume_falls_back_past_a_bad_optimizer_file(two_checkpoints, tmp_path, damage, capsys):
    import shutil
    shutil.copytree(two_checkpoints, tmp_path, dirs_exist_ok=True)
    run = tmp_path / "run"
    steps = list_checkpoints(run)
    assert [s for s, _ in steps] == [2, 4]
    newest = steps[-1][1] / "optimizer.pt"
    if damage == "empty":
        newest.write_bytes(b"")
    elif damage == "foreign":  # a real optimizer file of another model
        other = torch.optim.AdamW(torch.nn.Linear(3, 3).parameters())
        torch.save({"optimizer": other.state_dict(), "rng_cpu": torch.get_rng_state()}, newest)
    else:
        torch.save(torch.zeros(3), newest)
    train(_tiny(tmp_path, max_steps=6), resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"skipping checkpoint {steps[-1][1]}" in err
    starts = [e for e in D_read(run) if e["type"] == "start"]
    assert starts[-1]["step"] == 2  # continued from the older checkpoint


def D_read(run: Path) -> list[dict]:
    from engine.metrics import read_metrics
    return read_metrics(run / "metrics.jsonl")


def test_inference_falls_back_past_a_truncated_newest_checkpoint(two_checkpoints, tmp_path):
    import shutil
    shutil.copytree(two_checkpoints, tmp_path, dirs_exist_ok=True)
    run = tmp_path / "run"
    newest = list_checkpoints(run)[-1][1] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    ckpt = load_checkpoint(run)
    assert ckpt.path == list_checkpoints(run)[0][1]
    for _, path in list_checkpoints(run):
        (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(Exception, match="none of its 2 checkpoints can be read"):
        load_checkpoint(run)


# --- failed writes -----------------------------------------------------------------------------

def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    # Tokenizing data that turns out bad part way: no .tmp left in the cache.
    bad = tmp_path / "qa.jsonl"
    bad.write_text((json.dumps({"instruction": "a", "output": "b"}) + "\n") * 299 + "{not json\n")
    from engine.tokenizer import GPT2Tokenizer
    cache = tmp_path / "cache"
    with pytest.raises(D.DataError, match="line 300"):
        D.prepare(D.open_source(str(bad)), GPT2Tokenizer(), cache, block_size=16)
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]


# --- text every visitor's browser renders -------------------------------------------------------

def test_errors_quoting_uploaded_keys_are_plain_text_in_markdown():
    key = "![x](http://evil.example/p.png) <img src=x> [click](http://evil.example) **b**"
    shown = plain(f"missing fields; got {key}")
    import markdown_it
    html = markdown_it.MarkdownIt().render(shown)
    assert "<img" not in html and "<a " not in html and "<strong>" not in html
    assert "http://evil.example/p.png" in html  # still readable as text


def test_model_card_sample_cannot_leave_its_code_block(two_checkpoints):
    import markdown_it
    sample = "x\n```\n![t](http://evil.example/a.png)\n````\n<img src=y>"
    html = markdown_it.MarkdownIt().render(code_block(sample))
    assert "<img" not in html and html.count("<pre>") == 1 and "evil.example/a.png" in html
    card = (list_checkpoints(two_checkpoints / "run")[-1][1] / "README.md").read_text()
    assert "## Sample\n\n```text\n" in card
