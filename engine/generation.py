"""Streaming generation: prefill the prompt once, then decode one token at a time from a KV cache.

`stream()` returns a TextStream: iterate it for text deltas; when it ends, `.stats` says how
many tokens, how fast, and why it stopped. Deltas never split a multi-byte UTF-8 character
(token bytes go through an incremental decoder), stop strings are never emitted (text that could
be the start of one is held back until it is decided), and a cancel event is checked between
tokens.

Context window: GPT-2 has learned absolute positions, so a sequence cannot grow past
block_size. A prompt too long to leave room for the output keeps its most recent tokens; when the
cache fills during decoding, the most recent half of the window is re-encoded and decoding goes
on from there. Both are reported in `stats.notices`, never silent.

Threads: on a CPU with at most two cores each decode step (one new token: the model step and
the draw) runs on one intra-op thread (`DECODE_THREADS`); the prompt's prefill uses torch's
thread count. See `decode_threads`.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from .model import GPT, KVCache
from .sampling import Sampler, SamplingParams
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Intra-op threads for one decode step of one sequence on the CPU; None keeps torch's count.
# Such a step is a chain of small kernels (GPT-2 124M at int8: 49 products of one row with a
# weight matrix, 12 attentions of one query), and torch forks and joins its threads for each
# of them. On this project's 2-core machine one thread decoded faster than two, and far faster
# whenever another process wanted a core (python -m benchmarks.decode; docs/engine.md, "Speed").
# Larger machines keep torch's count until measured there.
DECODE_THREADS: int | None = 1 if (os.cpu_count() or 1) <= 2 else None


def decode_threads(device: torch.device) -> contextlib.AbstractContextManager:
    """Run the body on DECODE_THREADS intra-op threads (CPU only), then restore the count."""
    return intra_op_threads(device, DECODE_THREADS)


@contextlib.contextmanager
def intra_op_threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """Run the body on at most `threads` intra-op threads (CPU only; None: torch's count),
    then restore the count. torch's count is per OS thread here (OpenMP), so concurrent
    streams do not disturb each other."""
    before = torch.get_num_threads()
    if device.type != "cpu" or threads is None or before <= threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    elapsed_s: float = 0.0
    finish_reason: str = ""  # "eos" | "stop" | "length" | "cancelled"
    notices: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        decode_s = self.elapsed_s - self.prefill_s
        return self.new_tokens / decode_s if decode_s > 0 else 0.0


class TextStream:
    """Iterator of text deltas for one generation; `.stats` is filled as it runs."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, prompt_ids: Sequence[int],
                 params: SamplingParams, cancel: threading.Event | Callable[[], bool] | None,
                 constraint=None) -> None:
        self.model = model
        self.constraint = constraint  # see Sampler: masks logits, e.g. grounded inline names
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.cancel = cancel
        self.stats = GenerationStats(prompt_tokens=len(self.prompt_ids))
        self.token_ids: list[int] = []  # the generated tokens (stop strings may cut the text)
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._iter)

    def text(self) -> str:
        """Run to the end and return the whole text."""
        return "".join(self)

    def _cancelled(self) -> bool:
        c = self.cancel
        if c is None:
            return False
        return c.is_set() if isinstance(c, threading.Event) else bool(c())

    def _run(self) -> Iterator[str]:
        model, params, stats = self.model, self.params, self.stats
        block = model.config.block_size
        param = next(model.parameters())
        device = param.device
        t0 = time.perf_counter()
        ids = self._fitted_prompt(block)

        # Token ids in context, preallocated (one slot past the window for the token that fills
        # it) so each step writes one id instead of concatenating a new tensor.
        tokens = torch.empty(block + 1, dtype=torch.long, device=device)
        n = len(ids)
        tokens[:n] = torch.tensor(ids, dtype=torch.long)
        cache = KVCache(model.config, 1, block, device, param.dtype)
        sampler = Sampler(params, device, self.constraint)
        text = TextDeltas(self.tokenizer, params.stop)
        window = params.repetition_window

        with torch.inference_mode():
            logits = model(tokens[:n].view(1, -1), cache=cache, last_only=True)[0][0, -1]
        stats.prefill_s = time.perf_counter() - t0
        stats.finish_reason = "length"
        for _ in range(params.max_new_tokens):
            if self._cancelled():
                stats.finish_reason = "cancelled"
                break
            history = tokens[max(0, n - window) if window else 0:n]
            with torch.inference_mode(), decode_threads(device):
                token = sampler(logits, history)
            if token == self.tokenizer.eot_id:
                stats.finish_reason = "eos"
                break
            self.token_ids.append(token)
            stats.new_tokens += 1
            delta = text.add(token)
            if text.stopped:
                stats.finish_reason = "stop"
                break
            if delta:
                stats.elapsed_s = time.perf_counter() - t0
                yield delta
            if stats.new_tokens == params.max_new_tokens:
                break  # skip the forward pass for a token we would not use
            with torch.inference_mode():
                logits, n = self._advance(tokens, n, token, cache)
        rest = text.finish()
        stats.elapsed_s = time.perf_counter() - t0
        if rest:
            yield rest

    def _fitted_prompt(self, block: int) -> list[int]:
        return fit_prompt(self.prompt_ids, self.tokenizer, self.params, block, self.stats.notices)

    def _advance(self, tokens: torch.Tensor, n: int, token: int, cache: KVCache) -> tuple[torch.Tensor, int]:
        """Put token at position n and run the model on it (cached); returns the logits for the
        next token and the new length. Call under torch.inference_mode()."""
        block = self.model.config.block_size
        tokens[n] = token
        n += 1
        if cache.pos < block:
            with decode_threads(tokens.device):
                return self.model(tokens[n - 1:n].view(1, 1), cache=cache, last_only=True)[0][0, -1], n
        # Window full: re-encode the most recent half and continue from there.
        keep = block // 2
        tokens[:keep] = tokens[n - keep:n].clone()
        cache.reset()
        self.stats.notices.append(
            f"Reached the {block}-token context window; continuing from the last {keep} tokens.")
        log.info(self.stats.notices[-1])
        return self.model(tokens[:keep].view(1, -1), cache=cache, last_only=True)[0][0, -1], keep


def fit_prompt(prompt_ids: Sequence[int], tokenizer: Tokenizer, params: SamplingParams, block: int,
               notices: list[str]) -> list[int]:
    """The prompt's ids, or its last ones (with a notice) when the whole would leave the
    output less room than it asks for, up to half the window."""
    ids = list(prompt_ids) or [tokenizer.eot_id]  # empty prompt: start of a document
    # Keep room for the output (up to half the window) so a long prompt does not force a
    # re-encode after every token.
    room = min(params.max_new_tokens, block // 2)
    if len(ids) > block - room:
        keep = block - room
        notices.append(f"The prompt has {len(ids)} tokens; kept the last {keep} to fit the "
                       f"model's {block}-token context window.")
        log.warning(notices[-1])
        ids = ids[-keep:]
    return ids


class TextDeltas:
    """Generated tokens -> text deltas for one generation, shared by stream() and the batched
    scheduler (engine.serving): a delta never splits a multi-byte UTF-8 character, and text that
    could be the start of a stop string is held back until it is decided.

        delta = text.add(token)   # what can be shown now ("" if nothing yet)
        if text.stopped: ...      # a stop string completed: end the generation
        rest = text.finish()      # at the end: what was held back (up to the stop string)
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.max_stop = max((len(s) for s in self.stop), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # decoded text not yet emitted (it may be the start of a stop string)
        self.stopped = False

    def add(self, token: int) -> str:
        self.pending += self.decoder.decode(self.tokenizer.token_bytes(token))
        if self.stop:
            hit = _find_stop(self.pending, self.stop)
            if hit is not None:  # the text before it comes from finish()
                self.stopped = True
                self.pending = self.pending[:hit]
                return ""
            emit = _safe_prefix(self.pending, self.stop, self.max_stop)
        else:
            emit = len(self.pending)
        delta, self.pending = self.pending[:emit], self.pending[emit:]
        return delta

    def finish(self) -> str:
        if not self.stopped:
            self.pending += self.decoder.decode(b"", final=True)
        rest, self.pending = self.pending, ""
        return rest


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in text, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _safe_prefix(text: str, stops: Sequence[str], max_stop: int) -> int:
    """How much of text can be emitted: all but a tail that could begin a stop string."""
    for start in range(max(0, len(text) - max_stop + 1), len(text)):
        tail = text[start:]
        if any(s.startswith(tail) for s in stops):
            return start
    return len(text)


def stream(model: GPT, tokenizer: Tokenizer, prompt: str | Sequence[int],
           params: SamplingParams | None = None,
           cancel: threading.Event | Callable[[], bool] | None = None,
           constraint=None) -> TextStream:
    """Stream the continuation of `prompt` (text, or token ids) as text deltas. `constraint`
    (optional, one per generation) masks each step's logits: engine.inline_code."""
    params = params or SamplingParams()
    ids = prompt_ids(model, tokenizer, prompt)
    if model.training:
        model.eval()
    return TextStream(model, tokenizer, ids, params, cancel, constraint)


def prompt_ids(model: GPT, tokenizer: Tokenizer, prompt: str | Sequence[int]) -> list[int]:
    """The prompt as token ids (text is encoded; ids are checked against the vocabulary)."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    ids = [int(i) for i in prompt]
    bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
    if bad:
        raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary (0..{model.config.vocab_size - 1})")
    return ids


def generate(model: GPT, tokenizer: Tokenizer, prompt: str | Sequence[int],
             params: SamplingParams | None = None) -> str:
    """The whole continuation as one string."""
    return stream(model, tokenizer, prompt, params).text()
