"""The Gradio handlers as plain functions (no server): chat, story, explorer, train tab."""

from __future__ import annotations

import re

import gradio as gr
import pytest

import app.workbench
from app.display import SOURCES_CAPTION
from app.gradio import chat, explorer, story, train
from app.gradio.common import guard, show_markdown, show_text, stats_line
from engine.assistant import UNGROUNDED_NOTICE
from app.limits import MAX_SYSTEM_CHARS, clean_text, sampling_params
from app.workbench import ModelLoadError
from gradio_support import make_workbench

FAST = dict(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1, max_new_tokens=10,
            seed=1)


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("handlers"))


def run(gen):
    return list(gen)


def test_guard_turns_errors_into_messages():
    def bad(x):
        raise ValueError("top_p must be in (0, 1], got 1.5")

    with pytest.raises(gr.Error, match=r"Top_p must be in \(0, 1\], got 1.5"):
        guard(bad)(1)

    def gen():
        yield 1
        raise RuntimeError("boom")

    wrapped = guard(gen)
    it = wrapped()
    assert next(it) == 1
    with pytest.raises(gr.Error, match="Something went wrong \\(RuntimeError: boom\\)"):
        next(it)


def test_chat_streams_and_keeps_raw_history(wb):
    model = wb.models.default("python")
    msg = "How do I print <b>bold</b> in Python? <script>alert(1)</script>"
    outs = run(chat.respond(wb, msg, [], "Free chat", model, **FAST))
    first_display, first_state = outs[0][0], outs[0][1]
    assert first_state == [{"role": "user", "content": msg}]  # the question shows at once
    assert "&lt;script&gt;" in first_display[0]["content"]  # displayed as text
    display, state, textbox, stats = outs[-1]
    assert [m["role"] for m in state] == ["user", "assistant"]
    assert state[0]["content"] == msg  # the raw text is what the engine sees next time
    assert state[1]["content"]
    assert display[1]["content"] == show_markdown(state[1]["content"])
    assert "tokens/s" in stats
    assert textbox["value"] == "" and textbox["interactive"] is True


def test_chat_refusal_with_reason(wb):
    outs = run(chat.respond(wb, "What is the best pizza in Rome?", [], "Python assistant",
                            wb.models.default(), **FAST))
    display, state, _, stats = outs[-1]
    assert state[1]["content"].startswith("Sorry, I'm a Python assistant")
    assert state[2]["metadata"] == {"title": chat.REASON_TITLE} and state[2]["content"]
    assert "without calling the model. Why: " in stats and state[2]["content"] in stats
    # In words a person reads, about their message (no scores, no model names).
    assert state[2]["content"].startswith("Your message ") and "p=" not in state[2]["content"]


def test_enter_on_an_empty_box_is_a_hint_not_an_error(wb):
    """No red Error badges over the chat: the conversation stays as it is (skipped outputs)
    and the stats line says what to do."""
    for empty in ("", "   ", "\n"):
        outs = run(chat.respond(wb, empty, [{"role": "user", "content": "hi"}], "Free chat",
                                wb.models.default(), **FAST))
        assert len(outs) == 1
        shown, state, textbox, stats = outs[0]
        assert shown == gr.skip() and state == gr.skip()
        assert textbox["interactive"] is True and stats == chat.EMPTY_HINT


def test_chat_errors_leave_the_conversation_as_it_was(wb):
    with pytest.raises(ValueError, match="top_p must be between"):
        run(chat.respond(wb, "hi", [], "Free chat", wb.models.default(), **{**FAST, "top_p": 1.5}))
    with pytest.raises(ValueError, match="unknown chat mode"):
        run(chat.respond(wb, "hi", [], "Poetry", wb.models.default(), **FAST))
    # A model that cannot load (hub, offline): the question goes back in the textbox.
    gen = chat.respond(wb, "hello", [], "Free chat", "gpt2", **FAST)
    shown = next(gen)
    assert shown[1][-1]["content"] == "hello"
    restored = next(gen)
    assert restored[1] == [] and restored[2]["value"] == "hello"
    with pytest.raises(ModelLoadError):
        next(gen)


def test_retry_undo_clear(wb):
    history = run(chat.respond(wb, "Tell me a story", [], "Free chat", wb.models.default(),
                               **FAST))[-1][1]
    again = run(chat.retry(wb, history, "Free chat", wb.models.default(), **FAST))[-1][1]
    assert [m["role"] for m in again] == ["user", "assistant"]
    assert again[0]["content"] == "Tell me a story"
    display, state, textbox = chat.undo(again)
    assert state == [] and display == [] and textbox["value"] == "Tell me a story"
    with pytest.raises(ValueError, match="nothing to retry"):
        run(chat.retry(wb, [], "Free chat", wb.models.default(), **FAST))
    assert chat.clear()[:2] == ([], [])


def test_display_escapes_and_keeps_notes():
    shown = chat.display([{"role": "assistant", "content": "<img src=x onerror=alert(1)>"},
                          {"role": "assistant", "content": "why", "metadata": {"title": "t"}}])
    assert shown[0]["content"] == "&lt;img src=x onerror=alert(1)&gt;"
    assert shown[1]["metadata"] == {"title": "t"}


def test_chat_uses_the_checked_history(wb):
    """A history from a client in Gradio's other message form (content as a list of parts) is
    shown and continued; one with a message missing its role gets a clear message, not a crash."""
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi <b>"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "Hello"}],
              "options": []}]
    assert chat.display(parts) == [{"role": "user", "content": "Hi &lt;b&gt;"},
                                   {"role": "assistant", "content": "Hello"}]
    display, state, _, _ = run(chat.respond(wb, "And then?", parts, "Free chat",
                                            wb.models.default(), **FAST))[-1]
    assert [m["content"] for m in state[:3]] == ["Hi <b>", "Hello", "And then?"]
    assert display[0]["content"] == "Hi &lt;b&gt;"
    _, undone, textbox = chat.undo(parts)
    assert undone == [] and textbox["value"] == "Hi <b>"
    broken = [{"content": "no role"}]
    for call in (lambda: run(chat.respond(wb, "hi", broken, "Free chat", wb.models.default(),
                                          **FAST)),
                 lambda: run(chat.retry(wb, broken, "Free chat", wb.models.default(), **FAST)),
                 lambda: chat.undo(broken), lambda: chat.display(broken)):
        with pytest.raises(ValueError, match=r"chat history\[0\] must be a dict with 'role'"):
            call()


@pytest.fixture(scope="module")
def grounded_wb(tmp_path_factory):
    """A workbench whose python model answers from the bundled docs index."""
    return make_workbench(tmp_path_factory.mktemp("grounded"), grounded=True)


@pytest.fixture
def model_sees(monkeypatch):
    """Every conversation the engine is given, as a list (the web layer calls respond once per
    turn)."""
    seen = []
    real = app.workbench.respond

    def spy(conversation, *args, **kwargs):
        seen.append([dict(t) for t in conversation])
        return real(conversation, *args, **kwargs)

    monkeypatch.setattr(app.workbench, "respond", spy)
    return seen


def test_a_grounded_answer_lists_its_sources_and_the_model_never_sees_them(grounded_wb, model_sees):
    wb, model = grounded_wb, grounded_wb.models.default()
    display, state, _, stats = run(chat.respond(wb, "How do I reverse a list?", [],
                                                "Python assistant", model, **FAST))[-1]
    assert [m["role"] for m in state] == ["user", "assistant", "assistant"]
    answer, note = state[1], state[2]
    assert "metadata" not in answer and answer["content"].strip()
    # Collapsed ("done") under the answer, titled with the count; each source a docs link.
    assert note["metadata"] == {"title": "Sources (3)", "status": "done"}
    assert note["content"].startswith(f"*{SOURCES_CAPTION}*")
    assert note["content"].count("](https://docs.python.org/3/") == 3
    assert "[list.reverse()](https://docs.python.org/3/" in note["content"]
    assert " — Data Structures" in note["content"] or " — Built-in Types" in note["content"]
    assert display[2]["metadata"] == note["metadata"]  # the chatbot shows it as a closed note
    assert UNGROUNDED_NOTICE not in stats

    # The next turn: the model is given the question and the answer, never the sources.
    final = run(chat.respond(wb, "and for a dict?", state, "Python assistant", model, **FAST))[-1]
    assert [t["role"] for t in model_sees[-1]] == ["user", "assistant", "user"]
    assert model_sees[-1][1]["content"] == clean_text(answer["content"])  # control chars go
    assert not any("docs.python.org" in t["content"] or SOURCES_CAPTION in t["content"]
                   for t in model_sees[-1])
    assert [m.get("metadata", {}).get("title") for m in final[1]] == [
        None, None, "Sources (3)", None, None, "Sources (3)"]

    # Retry asks the last question again with the same clean history; undo takes the answer
    # and its sources away together.
    retried = run(chat.retry(wb, final[1], "Python assistant", model, **FAST))[-1][1]
    assert model_sees[-1] == model_sees[-2]
    assert len(retried) == 6 and retried[-1]["metadata"]["title"] == "Sources (3)"
    shown, kept, textbox = chat.undo(retried)
    assert kept == state and textbox["value"] == "and for a dict?"
    assert "docs.python.org" not in chat.COPY_JS  # Copy chat: notes are left out (by metadata)
    assert "m.metadata && m.metadata.title" in chat.COPY_JS


def test_an_ungrounded_model_answers_without_sources_and_says_so(wb):
    display, state, _, stats = run(chat.respond(wb, "How do I reverse a list?", [],
                                                "Python assistant", wb.models.default(), **FAST))[-1]
    assert [m["role"] for m in state] == ["user", "assistant"]
    assert UNGROUNDED_NOTICE.split(";")[0] in stats  # shown as the other notices are
    free = run(chat.respond(wb, "How do I reverse a list?", [], "Free chat",
                            wb.models.default(), **FAST))[-1]
    assert UNGROUNDED_NOTICE.split(";")[0] not in free[3]  # free chat never has sources


def test_sources_note_escapes_titles_and_drops_unsafe_links():
    class P:
        def __init__(self, title, url, text="Text `code` <b>x</b>"):
            self.title, self.section, self.url, self.text = title, "Programming FAQ", url, text

        def excerpt(self, chars):
            return self.text[:chars]

    note = chat.sources_note([P("Member objects and __slots__", "https://docs.python.org/3/x#y"),
                              P("[evil](javascript:alert(1))", "javascript:alert(1)")])
    assert "**[Member objects and \\_\\_slots\\_\\_](https://docs.python.org/3/x#y)**" in note["content"]
    # A url that is not http(s) is not linked, and a title is text, never Markdown.
    assert "**\\[evil\\](javascript:alert(1))** — Programming FAQ" in note["content"]
    assert not re.search(r"(?<!\\)\]\(javascript:", note["content"])
    shown = chat.display([note])[0]["content"]
    assert "`code` &lt;b&gt;x&lt;/b&gt;" in shown


def test_show_markdown_keeps_code_as_code_and_escapes_the_rest():
    text = ("Use `a<b` here. <script>alert(1)</script> & ![x](http://example.com/t.png)\n"
            "```python\nif a < b:\n    print('<b>')\n```\n"
            "<i>after</i>\n\n    indented <code>\nend")
    shown = show_markdown(text)
    assert "`a<b`" in shown  # inline code as written: the renderer escapes it
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; !\\[x](http" in shown
    assert "```python\nif a < b:\n    print('<b>')\n```" in shown  # the code block, as written
    assert "&lt;i&gt;after&lt;/i&gt;" in shown and "    indented <code>" in shown
    # An unclosed fence (an answer still streaming) is code to the end, as Markdown reads it.
    assert show_markdown("x <b>\n```\n<b>") == "x &lt;b&gt;\n```\n<b>"
    # Three backticks with more on the line are inline code, not a fence.
    assert show_markdown("```print(1)``` <b>") == "```print(1)``` &lt;b&gt;"
    assert show_markdown("") == "" and show_markdown("a\n") == "a\n"
    # A doctest prompt or a Python comment outside code is text, not a quotation or a heading.
    assert show_markdown(">>> x = 1\n# note\n```\n# code\n```") == \
        "&gt;&gt;&gt; x = 1\n\\# note\n```\n# code\n```"


def test_story_and_explorer(wb):
    model = wb.models.default("story")
    outs = run(story.write(wb, "Once upon a time", model, **FAST))
    text, stats = outs[-1]
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    assert outs[0][0] == "Once upon a time" and "tokens/s" in stats  # the opening shows at once
    html, opened = story.explore(wb, "Once upon a time", text, 5, model, **FAST)
    assert opened is True and html.count("<tr") >= 1 + 5  # header + at least 5 candidates
    assert "top-k" in html and "temperature" in html
    assert story.follow(wb, False, "x", "", 5, model, **FAST) == (gr.skip(), False)
    assert story.follow(wb, True, "x", "", 5, model, **FAST)[1] is True
    new_story, chart, _ = story.add_token(wb, "Once upon a time", "", 5, model, **FAST)
    assert new_story.startswith("Once upon a time") and "<table" in chart
    assert story.add_token(wb, "x", new_story, 5, model, **FAST)[0].startswith(new_story)
    with pytest.raises(ValueError, match="story opening is empty"):
        run(story.write(wb, "", model, **FAST))
    with pytest.raises(ValueError, match="the story opening is 100,000 characters long"):
        run(story.write(wb, "x" * 100_000, model, **FAST))
    # Continue from here: the story goes on at its end (the opening box is left alone).
    more = run(story.continue_story(wb, "ignored: a story is written", text, model, **FAST))
    longer, stats = more[-1]
    assert longer.startswith(text) and len(longer) > len(text) and "tokens/s" in stats
    # Before anything is written it starts from the opening; the explorer looks at the story.
    first = run(story.continue_story(wb, "The king", "", model, **FAST))[-1][0]
    assert first.startswith("The king") and len(first) > len("The king")
    assert story._so_far("opening", longer) == longer and story._so_far("opening", "") == "opening"
    with pytest.raises(ValueError, match="story opening is empty"):
        run(story.continue_story(wb, " ", "", model, **FAST))


def test_explorer_chart_escapes_tokens():
    params = sampling_params(top_k=1)
    result = {"tokens": ["<script>alert(1)</script>", "␣ok"], "token_ids": [1, 2],
              "stages": [{"name": "raw", "probs": [0.6, 0.4]},
                         {"name": "top-k", "probs": [1.0, 0.0]}],
              "context_tokens": 3, "truncated": True}
    html = explorer.render(result, params)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "removed" in html and "100.0%" in html and "context window" in html


def test_stats_line_groups_repeated_notices():
    class Stats:
        new_tokens, tokens_per_s, finish_reason = 5, 12.5, "length"
        notices = ["Reached the window <x>"] * 3

    line = stats_line(Stats())
    assert "5 tokens · 12.5 tokens/s" in line and "(3 times)" in line and "&lt;x&gt;" in line


def test_train_views():
    assert "No training job yet" in train.status_markdown({"state": "idle"})
    running = {"state": "running", "run": "r1", "step": 20, "max_steps": 100, "loss": 2.5,
               "val_loss": 2.7, "tokens_per_s": 1234.0, "eta_s": 65,
               "curve": [{"step": 10, "loss": 3.0, "split": "train"},
                         {"step": 20, "loss": 2.7, "split": "validation"}],
               "samples": [{"step": 10, "prompt": "Once", "text": " upon"}]}
    md = train.status_markdown(running)
    for part in ("**r1**: running", "Step 20/100", "loss 2.500", "validation loss 2.700",
                 "1,234 tokens/s", "ETA 1 min 05 s"):
        assert part in md
    frame = train.curve_frame(running)
    assert list(frame.columns) == ["step", "loss", "split"] and len(frame) == 2
    assert str(frame.dtypes["loss"]) == "float64" and train.curve_frame({}) is None
    # Before the first evaluation the validation split is already there, with no loss: the
    # chart's colour domain is fixed by its first frame (the validation line was missing).
    early = train.curve_frame({"curve": [{"step": 1, "loss": 3.0, "split": "train"},
                                         {"step": 2, "loss": 2.9, "split": "train"}]})
    assert list(early["split"]) == ["train", "train", "validation"]
    assert early["loss"].isna().tolist() == [False, False, True] and early["step"].iloc[2] == 1
    assert '"validation"' in early.to_json(orient="split") and "null" in early.to_json(orient="split")
    assert "— step 10 —\nOnce upon" in train.samples_text(running)
    failed = train.status_markdown({"state": "failed", "run": "r", "error": "<bad> data"})
    assert "&lt;bad&gt; data" in failed
    done = train.status_markdown({"state": "finished", "run": "r", "step": 5, "max_steps": 5})
    assert "model picker" in done


def test_train_start_checks_the_form(wb):
    preset = "cpu-demo"
    with pytest.raises(ValueError, match="upload a .txt or .jsonl file first"):
        train.start(wb, preset, train.SOURCES[1], None, None, "", "", train.NEW_MODEL,
                    5, 0.001, 2, 16)
    with pytest.raises(ValueError, match="type a Hugging Face dataset name"):
        train.start(wb, preset, train.SOURCES[2], None, None, " ", "", train.NEW_MODEL,
                    5, 0.001, 2, 16)
    with pytest.raises(ValueError, match="data source must be one of"):
        train.start(wb, preset, "FTP", None, None, "", "", train.NEW_MODEL, 5, 0.001, 2, 16)
    assert train.preset_values(wb, preset)[0] > 0


def test_poll_skips_what_did_not_change(wb):
    outs = train.poll(wb, {}, wb.models.default())
    status, curve, samples, models, inits, runs, seen, timer, start_btn, stop_btn = outs
    assert "No training job yet" in status
    assert models["choices"] and inits["choices"][0] == train.NEW_MODEL
    assert start_btn["interactive"] is True and stop_btn["interactive"] is False
    again = train.poll(wb, seen, wb.models.default())
    assert again[:6] == (gr.skip(),) * 6  # nothing changed: nothing sent


def test_free_chat_with_the_python_docs_model_says_what_it_will_sound_like(wb, grounded_wb):
    """Issue 14: free chat kept the Python-docs model silently. Now a note says what it will
    sound like and names a better pick (the hub's gpt2); other modes and models get none."""
    python = grounded_wb.models.default("python")
    note = chat.chat_note(grounded_wb, "Free chat", python)
    assert "programming help page" in note and "gpt2 (hub)" in note
    assert chat.chat_note(grounded_wb, "Python assistant", python) == ""
    assert chat.chat_note(grounded_wb, "Free chat", grounded_wb.models.default("story")) == ""
    assert chat.chat_note(wb, "Free chat", wb.models.default("python")) == ""  # not docs-trained
    assert chat.chat_note(wb, "Free chat", "no such model") == ""


def test_edit_a_sent_message_cuts_the_chat_there_and_asks_again(wb):
    """Gradio's chatbot edit event: the edited message replaces the one sent, what came after
    it is dropped, and the new question is answered."""
    model = wb.models.default("python")
    history = run(chat.respond(wb, "first", [], "Free chat", model, **FAST))[-1][1]
    history = run(chat.respond(wb, "second", history, "Free chat", model, **FAST))[-1][1]
    assert [m["content"] for m in history if m["role"] == "user"] == ["first", "second"]
    edit = gr.EditData(None, {"index": 0, "value": "first, edited", "previous_value": "first"})
    shown, state, textbox, stats = run(chat.edit(wb, history, "Free chat", model, edit,
                                                 **FAST))[-1]
    assert [m["role"] for m in state] == ["user", "assistant"]
    assert state[0]["content"] == "first, edited" and "tokens/s" in stats
    bad = gr.EditData(None, {"index": 1, "value": "x", "previous_value": "y"})
    with pytest.raises(ValueError, match="only your own messages can be edited"):
        run(chat.edit(wb, state, "Free chat", model, bad, **FAST))


def test_train_tab_shows_the_whole_preset_label_and_what_the_sidebar_is_for():
    presets = [("cpu-demo: 2 layers × 128 dims, 128 context, <b>", "cpu-demo"), ("x: y", "x")]
    assert train.preset_label(presets, "cpu-demo") == \
        "<small>cpu-demo: 2 layers × 128 dims, 128 context, &lt;b&gt;</small>"
    assert train.preset_label(presets, "nope") == ""
    assert "chat and stories" in train.TRAIN_SETTINGS_NOTE


def test_free_chat_takes_a_system_prompt_with_a_length_limit(wb, monkeypatch):
    """The persona goes before the conversation in free chat (the prompt starts with it), is
    not used by the Python assistant, and one over app.limits.MAX_SYSTEM_CHARS is refused with
    the question given back."""
    prompts = []
    real = app.workbench.respond

    def spy(conversation, mode, ckpt, params, **kwargs):
        reply = real(conversation, mode, ckpt, params, **kwargs)
        prompts.append((mode, kwargs.get("system"), reply.prompt))
        return reply

    monkeypatch.setattr(app.workbench, "respond", spy)
    model = wb.models.default("python")
    persona = "You are a friendly pirate."
    run(chat.respond(wb, "Hello there", [], "Free chat", model, system=persona, **FAST))
    mode, system, prompt = prompts[-1]
    assert mode == "chat" and system == persona and prompt.startswith(persona)
    run(chat.respond(wb, "How do I sort a list in Python?", [], "Python assistant", model,
                     system=persona, **FAST))
    assert prompts[-1][1] == "" and persona not in prompts[-1][2]
    # Retry and edit keep it: it travels with the sampling values.
    history = run(chat.retry(wb, [{"role": "user", "content": "Hi"}], "Free chat", model,
                             system=persona, **FAST))[-1][1]
    assert prompts[-1][2].startswith(persona) and history[0]["content"] == "Hi"
    gen = chat.respond(wb, "Hello", [], "Free chat", model,
                       system="x" * (MAX_SYSTEM_CHARS + 1), **FAST)
    next(gen)
    assert next(gen)[2]["value"] == "Hello"  # the question goes back in the box
    with pytest.raises(ValueError, match=f"the system prompt is {MAX_SYSTEM_CHARS + 1:,} "
                                         "characters long"):
        next(gen)
    assert chat.change_mode("Free chat")[1]["visible"] is True
    assert chat.change_mode("Python assistant")[1]["visible"] is False


def test_export_the_conversation_as_markdown_and_json(wb):
    model = wb.models.default("python")
    history = run(chat.respond(wb, "Hello <there>", [], "Free chat", model, **FAST))[-1][1]
    update = chat.export(wb, history, "Free chat", model, "Be a pirate.")
    md, js = sorted(update["value"], key=lambda p: not p.endswith(".md"))
    assert update["visible"] is True and md.endswith(".md") and js.endswith(".json")
    text = open(md, encoding="utf-8").read()
    assert "**You:**\n\nHello <there>" in text and "Be a pirate." in text
    assert "Free chat · python (bundled)" in text
    assert '"role": "assistant"' in open(js, encoding="utf-8").read()
    no_persona = open(chat.export(wb, history, "Python assistant", model, "Be a pirate.")
                      ["value"][0], encoding="utf-8").read()
    assert "pirate" not in no_persona  # the assistant does not use a system prompt
    with pytest.raises(ValueError, match="nothing to export yet"):
        chat.export(wb, [], "Free chat", model, "")
