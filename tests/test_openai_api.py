"""app.openai_api: the OpenAI-compatible API, driven by the official `openai` client against a real
server on a loopback port, over tiny models made here (tests/gradio_support)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from app.limits import sampling_params
from app.hosts import allowed_hosts
from app.openai_api import create_app, server_app
from gradio_support import SLOW_PYTHON, free_port, make_checkpoints, make_workbench

ROOT = Path(__file__).resolve().parent.parent
PIZZA = "What is the best pizza in Rome?"


class Spy:
    """Wraps a Workbench and remembers the cancel event of each generation it starts."""

    def __init__(self, wb) -> None:
        self._wb, self.cancels = wb, []

    def __getattr__(self, name):
        return getattr(self._wb, name)

    def chat(self, *args, **kwargs):
        self.cancels.append(args[5])
        return self._wb.chat(*args, **kwargs)

    def story(self, *args, **kwargs):
        self.cancels.append(args[3])
        return self._wb.story(*args, **kwargs)


def serve(app) -> tuple[uvicorn.Server, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "the API server did not start"
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    wb = make_workbench(tmp_path_factory.mktemp("api"))
    spy = Spy(wb)
    server, url = serve(server_app(create_app(spy), allowed_hosts("127.0.0.1")))
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
    yield spy, client, url
    server.should_exit = True


def test_models_lists_the_catalogue_with_its_modes(api):
    _, client, _ = api
    ids = [m.id for m in client.models.list()]
    assert {"python", "story", "python:python", "story:chat", "story:story"} <= set(ids)
    assert client.models.retrieve("story:chat").owned_by == "gpt-workbench"


def test_chat_completion_is_the_workbench_answer_with_usage(api):
    spy, client, _ = api
    r = client.chat.completions.create(model="story:chat", seed=7, max_tokens=8, temperature=0.9,
                                       messages=[{"role": "user", "content": "Hello there"}])
    text = r.choices[0].message.content
    direct = spy._wb.chat("Hello there", [], "chat", spy.models.default("story"),
                          sampling_params(seed=7, max_new_tokens=8, temperature=0.9))
    assert text == direct.text()
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == direct.stats.new_tokens <= 8
    assert r.usage.prompt_tokens == direct.stats.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model_extra["workbench"]["mode"] == "chat"


def test_streaming_gives_the_same_text_and_usage(api):
    _, client, _ = api
    kwargs = dict(model="story:chat", seed=3, max_tokens=12,
                  messages=[{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Tell me about cats"}])
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["workbench"]["refused"] is False
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 12


def test_the_python_assistant_refuses_through_the_api_too(api):
    _, client, _ = api
    # "python" is the catalogue's Python-assistant model, so its default mode is "python".
    r = client.chat.completions.create(model="python", max_tokens=8,
                                       messages=[{"role": "user", "content": PIZZA}])
    assert r.choices[0].message.content.startswith("Sorry, I'm a Python assistant")
    extra = r.model_extra["workbench"]
    assert extra["mode"] == "python" and extra["refused"] and extra["reason"]
    assert r.usage.completion_tokens == 0
    # The same question in free chat (mode field) is answered by the model.
    r = client.chat.completions.create(model="python", max_tokens=4, extra_body={"mode": "chat"},
                                       messages=[{"role": "user", "content": PIZZA}])
    assert not r.model_extra["workbench"]["refused"] and r.usage.completion_tokens >= 1


def test_text_completions_stream_and_stop(api):
    spy, client, _ = api
    r = client.completions.create(model="story", prompt="Once upon a time", max_tokens=10, seed=2,
                                  echo=True)
    direct = spy._wb.story("Once upon a time", spy.models.default("story"),
                           sampling_params(max_new_tokens=10, seed=2)).text()
    assert r.choices[0].text == "Once upon a time" + direct
    parts = list(client.completions.create(model="story", prompt="Once upon a time",
                                           max_tokens=10, seed=2, stream=True))
    assert "".join(p.choices[0].text for p in parts) == direct
    # A stop string ends the text before it.
    cut = direct[3:6]
    r = client.completions.create(model="story", prompt="Once upon a time", max_tokens=10, seed=2,
                                  stop=[cut])
    assert cut not in r.choices[0].text and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("kwargs, status, message", [
    (dict(temperature=5), 400, "temperature must be between 0 and 2"),
    (dict(max_tokens=0), 400, "max_tokens must be between 1 and 1024"),
    (dict(extra_body={"top_k": "many"}), 400, "top_k must be a number"),
    (dict(top_p=0), 400, "top_p must be between"),
    (dict(n=2), 400, "n is not supported"),
    (dict(stop=["a", "b", "c", "d", "e"]), 400, "stop takes at most 4"),
    (dict(extra_body={"mode": "poetry"}), 400, "mode must be one of"),
    (dict(model="nope"), 404, "unknown model 'nope'"),
    (dict(model="../../etc"), 404, "unknown model"),
    (dict(messages=[{"role": "assistant", "content": "hi"}]), 400, "last message must be"),
    (dict(messages=[{"role": "user", "content": "x" * 9000}]), 400, "the limit is 8,000"),
])
def test_bad_values_get_the_openai_error_shape(api, kwargs, status, message):
    _, client, _ = api
    args = dict(model="story:chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**{**args, **kwargs})
    assert e.value.status_code == status
    error = e.value.body
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_a_malformed_body_is_a_400_too(api):
    _, _, url = api
    r = httpx.post(f"{url}/chat/completions", json={"model": "story"})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/completions", json={"model": "story:chat", "prompt": "x"})
    assert r.status_code == 400 and "use /v1/chat/completions" in r.json()["error"]["message"]


def test_a_client_that_leaves_cancels_its_generation(api):
    spy, _, url = api
    body = {"model": "story:story", "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": "Once upon a time"}]}
    for stream in (True, False):
        spy.cancels.clear()
        if stream:  # read the first event, then hang up
            with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as r:
                assert r.status_code == 200 and next(r.iter_bytes())
        else:  # give up waiting for the whole answer
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/chat/completions", json={**body, "stream": False},
                           timeout=httpx.Timeout(5, read=0.3))
        deadline = time.time() + 20
        while not (spy.cancels and spy.cancels[0].is_set()):
            assert time.time() < deadline, f"stream={stream}: not cancelled"
            time.sleep(0.05)


def test_engine_serve_command(tmp_path):
    """`python -m engine serve` runs the same API (a real process on a loopback port)."""
    make_checkpoints(tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port),
                             "--checkpoints", str(tmp_path / "checkpoints"), "--runs",
                             str(tmp_path / "runs"), "--device", "cpu", "--models", "story"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        deadline = time.time() + 60
        while True:
            try:
                ids = [m.id for m in client.models.list()]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert ids == ["story", "story:python", "story:chat", "story:story"]
        with pytest.raises(openai.NotFoundError, match="not offered by this server"):
            client.completions.create(model="python", prompt="x")
    finally:
        proc.terminate()
        proc.wait(10)


def test_engine_serve_refuses_a_model_it_does_not_list(tmp_path, capsys):
    from engine.__main__ import main

    make_checkpoints(tmp_path)
    assert main(["serve", "--models", "nope", "--checkpoints", str(tmp_path / "checkpoints"),
                 "--device", "cpu"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_a_password_is_the_api_key_and_strangers_are_refused(api, monkeypatch):
    _, client, url = api
    monkeypatch.setenv("WORKBENCH_PASSWORD", "s3cret")
    with pytest.raises(openai.AuthenticationError, match="needs an API key"):
        client.models.list()  # api_key="unused"
    keyed = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
    assert any(m.id == "story" for m in keyed.models.list())
    monkeypatch.delenv("WORKBENCH_PASSWORD")
    # The apps' Host allowlist and cross-site refusal (app.hosts.HostGuard) guard the API too.
    assert httpx.get(f"{url}/models", headers={"Host": "evil.example"}).status_code == 400
    r = httpx.post(f"{url}/completions", headers={"Origin": "https://evil.example"},
                   json={"model": "story", "prompt": "x", "max_tokens": 1})
    assert r.status_code == 403


def test_the_gradio_app_serves_the_api_on_its_port(tmp_path):
    """python app.py --api: the same API at /v1 beside the Gradio page."""
    from app.gradio import build_demo, launch

    wb = make_workbench(tmp_path)
    demo = build_demo(wb)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True,
           api=create_app(wb))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model="story:chat", max_tokens=3, seed=1,
                                           messages=[{"role": "user", "content": "hi"}])
        assert r.usage.completion_tokens >= 1
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "gradio" in page.text.lower()
    finally:
        demo.close()


def test_a_full_server_says_busy_with_a_503(tmp_path):
    """The API shares the apps' server-wide limit on generations (engine.serving): beyond its
    queue a request gets 503 in the OpenAI shape, and a place frees when a client leaves."""
    from engine.serving import ServingLimits

    # The slow python model: 1024 tokens take seconds, however quiet the machine.
    wb = make_workbench(tmp_path, python_shape=SLOW_PYTHON,
                        limits=ServingLimits(max_active=1, max_queue=0))
    server, url = serve(server_app(create_app(wb), allowed_hosts("127.0.0.1")))
    body = {"model": "python:story", "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": "Once upon a time"}]}
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as first:
            events = (line for line in first.iter_lines() if line.startswith("data:"))
            next(events), next(events)  # a text delta: it holds the server's one place
            with pytest.raises(openai.APIStatusError) as e:
                client.chat.completions.create(model="story:chat", max_tokens=2,
                                               messages=[{"role": "user", "content": "hi"}])
            assert e.value.status_code == 503 and e.value.body["code"] == "server_busy"
            assert e.value.response.headers["retry-after"]
        deadline = time.time() + 20  # the first client left: its place comes free
        while True:
            try:
                client.chat.completions.create(model="story:chat", max_tokens=2,
                                               messages=[{"role": "user", "content": "hi"}])
                break
            except openai.APIStatusError:
                assert time.time() < deadline, "the place of a client that left never freed"
                time.sleep(0.2)
    finally:
        server.should_exit = True
