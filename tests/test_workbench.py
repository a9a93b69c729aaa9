"""app.workbench: chat and story through the engine's chat modes, and the sampling explorer's
data, as both front ends call them; the process-wide workbench."""

from __future__ import annotations

import pytest

from app import workbench as W
from app.limits import sampling_params
from engine.assistant import respond
from gradio_support import make_workbench


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("wb"))


def test_story_streams(wb):
    params = sampling_params(max_new_tokens=12, seed=1)
    reply = wb.story("Once upon a time", wb.models.default("story"), params)
    deltas = list(reply)
    assert len(deltas) > 1 and "".join(deltas)
    assert reply.stats.new_tokens == 12 and reply.stats.tokens_per_s > 0
    again = wb.story("Once upon a time", wb.models.default("story"), params).text()
    assert again == "".join(deltas)  # same seed, same story


def test_chat_python_mode_refuses_off_topic(wb):
    params = sampling_params(max_new_tokens=8, seed=0)
    reply = wb.chat("What is the best pizza in Rome?", [], "python", wb.models.default(), params)
    assert reply.refused and reply.refusal and reply.reason
    question = "How do I reverse a list in Python?"
    answer = wb.chat(question, [], "python", wb.models.default(), params)
    assert not answer.refused and question in answer.prompt
    # accepted means answered by the model: the same text the engine's Python mode gives
    direct = respond([{"role": "user", "content": question}], "python",
                     wb.models.load(wb.models.default()), params)
    assert answer.text() == direct.text() and answer.stats.new_tokens >= 1


def test_chat_free_mode_and_history(wb):
    params = sampling_params(max_new_tokens=6, seed=3)
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello", "metadata": None},
               {"role": "assistant", "content": "a note", "metadata": {"title": "Why I declined"}},
               {"role": "user", "content": [{"type": "text", "text": "parts"}]},
               {"role": "assistant", "content": "ok"}]
    reply = wb.chat("Tell me more", history, "chat", wb.models.default(), params)
    assert not reply.refused and "Tell me more" in reply.prompt and "a note" not in reply.prompt
    reply.text()


@pytest.mark.parametrize("history, message", [
    ("not a list", "must be a list"),
    ([{"role": "system", "content": "x"}], "role must be 'user' or 'assistant'"),
    ([{"role": "user", "content": 5}], "content must be text"),
])
def test_chat_rejects_bad_history(wb, history, message):
    with pytest.raises(ValueError, match=message):
        wb.chat("hi", history, "chat", wb.models.default(), sampling_params())


def test_chat_rejects_unknown_mode(wb):
    with pytest.raises(ValueError, match="unknown chat mode 'story'"):
        wb.chat("hi", [], "story", wb.models.default(), sampling_params())


def test_explain_next(wb):
    spec = wb.models.default("story")
    params = sampling_params(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.3)
    r = wb.explain_next("the cat and the cat", spec, params, top=8)
    names = [s["name"] for s in r["stages"]]
    assert names == ["raw", "repetition penalty", "temperature", "top-k", "top-p"]
    assert len(r["tokens"]) == len(r["token_ids"]) >= 8
    assert all(len(s["probs"]) == len(r["tokens"]) for s in r["stages"])
    final = r["stages"][-1]["probs"]
    assert 1 <= sum(p > 0 for p in final) <= 5  # top-k 5 leaves at most 5 candidates
    assert r["context_tokens"] == 5 and r["truncated"] is False
    greedy = wb.explain_next("the cat", spec, sampling_params(temperature=0), top=3)
    assert greedy["stages"][-1]["name"] == "greedy"
    assert sorted(greedy["stages"][-1]["probs"])[-1] == 1.0
    long = wb.explain_next("word " * 500, spec, params, top=3)  # a 64-token window
    assert long["truncated"] and long["context_tokens"] == 64
    empty = wb.explain_next("", spec, params, top=3)  # the start of a document
    assert empty["context_tokens"] == 1
    with pytest.raises(ValueError, match="top must be a whole number between 1 and 30"):
        wb.explain_next("x", spec, params, top=0)


def test_process_wide_workbench(tmp_path):
    first = W.configure(runs_dir=tmp_path / "runs")
    assert W.get() is first and first.training.runs_dir == tmp_path / "runs"
    assert first.models.runs_dir == tmp_path / "runs"
    with pytest.raises(ValueError, match="device must be one of"):
        W.configure(device="tpu")
