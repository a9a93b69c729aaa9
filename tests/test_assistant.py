"""assistant.respond(): refusals without a model call, prompt building, trimming, streaming."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from engine.assistant import (REFUSAL, UNGROUNDED_NOTICE, Reply, build_prompt, is_refusal,
                              normalize_conversation, respond)
from engine.code_filter import CodeQuestionFilter
from engine.generation import stream
from engine.sampling import SamplingParams
from engine.templates import STOP, format_prompt

PY_Q = "How do I reverse a list in Python?"
RULES = CodeQuestionFilter(use_model=False)  # deterministic and fast; the model is tested elsewhere


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


class ExplodingModel:
    """Stands in for a model that must not be used: any access to it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used (.{name}) on a refused message")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model was called on a refused message")


@pytest.fixture
def ckpt(tiny_model, bpe_tokenizer):
    return SimpleNamespace(model=tiny_model, tokenizer=bpe_tokenizer)


@pytest.fixture
def roomy_ckpt(bpe_tokenizer):
    """The tiny model with a 512-token window, for prompts that must not be trimmed."""
    from conftest import make_model

    return SimpleNamespace(model=make_model(bpe_tokenizer.vocab_size, block_size=512), tokenizer=bpe_tokenizer)


def test_refusal_makes_no_model_call(bpe_tokenizer):
    ckpt = SimpleNamespace(model=ExplodingModel(), tokenizer=bpe_tokenizer)
    reply = respond([user("What do ball pythons eat?")], "python", ckpt, code_filter=RULES)
    assert reply.refused and reply.stream is None and reply.prompt == ""
    assert reply.refusal == REFUSAL and is_refusal(reply.refusal)
    assert "snake" in reply.reason
    assert list(reply) == [REFUSAL] and reply.text() == REFUSAL
    assert reply.stats is None


def test_other_language_refusal_says_python(bpe_tokenizer):
    ckpt = SimpleNamespace(model=ExplodingModel(), tokenizer=bpe_tokenizer)
    reply = respond([user("How do I center a div in CSS?")], "python", ckpt, code_filter=RULES)
    assert reply.refused and "CSS" in reply.refusal and "Python" in reply.refusal
    assert reply.decision.other_language == "CSS"


def test_python_question_streams_from_the_template(ckpt):
    params = SamplingParams(max_new_tokens=8, seed=3)
    reply = respond([user(PY_Q)], "python", ckpt, params, code_filter=RULES)
    assert not reply.refused and reply.decision.is_coding
    assert reply.prompt == format_prompt(PY_Q)
    deltas = list(reply)
    assert deltas and all(isinstance(d, str) for d in deltas)
    assert reply.stats.new_tokens <= 8 and reply.stats.finish_reason in ("length", "eos", "stop")
    assert set(STOP) <= set(reply.stream.params.stop)  # the template's stop strings are added
    again = respond([user(PY_Q)], "python", ckpt, params, code_filter=RULES).text()
    assert again == "".join(deltas)  # same seed, same text


def test_follow_up_is_answered_in_python_mode(roomy_ckpt):
    conv = [user(PY_Q), bot("Use reversed(x) or x[::-1]."), user("and for the keys?")]
    reply = respond(conv, "python", roomy_ckpt, SamplingParams(max_new_tokens=2, seed=0), code_filter=RULES)
    # The tiny model was not trained on documentation: no sources, and the reply says so.
    assert not reply.refused and reply.decision.follow_up and reply.notices == [UNGROUNDED_NOTICE]
    assert reply.sources == []
    assert reply.prompt == (format_prompt(PY_Q) + "Use reversed(x) or x[::-1].\n\n"
                            + format_prompt("and for the keys?"))


def test_chat_mode_has_no_filter_and_story_mode_continues_the_text(ckpt):
    params = SamplingParams(max_new_tokens=3, seed=0)
    chat = respond([user("What do ball pythons eat?")], "chat", ckpt, params)
    assert not chat.refused and chat.decision is None and chat.prompt == format_prompt("What do ball pythons eat?")
    chat.text()
    story = respond([user("Once upon a time"), bot("there was"), user("Once upon a time, a cat")], "story", ckpt, params)
    assert story.prompt == "Once upon a time, a cat" and story.stream.params.stop == ()
    # story mode is the model continuing the text as written, nothing added around it
    assert story.text() == stream(ckpt.model, ckpt.tokenizer, "Once upon a time, a cat",
                                  params).text()
    assert story.stats.new_tokens == 3 or story.stats.finish_reason == "eos"


def test_prompt_leaves_out_refusals_and_joins_consecutive_questions(bpe_tokenizer):
    conv = [user("what do ball pythons eat?"), bot(REFUSAL),
            user(PY_Q), bot("x[::-1]"),
            user("here is my code: x = [1, 2]"), user("why does x.reverse() return None?")]
    prompt, notices = build_prompt(conv, bpe_tokenizer, block_size=1024, max_new_tokens=100)
    assert notices == []
    assert prompt == (format_prompt(PY_Q) + "x[::-1]\n\n"
                      + format_prompt("here is my code: x = [1, 2]\n\nwhy does x.reverse() return None?"))
    assert "pythons eat" not in prompt


def test_trimming_drops_the_oldest_turns_never_the_system_or_the_question(bpe_tokenizer):
    conv = []
    for i in range(30):
        conv += [user(f"question number {i} about lists"), bot(f"answer number {i}: use a loop")]
    conv.append(user("and the latest question?"))
    prompt, notices = build_prompt(conv, bpe_tokenizer, block_size=256, max_new_tokens=64,
                                   system="You are a helpful Python assistant.")
    assert prompt.startswith("You are a helpful Python assistant.\n\n")
    assert prompt.endswith(format_prompt("and the latest question?"))
    assert len(bpe_tokenizer.encode(prompt)) <= 256 - 64
    assert "question number 29" in prompt and "question number 0 " not in prompt
    kept = sum(f"question number {i} " in prompt for i in range(30))
    assert 0 < kept < 30
    assert notices and f"{30 - kept} oldest exchanges" in notices[0]
    # The kept turns are the newest ones, contiguous, in order.
    assert all(f"question number {i} " in prompt for i in range(30 - kept, 30))


def test_trim_notice_reaches_the_stream_stats(ckpt):
    conv = [user("x " * 20), bot("y " * 20)] * 3 + [user(PY_Q)]
    reply = respond(conv, "chat", ckpt, SamplingParams(max_new_tokens=8, seed=0))
    assert reply.notices and reply.notices[0] in reply.stats.notices
    assert len(ckpt.tokenizer.encode(reply.prompt)) <= ckpt.model.config.block_size - 8


def test_a_question_too_long_for_the_model_is_an_error_not_a_cut(bpe_tokenizer):
    with pytest.raises(ValueError, match="too long for this model.*Shorten it by about"):
        build_prompt([user("word " * 500)], bpe_tokenizer, block_size=64, max_new_tokens=16)


def test_cancel_stops_the_stream(roomy_ckpt):
    stop = threading.Event()
    stop.set()
    reply = respond([user(PY_Q)], "python", roomy_ckpt, SamplingParams(max_new_tokens=20), cancel=stop,
                    code_filter=RULES)
    assert reply.text() == "" and reply.stats.finish_reason == "cancelled"


@pytest.mark.parametrize("conversation, message", [
    ([], "conversation is empty"),
    ("hello", "must be a list"),
    ([user("hi"), bot("hello")], "must end with the user's message"),
    ([{"role": "system", "content": "x"}, user("hi")], "role must be 'user' or 'assistant'"),
    ([user("   ")], "the last message is empty"),
    ([{"content": "hi"}], "must be a dict with 'role' and 'content'"),
    ([user(42)], "content must be text"),
])
def test_bad_conversations_are_named(ckpt, conversation, message):
    with pytest.raises(ValueError, match=message):
        respond(conversation, "python", ckpt, code_filter=RULES)


def test_bad_mode_params_and_checkpoint(ckpt):
    with pytest.raises(ValueError, match="mode must be one of python, chat, story"):
        respond([user(PY_Q)], "poetry", ckpt)
    with pytest.raises(ValueError, match="params must be a SamplingParams"):
        respond([user(PY_Q)], "chat", ckpt, {"temperature": 1.0})
    with pytest.raises(ValueError, match="checkpoint must have .model and .tokenizer"):
        respond([user(PY_Q)], "chat", object())


def test_content_blocks_are_accepted():
    turns = normalize_conversation([{"role": "user", "content": [{"type": "text", "text": "hello"},
                                                                 {"type": "image", "url": "x.png"}]}])
    assert turns == [{"role": "user", "content": "hello"}]


def test_reply_is_a_plain_object():
    r = Reply(mode="chat")
    assert list(r) == [] and r.reason == "" and r.stats is None
