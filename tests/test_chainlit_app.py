"""The Chainlit app's own code, without a browser: the /train grammar and its mapping onto
app.training, profiles and the settings panel, streaming with stop, and showing model text.
(The logic behind them, such as validation, the filter and jobs, is tested in engine's tests.)"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from app.chainlit.render import MarkdownGuard, md_text, reply_footer, stream_into
from app.chainlit.tracker import progress_line
from app.chainlit.training import corpus_path, training_options
from app.chainlit.widgets import (TRAIN_STARTER, chat_profiles, mode_of, parse_train_command,
                                  sampling_values, settings_widgets)
from app.display import ABOUT_MODELS, MODE_LABELS
from app.limits import SAMPLING, sampling_params
from engine.assistant import respond
from engine.sampling import SamplingParams
from gradio_support import make_workbench


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("chainlit"))


# -- the /train command ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["/train", "/train   ", "/train help", "", "help"])
def test_train_without_options_asks_for_help(text):
    assert parse_train_command(text).help


def test_train_command_reads_preset_and_options():
    cmd = parse_train_command('/train cpu-demo steps=20 lr=1e-3 name="my run" Batch-Size=4')
    assert not cmd.help
    assert cmd.options == {"preset": "cpu-demo", "steps": "20", "lr": "1e-3", "name": "my run",
                           "batch_size": "4"}


@pytest.mark.parametrize("text, words", [
    ("/train cpu-demo steps", ["'steps' needs a value", "key=value"]),
    ("/train steps=", ["incomplete"]),
    ("/train steps=1 steps=2", ["given twice"]),
    ('/train data="unclosed', ["quote values"]),
])
def test_train_command_errors_name_the_problem(text, words):
    with pytest.raises(ValueError) as e:
        parse_train_command(text)
    for w in words:
        assert w in str(e.value)


def test_training_options_map_words_onto_the_desk(wb):
    corpus = wb.training.corpora()[0][1]
    assert training_options(wb, {}) == {"preset": "cpu-demo", "data": corpus}
    got = training_options(wb, {"preset": "story-cpu", "steps": "5", "name": "x",
                                "data": "stories/tiny.txt", "from": "story"})
    assert got == {"preset": "story-cpu", "max_steps": "5", "run_name": "x", "data": corpus,
                   "init_from": "story"}
    for name in ("stories", "tiny.txt", "data/stories/tiny.txt", corpus):
        assert corpus_path(name, wb.training.corpora()) == corpus
    with pytest.raises(ValueError, match="unknown corpus data=poems; choose one of: stories/tiny.txt"):
        corpus_path("poems", wb.training.corpora())
    with pytest.raises(ValueError, match="does not know the option 'colour'"):
        training_options(wb, {"colour": "red"})
    with pytest.raises(ValueError, match="given twice"):
        training_options(wb, {"steps": "5", "max_steps": "6"})


def test_training_values_are_checked_before_any_work(wb):
    kwargs = training_options(wb, {"steps": "lots"})
    with pytest.raises(ValueError, match="max_steps must be a number, got 'lots'"):
        wb.training.start(**kwargs)
    assert wb.training.status()["state"] == "idle"


def test_progress_line_and_durations():
    s = {"state": "running", "step": 120, "max_steps": 300, "loss": 3.12345, "val_loss": 3.3,
         "tokens_per_s": 5400.4, "eta_s": 42.4}
    assert progress_line(s) == ("Step 120/300 · loss 3.123 · validation loss 3.300 · "
                                "5,400 tokens/s · ETA 42 s")
    assert progress_line({"state": "starting", "step": 0, "loss": None}).startswith("Preparing")


# -- profiles and settings ---------------------------------------------------------------------

def test_profiles_are_the_engine_modes_each_with_starters():
    profiles = chat_profiles()
    assert [p.name for p in profiles] == list(MODE_LABELS.values())
    assert [mode_of(p.name) for p in profiles] == list(MODE_LABELS)
    assert sum(p.default for p in profiles) == 1 and mode_of(None) == "python"
    for p in profiles:
        assert len(p.starters) >= 3 and p.starters[-1] is TRAIN_STARTER
        assert p.markdown_description.endswith(f"*{ABOUT_MODELS}*")  # the landing view says it
    assert TRAIN_STARTER.command == "train"
    assert parse_train_command("/train " + TRAIN_STARTER.message).help


def test_settings_panel_uses_the_shared_limits_and_keeps_values(wb):
    choices = wb.models.choices()
    widgets = {w.id: w for w in settings_widgets(choices, {})}
    assert list(widgets) == ["model", "temperature", "top_k", "top_p", "repetition_penalty",
                             "max_new_tokens", "seed", "system"]
    assert widgets["model"].initial == choices[0][1]
    for name in ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens"):
        limit = SAMPLING[name]
        w = widgets[name]
        assert (w.min, w.max, w.step, w.initial, w.label, w.description) == \
            (limit.lo, limit.hi, limit.step, limit.default, limit.label, limit.help)
    kept = {w.id: w for w in settings_widgets(choices, {"model": choices[1][1], "top_k": 7,
                                                         "seed": 3})}
    assert kept["model"].initial == choices[1][1] and kept["top_k"].initial == 7
    assert kept["seed"].initial == "3"
    gone = {w.id: w for w in settings_widgets(choices, {"model": "/deleted/run"})}
    assert gone["model"].initial == choices[0][1]
    values = {w.id: w.initial for w in settings_widgets(choices, {"seed": 5})}
    assert sampling_params(**sampling_values(values)).seed == 5


def test_settings_with_a_bad_seed_get_a_clear_message():
    with pytest.raises(ValueError, match="seed must be a number, got 'abc'"):
        sampling_params(**sampling_values({"seed": "abc"}))


# -- streaming and stop ------------------------------------------------------------------------

class FakeMessage:
    """Records what stream_into sends, as Chainlit's Message would show it."""

    def __init__(self, on_token=None) -> None:
        self.content = ""
        self.tokens = 0
        self.on_token = on_token

    async def stream_token(self, token: str) -> None:
        self.content += token
        self.tokens += 1
        if self.on_token:
            self.on_token(self)


def test_stream_into_shows_every_delta(wb):
    ckpt = wb.models.load(wb.models.default("story"))
    reply = respond([{"role": "user", "content": "Once upon a time"}], "story", ckpt,
                    SamplingParams(max_new_tokens=12, seed=3))
    msg = FakeMessage()
    raw = asyncio.run(stream_into(msg, reply, interval=0))
    assert raw == msg.content.replace("!\\[", "![")
    assert reply.stats.new_tokens == 12 and msg.tokens >= 2
    again = respond([{"role": "user", "content": "Once upon a time"}], "story", ckpt,
                    SamplingParams(max_new_tokens=12, seed=3)).text()
    assert raw == again


def test_stream_into_coalesces_fast_tokens(wb):
    """The first delta goes out at once, later ones at most every `interval` seconds."""
    ckpt = wb.models.load(wb.models.default("story"))
    reply = respond([{"role": "user", "content": "Once upon a time"}], "story", ckpt,
                    SamplingParams(max_new_tokens=12, seed=3))
    msg = FakeMessage()
    raw = asyncio.run(stream_into(msg, reply, interval=60))
    assert msg.tokens == 2 and msg.content.replace("!\\[", "![") == raw


def long_story(wb, opening: str, cancel: threading.Event):
    """A story reply long enough (1000 tokens) that only a stop can end it early."""
    ckpt = wb.models.load(wb.models.default("story"))
    return respond([{"role": "user", "content": opening}], "story", ckpt,
                   SamplingParams(max_new_tokens=1000, top_k=0, temperature=1.0, seed=1),
                   cancel=cancel)


def test_stop_ends_generation_within_a_token(wb):
    """The stop button cancels the handler's task: no token is asked for after that."""
    cancel = threading.Event()
    reply = long_story(wb, "Once upon a time", cancel)

    async def run():
        task = None

        def after_three(msg):
            if msg.tokens == 3:
                task.cancel()

        msg = FakeMessage(after_three)
        task = asyncio.create_task(stream_into(msg, reply, interval=0))
        with pytest.raises(asyncio.CancelledError):
            await task
        return msg

    # asyncio.run returns once its worker threads are joined: a token that was being computed
    # at the click has finished by then, and nothing is computed after it.
    msg = asyncio.run(run())
    assert msg.tokens == 3
    assert reply.stats.new_tokens <= 4  # at most the one token being computed at the click


def test_cancel_event_ends_generation_between_tokens(wb):
    """on_stop sets the session's cancel event, which the engine checks between tokens."""
    cancel = threading.Event()
    reply = long_story(wb, "Once", cancel)
    msg = FakeMessage(lambda m: cancel.set() if m.tokens == 2 else None)
    asyncio.run(stream_into(msg, reply, interval=0))
    assert reply.stats.finish_reason == "cancelled"
    assert msg.tokens <= 3 and reply.stats.new_tokens <= 3


# -- untrusted text ----------------------------------------------------------------------------

def test_markdown_images_are_shown_as_text_even_split_across_deltas():
    guard = MarkdownGuard()
    out = "".join(guard(d) for d in ["see ", "!", "[x](http://evil/p.png) and ![y", "](z)"])
    assert out == "see !\\[x](http://evil/p.png) and !\\[y](z)"
    assert "![" not in out.replace("!\\[", "")
    assert md_text("a\nb ![c](d)") == "a b !\\[c](d)"


def test_prompts_and_comments_outside_code_are_text():
    guard = MarkdownGuard()
    out = "".join(guard(d) for d in [">>> x", " = 1\n# a c", "omment\n```\n# code\n>>> y\n```\nend"])
    assert out == "\\>>> x = 1\n\\# a comment\n```\n# code\n>>> y\n```\nend"


def test_code_blocks_stream_as_written_and_html_is_never_rendered():
    """Fenced code reaches Chainlit's Markdown as written (a code block with a copy button);
    an image is escaped only outside code; HTML stays text (unsafe_allow_html = false)."""
    import tomllib

    deltas = ["Reverse it:\n``", "`python\nitems = [1, 2]\nitems.reverse()  # a![0]\n", "```\n",
              "<script>alert(1)</script> ![x](http://evil/p.png)"]
    msg = FakeMessage()
    raw = asyncio.run(stream_into(msg, iter(deltas), interval=0))
    assert raw == "".join(deltas)
    assert "```python\nitems = [1, 2]\nitems.reverse()  # a![0]\n```\n" in msg.content
    assert msg.content.endswith("<script>alert(1)</script> !\\[x](http://evil/p.png)")
    config = tomllib.loads((Path(__file__).parents[1] / ".chainlit/config.toml").read_text())
    assert config["features"]["unsafe_allow_html"] is False and config["features"]["latex"] is False


def test_footer_reports_length_speed_and_notices(wb):
    ckpt = wb.models.load(wb.models.default("story"))
    reply = respond([{"role": "user", "content": "Once"}], "story", ckpt,
                    SamplingParams(max_new_tokens=1, seed=1, top_k=0))
    reply.text()
    footer = reply_footer(reply, "story")
    assert "1 token ·" in footer and "tokens/s" in footer
    reply.stats.notices += ["Left out the 2 oldest exchanges"] + ["Reached the window"] * 3
    footer = reply_footer(reply, "chat")
    assert "_Left out the 2 oldest exchanges_\n" in footer
    assert footer.count("Reached the window") == 1 and "_Reached the window (3 times)_" in footer


_CORS_PROBE = """
from urllib.parse import urlsplit

from chainlit.config import config
from chainlit.server import app
from starlette.testclient import TestClient

origins = config.project.allow_origins  # what the server loaded, not what a file says
assert origins and all(urlsplit(o).hostname in ("localhost", "127.0.0.1", "::1")
                       for o in origins), origins
client = TestClient(app)
ask = {"Access-Control-Request-Method": "POST"}
evil = client.options("/project/file", headers={**ask, "Origin": "https://evil.example"})
assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers, evil.headers
for origin in origins:
    ok = client.options("/project/file", headers={**ask, "Origin": origin})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin, origin
# a simple request is answered, but without the header a browser needs to hand it over
got = client.get("/project/settings", headers={"Origin": "https://evil.example"})
assert "access-control-allow-origin" not in got.headers, got.headers
print("ok")
"""


def test_cross_origin_requests_only_from_loopback():
    """Another web site open in the same browser cannot call this server's HTTP API: asked of
    Chainlit's own server app, configured as `chainlit run` configures it (the app root that
    conftest gives the session links the checkout's .chainlit/config.toml). In a fresh
    interpreter: Chainlit's CORS middleware keeps the origin list it was built with, and other
    tests in this process load Chainlit's config again."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _CORS_PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
