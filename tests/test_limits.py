"""app.limits: input limits, text and chat histories from clients, sampling values from UIs."""

from __future__ import annotations

import math

import pytest

from app import limits as L
from engine.sampling import SamplingParams


def test_clean_text_strips_controls_keeps_unicode():
    text = "a\x00b\x1b[31m\u200fשלום 🙂‍🔥\r\nnext\rline\ttab"
    assert L.clean_text(text) == "ab[31m\u200fשלום 🙂‍🔥\nnext\nline\ttab"
    assert L.clean_text("x\ud800y") == "xy"  # a lone surrogate cannot be encoded


@pytest.mark.parametrize("bad, words", [
    ("x" * 100_000, ["100,000 characters", "8,000"]),
    ("", ["empty"]),
    ("  \n\t ", ["empty"]),
    ("\x00\x01", ["empty"]),
    (42, ["must be text", "int"]),
])
def test_clean_text_rejects_with_a_message(bad, words):
    with pytest.raises(ValueError) as e:
        L.clean_text(bad, "prompt")
    for w in words:
        assert w in str(e.value)


def test_sampling_params_from_ui_values():
    p = L.sampling_params(temperature=0.5, top_k=40.0, top_p="0.9", repetition_penalty=1.2,
                          max_new_tokens=12.0, seed=7.0)
    assert (p.temperature, p.top_k, p.top_p, p.repetition_penalty, p.max_new_tokens, p.seed) == \
        (0.5, 40, 0.9, 1.2, 12, 7)
    assert isinstance(p.top_k, int) and isinstance(p.seed, int)
    d = L.sampling_params()
    assert d.temperature == L.SAMPLING_DEFAULTS["temperature"] and d.seed is None
    for empty in (None, "", -1):
        assert L.sampling_params(seed=empty).seed is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_p=1.5), "top_p must be between 0.05 and 1, got 1.5"),
    (dict(temperature=-1), "temperature must be between 0 and 2, got -1.0"),
    (dict(top_k=2.5), "top_k must be a whole number, got 2.5"),
    (dict(max_new_tokens=100_000), "max_new_tokens must be between 1 and 1024"),
    (dict(temperature="hot"), "temperature must be a number, got 'hot'"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(repetition_penalty=True), "repetition_penalty must be a number"),
    (dict(seed=-5), "seed must be between 0 and 2147483647"),
    (dict(seed=1.5), "seed must be a whole number"),
])
def test_sampling_params_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        L.sampling_params(**kwargs)


def test_limits_match_the_engine():
    """Every value the sliders allow is one SamplingParams accepts."""
    for bound in ("lo", "hi"):
        values = {n: getattr(limit, bound) for n, limit in L.SAMPLING.items() if n != "seed"}
        params = L.sampling_params(**values)  # raises if the engine refuses a value
        assert {n: getattr(params, n) for n in values} == values, bound
        assert SamplingParams(**values) == params, bound  # the engine's own check, directly
    assert L.SAMPLING_FIELDS == tuple(L.SAMPLING_DEFAULTS) == tuple(L.SAMPLING)
    assert all(limit.label and limit.help for limit in L.SAMPLING.values())


def test_whole_number_fields():
    integer = {n for n, limit in {**L.SAMPLING, **L.TRAINING}.items() if limit.integer}
    assert integer == {"top_k", "max_new_tokens", "seed", "max_steps", "batch_size",
                       "block_size", "eval_every", "save_every", "log_every", "lora_rank"}
    assert L.check("max_steps", "20", L.TRAINING["max_steps"]) == 20
    assert L.check("lr", "3e-4", L.TRAINING["lr"]) == 3e-4
    with pytest.raises(ValueError, match="max_steps must be between 1 and 1000000, got 0"):
        L.check("max_steps", 0, L.TRAINING["max_steps"])


def test_clean_history_reads_messages_as_the_engine_does():
    history = [{"role": "user", "content": "hi\x00"},
               {"role": "assistant", "content": "hello", "metadata": None, "options": []},
               {"role": "assistant", "content": "a note", "metadata": {"title": "Why I declined"}},
               {"role": "user", "content": [{"type": "text", "text": "two"},
                                            {"type": "file", "path": "x.png"},
                                            {"type": "text", "text": "parts"}]}]
    assert L.clean_history(history) == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "two\nparts"}]
    kept = L.clean_history(history, keep_notes=True)
    assert kept[2] == {"role": "assistant", "content": "a note",
                       "metadata": {"title": "Why I declined"}}
    assert L.clean_history(None) == []
    sources = {"role": "assistant", "content": "1. [x](https://docs.python.org/3/)",
               "metadata": {"title": "Sources (1)", "status": "done", "log": "dropped"}}
    assert L.clean_history([sources]) == []  # a note is never part of the conversation
    assert L.clean_history([sources], keep_notes=True)[0]["metadata"] == {
        "title": "Sources (1)", "status": "done"}  # shown collapsed, as it was
    long = [{"role": "user", "content": str(i)} for i in range(L.MAX_HISTORY_MESSAGES + 5)]
    assert L.clean_history(long)[0]["content"] == "5"


@pytest.mark.parametrize("history, message", [
    ("not a list", "must be a list"),
    ([{"role": "system", "content": "x"}], r"history\[0\]: role must be 'user' or 'assistant'"),
    ([{"role": "user", "content": 5}], r"chat history\[0\]: content must be text"),
    ([{"content": "no role"}], r"chat history\[0\] must be a dict with 'role' and 'content'"),
    ([{"role": "user", "content": "x" * 9000}], "chat history message is 9,000 characters"),
])
def test_clean_history_rejects_with_a_message(history, message):
    with pytest.raises(ValueError, match=message):
        L.clean_history(history)
