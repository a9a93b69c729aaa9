"""Streaming generation: KV cache, UTF-8, stop strings, cancel, seeds, the context window."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.config import GPTConfig
from engine.generation import generate, stream
from engine.model import GPT, KVCache
from engine.sampling import RepetitionPenalty, SamplingParams
from conftest import TINY, make_model

GREEDY = dict(temperature=0.0, repetition_penalty=1.0)


class ScriptedGPT(GPT):
    """A real GPT (so the cache and the context checks run) whose next token follows a script:
    the logits put all the mass on script[i] at decode step i (then repeat the last token)."""

    def __init__(self, vocab_size: int, script: list[int], **overrides) -> None:
        super().__init__(GPTConfig(vocab_size=vocab_size, **{**TINY, **overrides}))
        self.script = script
        self.calls = 0
        self.eval()

    def forward(self, idx, targets=None, cache=None, last_only=False):
        logits, _ = super().forward(idx, targets, cache, last_only)
        token = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        scripted = torch.full_like(logits, -1e4)
        scripted[..., token] = 1e4
        return scripted, None


def test_kv_cache_equals_full_forward():
    model = make_model(97)
    idx = torch.randint(0, 97, (1, 30))
    full, _ = model(idx)
    cache = KVCache(model.config, 1, model.config.block_size, "cpu", torch.float32)
    with torch.inference_mode():
        parts = [model(idx[:, :10], cache=cache)[0]]  # prefill
        parts += [model(idx[:, 10:17], cache=cache)[0]]  # a chunk after the prefill (mask path)
        parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(17, 30)]  # decode
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.pos == 30
    with pytest.raises(ValueError, match="cache length 65 exceeds the context window 64"):
        KVCache(model.config, 1, 65, "cpu", torch.float32)


def test_streamed_greedy_equals_argmax_of_full_forward(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    prompt = bpe_tokenizer.encode("Once upon a time")
    s = stream(model, bpe_tokenizer, prompt, SamplingParams(**GREEDY, max_new_tokens=12))
    s.text()
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(len(s.token_ids)):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    assert ids[len(prompt):] == s.token_ids


def test_utf8_characters_are_never_split(gpt2_tokenizer):
    text = "é世🙂👍🏽 ok"
    ids = gpt2_tokenizer.encode(text)
    assert any(b"\xef\xbf\xbd" == gpt2_tokenizer.decode([i]).encode() for i in ids)  # partial bytes
    model = ScriptedGPT(50257, ids + [gpt2_tokenizer.eot_id])
    s = stream(model, gpt2_tokenizer, "x", SamplingParams(**GREEDY, max_new_tokens=50))
    deltas = list(s)
    assert "".join(deltas) == text and s.stats.finish_reason == "eos"
    assert all("\ufffd" not in d for d in deltas) and len(deltas) > 1


@pytest.mark.parametrize("stop, expected", [
    (["STOP"], "Hello world. "),
    (["orld", "STOP"], "Hello w"),  # the earliest stop wins
    (["Hello"], ""),
    (["never there"], "Hello world. STOP here and more"),
])
def test_stop_strings_are_never_emitted(gpt2_tokenizer, stop, expected):
    text = "Hello world. STOP here and more"
    ids = [gpt2_tokenizer.encode(c)[0] for c in text]  # one token per character: stops span tokens
    model = ScriptedGPT(50257, ids + [gpt2_tokenizer.eot_id])
    s = stream(model, gpt2_tokenizer, "x", SamplingParams(**GREEDY, max_new_tokens=100, stop=stop))
    seen = ""
    for delta in s:
        seen += delta
        assert not any(x in seen for x in stop)
        for x in stop:  # nothing emitted may end in a prefix of a stop that later completes
            assert seen == expected[:len(seen)]
    assert seen == expected
    assert s.stats.finish_reason == ("eos" if expected == text else "stop")


def test_cancel_between_tokens(bpe_tokenizer):
    ids = bpe_tokenizer.encode("the cat sat")
    event = threading.Event()
    scripted = ScriptedGPT(bpe_tokenizer.vocab_size, ids * 20)
    s = stream(scripted, bpe_tokenizer, "hi", SamplingParams(**GREEDY, max_new_tokens=50),
               cancel=event)
    next(s)
    event.set()
    rest = list(s)
    assert s.stats.finish_reason == "cancelled" and s.stats.new_tokens < 5 and len(rest) <= 1
    calls = iter([False, False, True])
    s2 = stream(scripted, bpe_tokenizer, "hi", SamplingParams(**GREEDY, max_new_tokens=50),
                cancel=lambda: next(calls))
    s2.text()
    assert s2.stats.finish_reason == "cancelled" and s2.stats.new_tokens == 2


def test_same_seed_same_text(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size, seed=5)
    params = SamplingParams(temperature=1.0, top_k=0, max_new_tokens=30, seed=123)
    a = stream(model, bpe_tokenizer, "The dog", params)
    b = stream(model, bpe_tokenizer, "The dog", params)
    c = stream(model, bpe_tokenizer, "The dog", params.replace(seed=124))
    assert a.text() == b.text() and a.token_ids == b.token_ids
    c.text()
    assert c.token_ids != a.token_ids


def test_long_prompt_and_long_output_fit_the_window_with_notices(bpe_tokenizer):
    ids = bpe_tokenizer.encode("the cat sat on the mat " * 20)
    assert len(ids) > 64
    model = ScriptedGPT(bpe_tokenizer.vocab_size, ids[:5])
    s = stream(model, bpe_tokenizer, ids, SamplingParams(**GREEDY, max_new_tokens=100))
    text = s.text()
    assert s.stats.new_tokens == 100 and s.stats.finish_reason == "length"
    assert text == bpe_tokenizer.decode(s.token_ids)
    assert any("kept the last 32" in n and "64-token context window" in n for n in s.stats.notices)
    assert any(n.startswith("Reached the 64-token context window") for n in s.stats.notices)


def test_window_refill_matches_a_fresh_prefill(bpe_tokenizer):
    """After the cache fills, decoding continues from the re-encoded recent half: its logits
    are those of a fresh forward over exactly those tokens."""
    model = make_model(bpe_tokenizer.vocab_size, seed=9)
    prompt = torch.randint(0, bpe_tokenizer.vocab_size, (30,), generator=torch.Generator().manual_seed(0)).tolist()
    prompt = [t for t in prompt if t != bpe_tokenizer.eot_id]
    # Greedy with a repetition penalty: a random model would otherwise repeat one token.
    params = SamplingParams(temperature=0, repetition_penalty=3.0, max_new_tokens=40)
    s = stream(model, bpe_tokenizer, prompt, params)
    s.text()
    assert len(set(s.token_ids)) > 10
    assert s.stats.new_tokens == 40, "the model ended early; pick another seed"
    assert [n for n in s.stats.notices if "Reached the 64-token" in n] == [
        "Reached the 64-token context window; continuing from the last 32 tokens."]
    seq, p = prompt + s.token_ids, len(prompt)
    fill = 64 - p  # the output token whose arrival found the cache full
    def greedy_next(context: list[int]) -> int:
        with torch.inference_mode():
            logits = model(torch.tensor([context]))[0][0, -1]
        return int(RepetitionPenalty(3.0)(logits, torch.tensor(context)).argmax())

    assert s.token_ids[10] == greedy_next(seq[:p + 10])
    # The next token after the refill sees only the 32 re-encoded tokens (positions 0..31).
    assert s.token_ids[fill + 1] == greedy_next(seq[p + fill + 1 - 32:p + fill + 1])
    assert s.token_ids[fill + 2] == greedy_next(seq[p + fill + 2 - 33:p + fill + 2])


def test_bad_prompts_and_empty_prompt(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size)
    with pytest.raises(ValueError, match="prompt token id 9999 is outside the vocabulary"):
        stream(model, bpe_tokenizer, [1, 9999])
    out = generate(model, bpe_tokenizer, "", SamplingParams(**GREEDY, max_new_tokens=5))
    # An empty prompt starts a document: the greedy continuation of the end-of-text token,
    # worked out here with the bare model.
    ids = [bpe_tokenizer.eot_id]
    with torch.no_grad():
        for _ in range(5):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    assert bpe_tokenizer.eot_id not in ids[1:]  # (else the expected text would stop there)
    assert out == bpe_tokenizer.decode(ids[1:]) and out


def test_stats(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size)
    s = stream(model, bpe_tokenizer, "hello", SamplingParams(**GREEDY, max_new_tokens=8))
    s.text()
    st = s.stats
    assert st.prompt_tokens == len(bpe_tokenizer.encode("hello"))
    assert 0 < st.prefill_s <= st.elapsed_s and st.new_tokens <= 8
    assert st.finish_reason in ("length", "eos")


def test_decode_steps_run_on_decode_threads_and_prefill_on_all(bpe_tokenizer, monkeypatch):
    """Each one-token decode step (model and draw) runs on DECODE_THREADS intra-op threads;
    the prompt's prefill and the window refill keep torch's count, which is restored after
    every step. The text is the same as decoding on all threads."""
    from engine import generation

    model = make_model(bpe_tokenizer.vocab_size, seed=9)
    prompt = bpe_tokenizer.encode("Once upon a time")
    params = SamplingParams(**GREEDY, max_new_tokens=70)  # past the 64-token window: a refill
    torch.set_num_threads(2)
    seen: list[tuple[int, int]] = []  # (tokens fed, threads) per forward pass
    forward = model.forward

    def recording(idx, *args, **kwargs):
        seen.append((idx.size(1), torch.get_num_threads()))
        return forward(idx, *args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    monkeypatch.setattr(generation, "DECODE_THREADS", None)
    everywhere = stream(model, bpe_tokenizer, prompt, params).text()
    assert {threads for _, threads in seen} == {2}
    seen.clear()
    monkeypatch.setattr(generation, "DECODE_THREADS", 1)
    s = stream(model, bpe_tokenizer, prompt, params)
    chunks = []
    for delta in s:
        assert torch.get_num_threads() == 2  # the reader's code runs on the full count
        chunks.append(delta)
    assert "".join(chunks) == everywhere and s.stats.new_tokens == 70
    assert {threads for fed, threads in seen if fed == 1} == {1}
    assert {threads for fed, threads in seen if fed > 1} == {2}  # prefill and the refill
    assert len([fed for fed, _ in seen if fed > 1]) == 2
