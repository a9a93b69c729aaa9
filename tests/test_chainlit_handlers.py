"""The Chainlit handlers (app/chainlit/handlers.py), called as Chainlit calls them (a session whose
socket is a recorder), without a server or a browser: what each event sends to the page."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import chainlit as cl
import pytest
from chainlit.context import init_ws_context
from chainlit.session import WebsocketSession

from app.display import bundled_label
import app.workbench
import chainlit_app
from app.chainlit import handlers as appmod
from app.display import SOURCES_CAPTION
from app.limits import MAX_SYSTEM_CHARS, clean_text
from engine.assistant import UNGROUNDED_NOTICE
from gradio_support import make_workbench


class Page:
    """Records what the server emits to one browser tab, and replays it as message texts."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    async def emit(self, event, data):
        self.events.append((event, data))

    async def emit_call(self, event, data, timeout):
        return None

    def messages(self) -> list[dict]:
        """The messages as shown: id -> {"output", "isError", "author"} after every update."""
        shown: dict[str, dict] = {}
        for event, data in self.events:
            if event in ("new_message", "update_message", "stream_start"):
                shown.setdefault(data["id"], {}).update(
                    output=data.get("output", ""), isError=data.get("isError", False),
                    author=data.get("name"))
            elif event == "stream_token":
                msg = shown.setdefault(data["id"], {"output": ""})
                msg["output"] = data["token"] if data.get("isSequence") else msg["output"] + data["token"]
        return list(shown.values())

    def texts(self) -> list[str]:
        return [m["output"] for m in self.messages()]

    def errors(self) -> list[str]:
        return [m["output"] for m in self.messages() if m.get("isError")]

    def sent(self, event: str) -> list:
        return [data for name, data in self.events if name == event]


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("chainlit-handlers"))


def new_session(profile: str) -> tuple[Page, WebsocketSession]:
    page = Page()
    session = WebsocketSession(id=str(uuid.uuid4()), socket_id=str(uuid.uuid4()), emit=page.emit,
                               emit_call=page.emit_call, user_env={}, client_type="webapp",
                               chat_profile=profile)
    return page, session


def call(session, handler, *args):
    """Run a handler in the session's context, as Chainlit's socket events do."""
    async def run():
        init_ws_context(session)
        return await handler(*args)
    return asyncio.run(run())


@pytest.fixture
def page(wb, monkeypatch):
    """A new Chainlit session on the Python assistant profile, started as a page load starts it."""
    monkeypatch.setattr(appmod, "wb", wb)
    page, session = new_session("Python assistant")
    page.session = session
    call(session, appmod.start)
    yield page
    call(session, session.delete)


def say(page, text: str, command: str | None = None) -> None:
    async def send():
        await appmod.on_message(cl.Message(content=text, command=command, type="user_message"))
    call(page.session, send)


def state(page, key):
    """A value of the session's cl.user_session."""
    async def get():
        return cl.user_session.get(key)
    return call(page.session, get)


def test_the_entry_point_registers_every_handler():
    """`chainlit run chainlit_app.py` loads only that file: importing it registers the handlers."""
    from chainlit.config import config

    assert chainlit_app.handlers is appmod
    for hook in ("on_message", "on_chat_start", "on_chat_end", "on_stop", "on_settings_update",
                 "set_chat_profiles"):
        assert getattr(config.code, hook) is not None, hook
    assert {"train_start", "train_stop", "train_help", "use_model"} <= \
        set(config.code.action_callbacks)


def test_start_sends_the_settings_panel_and_the_train_command(page, wb):
    [panel] = page.sent("chat_settings")
    assert [w["id"] for w in panel] == ["model", "temperature", "top_k", "top_p",
                                         "repetition_penalty", "max_new_tokens", "seed",
                                         "system"]
    assert panel[0]["initial"] == wb.models.default("python")
    assert [c["id"] for c in page.sent("set_commands")[0]] == ["train"]
    assert page.texts() == []  # nothing hides the profile's starters


def test_a_python_question_is_answered_and_remembered(page):
    say(page, "How do I reverse a list in Python?")
    [answer] = page.texts()
    assert answer.strip() and not answer.startswith("Sorry")
    assert page.sent("stream_start")  # streamed, not sent in one piece
    history = state(page, "history")
    assert [t["role"] for t in history] == ["user", "assistant"]
    assert history[0]["content"] == "How do I reverse a list in Python?"


@pytest.fixture(scope="module")
def grounded_wb(tmp_path_factory):
    """A workbench whose python model answers from the bundled docs index."""
    return make_workbench(tmp_path_factory.mktemp("chainlit-grounded"), grounded=True)


@pytest.fixture
def grounded_page(grounded_wb, monkeypatch):
    monkeypatch.setattr(appmod, "wb", grounded_wb)
    page, session = new_session("Python assistant")
    page.session = session
    call(session, appmod.start)
    yield page
    call(session, session.delete)


def test_a_grounded_answer_carries_its_sources_which_the_model_never_sees(grounded_page,
                                                                           monkeypatch):
    page = grounded_page
    seen = []
    real = app.workbench.respond
    monkeypatch.setattr(app.workbench, "respond",
                        lambda conv, *a, **k: seen.append([dict(t) for t in conv]) or real(conv, *a, **k))
    say(page, "How do I reverse a list?")
    [answer] = page.messages()
    # The collapsed list under the answer: a custom element (public/elements/Sources.jsx)
    # attached to the answer's message, with the passages' titles, pages, links and excerpts.
    [element] = page.sent("element")
    assert element["type"] == "custom" and element["name"] == "Sources"
    assert element["display"] == "inline"
    assert element["forId"] in {d["id"] for e, d in page.events
                                if e in ("stream_start", "new_message")}  # the answer's
    props = element["props"]
    assert props["title"] == "Sources (3)" and props["caption"] == SOURCES_CAPTION
    assert len(props["items"]) == 3
    assert all(i["url"].startswith("https://docs.python.org/3/") for i in props["items"])
    assert "list.reverse()" in [i["title"] for i in props["items"]]
    assert all(i["section"] and i["excerpt"] for i in props["items"])
    assert UNGROUNDED_NOTICE not in answer["output"]
    assert "docs.python.org" not in answer["output"]  # the answer's text is the model's alone

    history = state(page, "history")
    assert [t["role"] for t in history] == ["user", "assistant"]
    say(page, "and for a dict?")
    assert [t["role"] for t in seen[-1]] == ["user", "assistant", "user"]
    assert seen[-1][1]["content"] == clean_text(history[1]["content"])  # control chars go
    assert not any("docs.python.org" in t["content"] for t in seen[-1])
    assert len(page.sent("element")) == 2  # the follow-up has its own sources


def test_an_ungrounded_model_answers_without_sources_and_says_so(page):
    say(page, "How do I reverse a list in Python?")
    [answer] = page.texts()
    assert f"_{UNGROUNDED_NOTICE}_" in answer  # in the footer, as the other notices are
    assert not page.sent("element")


def test_an_off_topic_question_gets_the_refusal_and_its_reason(page):
    say(page, "What is the capital of France?")
    [refusal] = page.texts()
    assert refusal.startswith("Sorry, I'm a Python assistant") and "**Why:**" in refusal
    assert "**Why:** Your message " in refusal  # a sentence about the message, in plain words
    assert not page.sent("stream_start")  # no model call


def test_only_the_word_train_is_the_command(page):
    say(page, "/training a dog, how?")  # an ordinary message, for the filter to judge
    assert page.errors() == [] and page.texts()[0].startswith("Sorry, I'm a Python assistant")


@pytest.mark.parametrize("text, command, message", [
    ("x" * 9000, None, "the message is 9,000 characters long; the limit is 8,000"),
    ("/train cpu-demo steps=abc", None, "max_steps must be a number, got 'abc'"),
    ("/train cpu-demo steps", None, "'steps' needs a value"),
    ("colour=red", "train", "/train does not know the option 'colour'"),
    ("/train data=poems", None, "unknown corpus data=poems"),
])
def test_bad_input_gets_one_clear_error_message(page, text, command, message):
    say(page, text, command)
    errors = page.errors()
    assert len(errors) == 1 and message in errors[0], page.texts()
    assert "Traceback" not in errors[0]


def test_the_train_button_shows_the_help_with_a_start_action(page):
    say(page, "help", command="train")
    [help_text] = page.texts()
    assert "**Presets**" in help_text and "`cpu-demo`" in help_text and "stories/tiny.txt" in help_text
    assert [a["name"] for a in page.sent("action")] == ["train_start"]


def test_a_bad_setting_is_named_when_changed_and_when_used(page):
    settings = {**state(page, "chat_settings"), "seed": "abc"}
    call(page.session, appmod.settings_changed, settings)
    assert page.errors() == ["Settings not valid: seed must be a number, got 'abc'"]
    page.session.chat_settings.update(settings)  # what Chainlit does with the new values
    say(page, "How do I reverse a list in Python?")
    assert page.errors()[-1] == "seed must be a number, got 'abc'"


def test_changing_the_model_loads_and_describes_it(page, wb):
    story = wb.models.default("story")
    settings = state(page, "chat_settings")
    call(page.session, appmod.settings_changed, {**settings, "model": story})
    [about] = page.texts()
    assert about.startswith(f"Model: **{bundled_label('story')}**") and "parameters" in about
    call(page.session, appmod.settings_changed, {**settings, "model": "gpt9"})
    assert "unknown model 'gpt9'" in page.errors()[-1]


def test_sessions_keep_their_own_history(wb, monkeypatch):
    """Two sessions answered at the same time: each sees only its own conversation."""
    monkeypatch.setattr(appmod, "wb", wb)
    (pa, a), (pb, b) = new_session("Python assistant"), new_session("Free chat")

    async def turn(s, text):
        init_ws_context(s)
        await appmod.start()
        await appmod.on_message(cl.Message(content=text, type="user_message"))
        return cl.user_session.get("history")

    async def both():
        return await asyncio.gather(turn(a, "How do I sort a list?"),
                                    turn(b, "Tell me about the sea."))

    ha, hb = asyncio.run(both())
    assert [t["content"] for t in ha if t["role"] == "user"] == ["How do I sort a list?"]
    assert [t["content"] for t in hb if t["role"] == "user"] == ["Tell me about the sea."]
    assert len(pa.texts()) == 1 and len(pb.texts()) == 1
    for s in (a, b):
        call(s, s.delete)


def test_training_is_refused_with_the_reason_on_an_exposed_server(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_ALLOW_TRAINING", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    exposed = make_workbench(tmp_path, exposed=True)
    monkeypatch.setattr(appmod, "wb", exposed)
    page, session = new_session("Python assistant")
    page.session = session
    call(session, appmod.start)
    say(page, "help", command="train")
    say(page, "/train cpu-demo steps=5")
    errors = page.errors()
    assert len(errors) == 2 and all("Training is turned off" in e for e in errors)
    assert exposed.training.status()["state"] == "idle"
    call(session, session.delete)


def test_action_buttons_reach_the_engine(page, wb):
    """The help's start button and the stop button call the same engine paths as /train."""
    call(page.session, appmod._train_start,
         cl.Action(name="train_start", payload={"preset": "no-such-preset"}))
    assert "unknown training preset 'no-such-preset'" in page.errors()[-1]
    call(page.session, appmod._train_stop, cl.Action(name="train_stop", payload={}))
    assert page.texts()[-1] == "No training job is running."
    # A forged payload: the browser sends back whatever it likes. No server file is copied.
    secret = wb.training.runs_dir.parent / "secret.md"
    secret.write_text("private\n" * 10)
    for payload, message in (
            ({"preset": "cpu-demo", "data": "", "upload": str(secret)}, "cannot set data, upload"),
            ({"preset": "cpu-demo", "hf_name": "x"}, "cannot set hf_name"),
            ({}, "names no preset"), ({"preset": 3}, "names no preset")):
        call(page.session, appmod._train_start, cl.Action(name="train_start", payload=payload))
        assert message in page.errors()[-1]
    assert not (wb.training.runs_dir / "uploads").exists()
    call(page.session, appmod._use_model, cl.Action(name="use_model", payload={"spec": "/etc"}))
    assert "unknown model '/etc'" in page.errors()[-1]
    assert wb.training.status()["state"] == "idle"


def test_free_chat_on_the_python_docs_model_says_what_it_will_sound_like(tmp_path, monkeypatch):
    """Issue 14: the Free chat profile's landing view, and a switch back to the Python-docs model
    in free chat, say that it answers like a programming help page and name a better pick."""
    grounded = make_workbench(tmp_path, grounded=True)
    monkeypatch.setattr(appmod, "wb", grounded)
    profiles = {p.name: p.markdown_description for p in asyncio.run(appmod._profiles())}
    assert "programming help page" in profiles["Free chat"] and "gpt2 (hub)" in profiles["Free chat"]
    assert "programming help page" not in profiles["Python assistant"]
    page, session = new_session("Free chat")
    call(session, appmod.start)
    settings = call(session, lambda: asyncio.sleep(0, cl.user_session.get("chat_settings")))
    call(session, appmod.settings_changed, {**settings, "model": grounded.models.default("story")})
    call(session, appmod.settings_changed, {**settings, "model": grounded.models.default("python")})
    story_about, python_about = page.texts()
    assert "help page" not in story_about and "programming help page" in python_about
    call(session, session.delete)


def send_message(page, text: str) -> str:
    """A person's message, as Chainlit hands it to on_message; returns its id."""
    async def send():
        message = cl.Message(content=text, type="user_message")
        await appmod.on_message(message)
        return message.id
    return call(page.session, send)


def press(page, name: str, for_id: str | None) -> None:
    """A button under a message (cl.Action), as Chainlit calls its callback."""
    from chainlit.config import config

    async def click():
        await config.code.action_callbacks[name](cl.Action(name=name, payload={}, forId=for_id))
    call(page.session, click)


def test_regenerate_writes_the_latest_answer_again(page):
    asked = send_message(page, "How do I reverse a list in Python?")
    answer_id = state(page, "last_turn")["answer"].id
    assert [a["name"] for a in page.sent("action")][:2] == ["regenerate", "export_chat"]
    press(page, "regenerate", answer_id)
    assert any(d["id"] == answer_id for d in page.sent("delete_message"))
    history = state(page, "history")
    assert [(t["role"], t.get("id")) for t in history] == [("user", asked), ("assistant", None)]
    assert state(page, "last_turn")["answer"].id != answer_id  # a new answer
    press(page, "regenerate", answer_id)  # the old answer's button: a message, nothing else
    assert page.errors()[-1].startswith("Only the latest answer can be regenerated")
    assert len(state(page, "history")) == 2


def test_an_edited_message_cuts_the_conversation_there(page):
    first = send_message(page, "How do I reverse a list in Python?")
    send_message(page, "And how do I sort it?")
    assert len(state(page, "history")) == 4

    async def resend():  # what Chainlit's edit_message event does after removing what followed
        await appmod.on_message(cl.Message(content="How do I copy a list in Python?",
                                           type="user_message", id=first))
    call(page.session, resend)
    history = state(page, "history")
    assert [t["content"] for t in history if t["role"] == "user"] == \
        ["How do I copy a list in Python?"]
    assert len(history) == 2 and history[0]["id"] == first


def test_export_sends_the_conversation_as_markdown_and_json(page):
    send_message(page, "How do I reverse a list in Python?")
    press(page, "export_chat", None)
    files = {e["name"].rsplit(".", 1)[1]: e for e in page.sent("element") if e["type"] == "file"}
    assert set(files) == {"md", "json"} and files["md"]["mime"] == "text/markdown"
    assert page.texts()[-1] == "The conversation, as Markdown and as JSON:"


def test_export_of_an_empty_chat_says_so(page):
    press(page, "export_chat", None)
    assert page.errors() == ["nothing to export yet: the conversation is empty"]


def test_free_chat_uses_the_system_prompt_from_the_settings(wb, monkeypatch):
    """The settings' system prompt goes before the conversation in free chat only; one over
    app.limits.MAX_SYSTEM_CHARS is named when the settings change."""
    import app.workbench

    seen = []
    real = app.workbench.respond

    def spy(conversation, mode, ckpt, params, **kwargs):
        reply = real(conversation, mode, ckpt, params, **kwargs)
        seen.append((mode, reply.prompt))
        return reply

    monkeypatch.setattr(app.workbench, "respond", spy)
    monkeypatch.setattr(appmod, "wb", wb)
    for profile, expect in (("Free chat", True), ("Python assistant", False)):
        page, session = new_session(profile)
        call(session, appmod.start)
        session.chat_settings.update({"system": "You are a friendly pirate."})

        async def ask():
            await appmod.on_message(cl.Message(content="How do I sort a list in Python?",
                                               type="user_message"))
        call(session, ask)
        assert seen[-1][1].startswith("You are a friendly pirate.") is expect, profile
        settings = {**session.chat_settings, "system": "x" * (MAX_SYSTEM_CHARS + 1)}
        call(session, appmod.settings_changed, settings)
        assert page.errors()[-1].startswith("Settings not valid: the system prompt is")
        call(session, session.delete)


def test_training_progress_has_a_live_loss_curve(page):
    """Issue 14: the progress message carries a Plotly chart of the loss (train and validation,
    the Gradio app's colours), re-sent under the same id as points arrive, and only then."""
    import json

    from app.chainlit.curve import loss_figure
    from app.chainlit.tracker import Tracker
    from app.display import CURVE_COLORS

    status = {"state": "running", "run": "r", "step": 20, "max_steps": 100, "loss": 2.5,
              "curve": [{"step": 10, "loss": 3.0, "split": "train"},
                        {"step": 20, "loss": 2.5, "split": "train"}]}

    async def follow():
        tracker = Tracker(None, "runs/r")
        tracker.message = cl.Message(content="", author="Training")
        await tracker.message.send()
        await tracker._show(status)
        await tracker._show(status)  # nothing new: no new chart
        status["curve"] = status["curve"] + [{"step": 20, "loss": 2.7, "split": "validation"}]
        await tracker._show(status)
        return tracker
    tracker = call(page.session, follow)
    charts = [e for e in page.sent("element") if e["type"] == "plotly"]
    assert len(charts) == 2 and {c["id"] for c in charts} == {tracker.plot_id}
    assert all(c["forId"] == tracker.message.id and c["display"] == "inline" for c in charts)
    figure = loss_figure(status["curve"])
    assert [(t.name, t.line.color) for t in figure.data] == list(CURVE_COLORS.items())
    assert list(figure.data[1].y) == [2.7] and loss_figure([]) is None
    assert json.loads(figure.to_json())["layout"]["title"]["text"] == "Loss"


def test_the_loss_chart_follows_the_page_theme():
    """Issue 14: the chart was a white panel in the dark theme (Plotly's default template). Its
    paper and plot are transparent, and its text, axes and grid a grey that reads on both."""
    import json

    from app.chainlit.curve import GRID, TEXT, TRANSPARENT, loss_figure

    layout = json.loads(loss_figure([{"step": 1, "loss": 3.0, "split": "train"}]).to_json())["layout"]
    assert layout["paper_bgcolor"] == layout["plot_bgcolor"] == TRANSPARENT
    assert layout["font"]["color"] == TEXT
    for axis in ("xaxis", "yaxis"):
        assert layout[axis]["color"] == TEXT
        assert layout[axis]["gridcolor"] == layout[axis]["zerolinecolor"] == GRID
    assert layout["modebar"]["bgcolor"] == TRANSPARENT


# -- saved conversations (app/chainlit/saved.py): the data layer, the sign-in, resume ----------

def test_importing_the_app_turns_on_saving_and_the_local_sign_in():
    """Without a password: Chainlit's data layer on the SQLite file in the app root's .workbench/
    (conftest's scratch app root), header sign-in, and a signing secret kept beside the file."""
    import os
    import stat

    from chainlit.config import APP_ROOT, config

    from app.chainlit import saved

    path = saved.database_path()
    assert path == Path(APP_ROOT) / ".workbench" / "chainlit.db" and path.exists()
    assert config.code.data_layer is not None and config.code.header_auth_callback is not None
    assert config.code.password_auth_callback is None  # no form to fill in
    secret = path.parent / saved.SECRET_FILE
    assert os.environ["CHAINLIT_AUTH_SECRET"] == secret.read_text().strip()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_where_the_conversations_live(tmp_path):
    from app.chainlit.saved import database_path

    assert database_path({}, tmp_path) == tmp_path / ".workbench" / "chainlit.db"
    assert database_path({"WORKBENCH_CHAINLIT_DB": str(tmp_path / "x.db")}) == tmp_path / "x.db"
    assert database_path({"WORKBENCH_CHAINLIT_DB": "off"}, tmp_path) is None


def test_this_machine_is_the_local_user_and_anyone_else_a_guest():
    from app.chainlit.saved import LOCAL_USER, user_for_request

    local = ("127.0.0.1", {"host": "localhost:8000"})
    assert user_for_request(local).identifier == LOCAL_USER
    proxied = ("127.0.0.1", {"host": "localhost:8000", "x-forwarded-for": "203.0.113.9"})
    remote = ("192.168.1.20", {"host": "box.lan:8000"})
    guests = {user_for_request(r).identifier for r in (proxied, remote, proxied)}
    assert len(guests) == 3 and all(g.startswith("guest-") for g in guests)  # one per sign-in


def test_with_a_password_the_form_signs_in_and_the_secret_survives_a_restart(tmp_path,
                                                                              monkeypatch):
    from chainlit.config import config

    from app.chainlit import saved

    for hook in ("data_layer", "header_auth_callback", "password_auth_callback"):
        monkeypatch.setattr(config.code, hook, None)  # put back after the test
    monkeypatch.setenv("WORKBENCH_PASSWORD", "s3cret")
    monkeypatch.setenv("WORKBENCH_CHAINLIT_DB", str(tmp_path / "state" / "chats.db"))
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET")
    assert saved.install() == tmp_path / "state" / "chats.db"
    assert config.code.header_auth_callback is None  # the password is asked of everyone
    first = os.environ["CHAINLIT_AUTH_SECRET"]
    assert (tmp_path / "state" / saved.SECRET_FILE).read_text().strip() == first
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET")
    saved.install()  # the next start reads the same secret: sign-ins stay valid
    assert os.environ["CHAINLIT_AUTH_SECRET"] == first

    login = config.code.password_auth_callback
    user = asyncio.run(login("ann", "s3cret"))
    assert user.identifier == "ann" and asyncio.run(login("ann", "wrong")) is None


def settle():
    """Wait for the tasks Chainlit leaves running (it saves steps and threads in the
    background), as a server's event loop would let them finish."""
    async def wait():
        while tasks := [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            await asyncio.gather(*tasks, return_exceptions=True)
    return wait()


def user_says(session, text: str) -> str:
    """A message as Chainlit's socket hands it over: the page's message (saved, and the thread
    begun on the first one), then on_message. Returns the message id."""
    from chainlit.utils import utc_now

    async def run():
        init_ws_context(session)
        message = await cl.context.emitter.process_message({"message": {
            "id": str(uuid.uuid4()), "output": text, "type": "user_message", "name": "User",
            "threadId": session.thread_id, "createdAt": utc_now()}, "fileReferences": None})
        await appmod.on_message(message)
        await settle()
        return message.id
    return asyncio.run(run())


def test_a_saved_conversation_resumes_with_what_the_model_saw(wb, tmp_path, monkeypatch):
    """A thread saved by the SQLite data layer and resumed in a new session (a reload or a
    restart): the settings and the conversation the model sees come back, the latest answer has
    its buttons again, and a follow-up (a Python question only after one) is answered with the
    thread's settings."""
    import chainlit.data
    from chainlit.socket import resume_thread

    from app.chainlit import saved

    db = tmp_path / "chats.db"
    saved.create_schema(db)
    layer = saved.SQLiteDataLayer(db)
    monkeypatch.setattr(chainlit.data, "_data_layer", layer)
    monkeypatch.setattr(chainlit.data, "_data_layer_initialized", True)
    monkeypatch.setattr(appmod, "wb", wb)
    user = asyncio.run(layer.create_user(cl.User(identifier="local")))

    page, session = new_session("Python assistant")
    page.session, session.user = session, user
    call(session, appmod.start)
    settings = {**state(page, "chat_settings"), "max_new_tokens": 1}
    session.chat_settings.update(settings)  # what Chainlit does with the new values
    call(session, appmod.settings_changed, settings)  # before the first message: not saved yet
    question = "How do I reverse a list in Python?"
    asked = user_says(session, question)
    history = state(page, "history")
    answer_id = state(page, "last_turn")["answer"].id
    call(session, session.delete)

    thread = asyncio.run(layer.get_thread(session.thread_id))
    assert thread["name"] == question and thread["userIdentifier"] == "local"
    assert thread["metadata"]["chat_profile"] == "Python assistant"
    assert thread["metadata"]["chat_settings"]["max_new_tokens"] == 1
    assert [s["type"] for s in thread["steps"]] == ["user_message", "assistant_message"]
    assert [t["role"] for t in history] == ["user", "assistant"] and history[0]["id"] == asked

    page2, resumed = new_session("Free chat")  # the page's profile picker may say otherwise
    page2.session, resumed.user, resumed.thread_id_to_resume = resumed, user, session.thread_id
    resumed.thread_id = session.thread_id

    async def resume():
        init_ws_context(resumed)
        opened = await resume_thread(resumed)  # what Chainlit does before on_chat_resume
        await appmod.resume(opened)
    asyncio.run(resume())
    assert resumed.chat_profile == "Python assistant"
    assert state(page2, "history") == history
    assert state(page2, "last_turn")["answer"].id == answer_id
    assert {(a["name"], a["forId"]) for a in page2.sent("action")} == \
        {("regenerate", answer_id), ("export_chat", answer_id)}
    [panel] = page2.sent("chat_settings")
    assert {w["id"]: w["initial"] for w in panel}["max_new_tokens"] == 1

    resumed.has_first_interaction = True  # Chainlit sets it when it resumes a thread
    user_says(resumed, "and the other way round?")
    follow_up = page2.texts()[-1]
    assert not follow_up.startswith("Sorry") and "1 token" in follow_up
    assert [t["content"] for t in state(page2, "history") if t["role"] == "user"] == \
        [question, "and the other way round?"]
    saved_again = asyncio.run(layer.get_thread(session.thread_id))
    assert [s["type"] for s in saved_again["steps"]] == ["user_message", "assistant_message"] * 2
    call(resumed, resumed.delete)

    # The sidebar's search, rename and delete (Chainlit's HTTP routes call these).
    from chainlit.types import Pagination, ThreadFilter

    def listed(search=None):
        found = asyncio.run(layer.list_threads(Pagination(first=20),
                                               ThreadFilter(userId=user.id, search=search)))
        return [t["name"] for t in found.data]
    assert listed("other way round") == [question] and listed("no such words") == []
    asyncio.run(layer.update_thread(session.thread_id, name="Reversing lists"))
    assert listed() == ["Reversing lists"]
    assert asyncio.run(layer.get_thread(session.thread_id))["metadata"]["chat_settings"]
    asyncio.run(layer.delete_thread(session.thread_id))
    assert listed() == [] and asyncio.run(layer.get_thread(session.thread_id)) is None


def test_a_resumed_thread_leaves_out_the_frozen_progress_of_a_run_still_going(monkeypatch):
    """The progress message saved with a conversation stopped updating when its page went away:
    resumed while the run goes on, it is left out (the re-attached tracker shows the run live);
    once the run has ended, its last progress stays in the conversation."""
    from types import SimpleNamespace

    from app.chainlit import training
    from app.chainlit.tracker import PROGRESS_KEY

    steps = [{"type": "user_message", "metadata": {}},
             {"type": "assistant_message", "metadata": {PROGRESS_KEY: "e2e-run"}},
             {"type": "assistant_message", "metadata": {PROGRESS_KEY: "older-run"}}]
    running = SimpleNamespace(training=SimpleNamespace(running=lambda: "/x/runs/e2e-run"))
    thread = {"steps": list(steps)}
    asyncio.run(training.drop_live_progress(running, thread))
    assert thread["steps"] == [steps[0], steps[2]]
    idle = SimpleNamespace(training=SimpleNamespace(running=lambda: None))
    thread = {"steps": list(steps)}
    asyncio.run(training.drop_live_progress(idle, thread))
    assert thread["steps"] == steps
