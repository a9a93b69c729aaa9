"""Grounded names: a grounded answer's `inline code` is spelled as its sources spell it."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from engine.inline_code import InlineCodeConstraint, base_names, passage_names
from engine.sampling import Sampler, SamplingParams

PASSAGE = SimpleNamespace(
    title="str.split()", api="str.split",
    text="`str.split(sep=None, maxsplit=-1)`\n\nReturn a list of the words in the string, using "
         "`sep` as the delimiter. See also `str.rsplit()`.\n\n```\n>>> '1,2'.split(',')\n```")
FAQ = SimpleNamespace(title="How do I iterate over a sequence in reverse order?", api="",
                      text="Use the `reversed()` built-in function:\n\n```\nfor x in reversed(s):\n```")


def test_names_come_from_titles_apis_signatures_and_inline_code():
    names = passage_names([PASSAGE, FAQ])
    assert {"str.split()", "str.split", "split", "split()", "sep", "str.rsplit()",
            "reversed()"} <= names
    assert "How do I iterate over a sequence in reverse order?" not in names  # prose, not a name
    assert {"len()", "None", "for", "dict"} <= base_names()


def spans(text: str) -> list[str]:
    """The inline code spans of text outside ``` blocks (the last one may be unfinished)."""
    outside = text.split("```")[::2]
    return [s for part in outside for s in re.findall(r"`([^`]*)`", part)]


def test_a_span_can_only_continue_towards_a_name(gpt2_tokenizer):
    tok = gpt2_tokenizer
    c = InlineCodeConstraint(tok, ["str.split()", "str.strip()"])
    for t in tok.encode("Use `str.s"):
        c.observe(t)
    assert c.span() == "str.s"
    allowed = {tok.decode([i]) for i in c.allowed_in_span(c.span())}
    assert {"p", "pl", "trip"} <= allowed
    names = ("str.split()", "str.strip()")
    assert all(any(n.startswith("str.s" + a) for n in names) for a in allowed)
    # A token that closes the span early ("str.s`") is not allowed; closing on a name is.
    assert "`" not in allowed
    c2 = InlineCodeConstraint(tok, ["str.split()"])
    for t in tok.encode("Use `str.split()"):
        c2.observe(t)
    assert any(a.startswith("`") for a in (tok.decode([i]) for i in c2.allowed_in_span(c2.span())))


def test_random_logits_only_ever_write_allowed_spans_and_code_blocks_stay_free(gpt2_tokenizer):
    """Whatever the model would pick, every finished inline span is a name; text inside ```
    blocks is not held to names."""
    tok = gpt2_tokenizer
    names = ["list.reverse()", "reversed()", "x[::-1]"]
    tick = tok.encode(" `")[0]
    g = torch.Generator().manual_seed(0)
    finished = []
    for seed in range(3):
        c = InlineCodeConstraint(tok, names)
        sampler = Sampler(SamplingParams(temperature=1.0, top_k=50, seed=seed), constraint=c)
        out = []
        for step in range(80):
            logits = torch.randn(tok.vocab_size, generator=g) * 3
            if step % 10 == 0:
                logits[tick] += 40  # open a span now and then
            out.append(sampler(logits, torch.tensor(out or [0])))
        text = tok.decode(out)
        assert c.text == text.replace("\ufffd", "")  # bytes of a split character: no ticks
        these = spans(text)
        assert all(s in names for s in these), text
        parts = text.split("```")
        if len(parts) % 2 and parts[-1].count("`") % 2:  # a span is open: its start is a name's
            assert any(n.startswith(c.span()) for n in names)
        finished += these
    assert len(finished) >= 2  # seeded: these draws finish two spans


def test_inside_a_code_block_nothing_is_masked(gpt2_tokenizer):
    c = InlineCodeConstraint(gpt2_tokenizer, ["len()"])
    for t in gpt2_tokenizer.encode("Example:\n```\nx = `"):
        c.observe(t)
    assert c.span() is None
    logits = torch.zeros(gpt2_tokenizer.vocab_size)
    assert torch.equal(c(logits), logits)


def test_outside_a_span_only_bad_openers_are_masked(gpt2_tokenizer):
    tok = gpt2_tokenizer
    c = InlineCodeConstraint(tok, ["len()"])
    out = c(torch.zeros(tok.vocab_size))
    blocked = {tok.decode([i]) for i in torch.nonzero(out == float("-inf")).flatten().tolist()}
    assert blocked and all("`" in b for b in blocked)
    assert " `" not in blocked and "```" not in blocked  # opening a span or a block stays free
    assert (out == 0).sum() > tok.vocab_size - 200


def test_needs_a_name():
    with pytest.raises(ValueError, match="at least one name"):
        InlineCodeConstraint(SimpleNamespace(vocab_size=0, eot_id=0, token_bytes=bytes), [])


class OnlyToken:
    """A constraint that allows one token: shows whether a streamer applies it."""

    def __init__(self, token: int) -> None:
        self.token, self.seen = token, []

    def __call__(self, logits):
        out = torch.full_like(logits, float("-inf"))
        out[self.token] = 0.0
        return out

    def observe(self, token: int) -> None:
        self.seen.append(token)


def test_both_streamers_apply_a_constraint(tiny_model, bpe_tokenizer):
    from engine.generation import stream
    from engine.serving import GenerationService

    token = bpe_tokenizer.encode("e")[0]
    params = SamplingParams(max_new_tokens=5, seed=0)
    for streamer in (stream, GenerationService().stream):
        c = OnlyToken(token)
        s = streamer(tiny_model, bpe_tokenizer, "hello", params, None, constraint=c)
        assert s.text() == "e" * 5 and c.seen == [token] * 5


def test_a_grounded_reply_holds_names_to_its_sources(tiny_model, bpe_tokenizer):
    from test_retrieval import RULES, make_index

    from engine.assistant import respond

    seen = {}

    def spy(model, tokenizer, prompt, params, cancel, constraint=None):
        seen["constraint"] = constraint
        from engine.generation import stream
        return stream(model, tokenizer, prompt, params, cancel, constraint=constraint)

    from conftest import make_model
    ckpt = SimpleNamespace(model=make_model(bpe_tokenizer.vocab_size, block_size=512),
                           tokenizer=bpe_tokenizer, grounding="python-docs")
    ask = [{"role": "user", "content": "How do I reverse a list in Python?"}]
    params = SamplingParams(max_new_tokens=3, seed=0)
    respond(ask, "python", ckpt, params, code_filter=RULES, index=make_index(), streamer=spy).text()
    assert {"list.reverse()", "reverse()", "len()"} <= seen["constraint"].names
    respond(ask, "python", ckpt, params, code_filter=RULES, index=make_index(), streamer=spy,
            grounded_names=False).text()
    assert seen["constraint"] is None
    ungrounded = SimpleNamespace(model=ckpt.model, tokenizer=bpe_tokenizer)
    respond(ask, "python", ungrounded, params, code_filter=RULES, streamer=spy).text()
    assert seen["constraint"] is None  # no sources, nothing to hold names to
