"""Continuous batching: every generation a server runs goes through one GenerationService.

    service = GenerationService(ServingLimits(max_active=8, max_queue=32, time_limit_s=120))
    s = service.stream(model, tokenizer, prompt, params, cancel)   # like generation.stream()
    for ahead in s.waiting(): show(f"Queued, {ahead} ahead")       # only while it waits
    for delta in s: ...                                             # text deltas
    s.stats                                                         # GenerationStats

One scheduler per loaded model runs in its own thread and steps all of that model's active
generations together: one batched forward pass per step (GPT.decode_rows over a SlotKVCache),
so eight readers share each read of the weights instead of fighting for the cores with eight
batch-1 passes. Each generation keeps its own sampling settings, random generator (seed), stop
strings, cancel, and position in the cache. Requests join and leave between steps: newcomers'
prompts are prefilled (those of about the same length together, right-padded), then their rows
join the next batched step; a finished row's slot is reused. The draws of a step go through
sampling.draw_rows (one top-k for the rows that share settings, each row's own generator).

Threads: on a CPU with at most two cores every step runs on one intra-op thread (BATCH_THREADS
for two or more rows, generation.DECODE_THREADS for one); prefills keep torch's count. Two
threads made an 8-row step of the 124M shape up to 4x slower whenever another process wanted
a core (docs/engine.md, "Serving many requests").

Limits for the whole server (ServingLimits): at most `max_active` generations in flight over all
models; up to `max_queue` more wait in order and can ask how many are ahead of them; beyond that
ServerBusy (a ValueError with a message a person can act on). Each generation stops after
`time_limit_s` of running (finish_reason "time", with a notice). A generation ends as
"cancelled" when its cancel event is set, when its stream is closed or garbage-collected (the
client went away), or when nobody has read its output for `unread_timeout_s`.

Per-request text semantics are generation.stream()'s own (TextDeltas: UTF-8-safe deltas, stop
strings held back and never emitted; fit_prompt; the same window refill with its notice).

Seeds: a seeded request draws from its own torch.Generator, exactly as stream() does. Its text
is reproducible for a given batch composition (the same requests stepping together, and
prefilled together). In a batch the logits come from a batched matrix product whose rounding
can differ in the last bits from a batch-1 pass, so where two candidate tokens are nearly tied
a seeded (or greedy) request can pick differently alone and in company; greedy decoding of clear winners is identical. With
int8 weights (engine.precision) the CPU kernel quantizes each layer's input with one scale for
the whole batch, so the other rows' values move a row's logits a little more than rounding does.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import generation
from .generation import (DECODE_THREADS, GenerationStats, TextDeltas, fit_prompt, intra_op_threads,
                         prompt_ids)
from .model import GPT, KVCache, SlotKVCache
from .sampling import Sampler, SamplingParams, draw_rows
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

Cancel = threading.Event | Callable[[], bool] | None
_END = object()  # the last item a request's output queue receives
_exiting = threading.Event()  # the interpreter is shutting down: schedulers stop
_threads: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()

# Intra-op threads for a step of two or more rows (the draws, and the forward pass of every
# row); a step of one row is a batch-1 decode step and runs on generation.DECODE_THREADS.
# Prefills keep torch's count. None: torch's count.
BATCH_THREADS: int | None = DECODE_THREADS


def step_threads(rows: int) -> int | None:
    """Intra-op threads for a scheduler step of `rows` rows (None: torch's count)."""
    return generation.DECODE_THREADS if rows == 1 else BATCH_THREADS


@atexit.register
def _stop_schedulers() -> None:
    """Let scheduler threads end before the interpreter does: a daemon thread killed inside a
    torch call aborts the process ("terminate called without an active exception")."""
    _exiting.set()
    for t in list(_threads):
        t.join(timeout=5)


class ServerBusy(ValueError):
    """The server is running its limit of generations and its queue is full."""


@dataclass(frozen=True)
class ServingLimits:
    max_active: int = 8  # generations decoded at once, over all models (one batch per model)
    max_queue: int = 32  # more requests wait in line; beyond this ServerBusy
    time_limit_s: float = 120.0  # wall-clock limit of one generation, from when it starts
    unread_timeout_s: float = 30.0  # output nobody has read for this long: the reader is gone

    def __post_init__(self) -> None:
        for name in ("max_active", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "max_active"):
                raise ValueError(f"{name} must be a whole number >= {int(name == 'max_active')}, got {value!r}")
        for name in ("time_limit_s", "unread_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")


class _Request:
    """One generation's state. The scheduler thread owns the decoding fields; the consumer
    reads `out`. Holds nothing that refers to its ScheduledStream, so dropping the stream can
    be noticed (weakref.finalize -> closed)."""

    def __init__(self, tokenizer: Tokenizer, ids: list[int], params: SamplingParams,
                 cancel: Cancel, stats: GenerationStats, constraint=None) -> None:
        self.tokenizer, self.ids, self.params, self.cancel = tokenizer, ids, params, cancel
        self.constraint = constraint
        self.stats = stats
        self.token_ids: list[int] = []
        self.out: queue.Queue = queue.Queue()
        self.state = "queued"  # -> "running" -> "done"
        self.closed = False  # the consumer closed or dropped its stream
        self.submitted = self.last_read = time.perf_counter()
        self.started = 0.0
        # Decoding state, set when the scheduler admits it.
        self.text: TextDeltas | None = None
        self.sampler: Sampler | None = None
        self.ctx: list[int] = []  # token ids in context (the model's window)
        self.ctx_ids: np.ndarray | None = None  # the same ids, for the repetition penalty
        self.logits: torch.Tensor | None = None  # for the next token
        self.next_token = 0

    def set_ctx(self, ids: list[int], block: int) -> None:
        """The token ids in context; kept in an array too (one slot past the window, for the
        token that fills it), written one id per step: no tensor built from a list per step."""
        self.ctx = ids
        if self.ctx_ids is None:
            self.ctx_ids = np.empty(block + 1, dtype=np.int64)
        self.ctx_ids[:len(ids)] = ids

    def push(self, token: int) -> None:
        self.ctx_ids[len(self.ctx)] = token
        self.ctx.append(token)

    def history(self, device: torch.device) -> torch.Tensor:
        """The ids the repetition penalty looks at."""
        n, window = len(self.ctx), self.params.repetition_window
        return torch.from_numpy(self.ctx_ids[max(0, n - window) if window else 0:n]).to(device)

    def cancelled(self) -> bool:
        c = self.cancel
        if self.closed or c is None:
            return self.closed
        if isinstance(c, threading.Event):
            return c.is_set()
        try:
            return bool(c())
        except Exception:  # a caller's check that fails must not stop the other generations
            log.exception("a generation's cancel check failed; cancelling it")
            return True

    def emit(self, item) -> None:
        self.out.put(item)

    def end(self, reason: str | None = None, notice: str = "") -> None:
        """Finish: flush the held-back text, record why, close the output."""
        if self.state == "done":
            return
        if reason:
            self.stats.finish_reason = reason
        if notice:
            self.stats.notices.append(notice)
        if self.text is not None:
            rest = self.text.finish()
            if rest:
                self.out.put(rest)
        if self.started:
            self.stats.elapsed_s = time.perf_counter() - self.started
        self.state = "done"
        self.out.put(_END)


class ScheduledStream:
    """Iterator of text deltas for one scheduled generation (the interface of
    generation.TextStream: iterate, .text(), .stats, .token_ids), plus waiting() and close()."""

    def __init__(self, service: "GenerationService", request: _Request) -> None:
        self._service = service
        self._req = request
        self.stats = request.stats
        self.token_ids = request.token_ids
        # The consumer going away (Gradio closes or drops the generator) frees the slot.
        self._finalizer = weakref.finalize(self, _mark_closed, request)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        req = self._req
        while True:
            try:
                item = req.out.get(timeout=0.25)
            except queue.Empty:
                if req.state == "queued" and req.cancelled():
                    self._service.limit.withdraw(req)
                continue
            req.last_read = time.perf_counter()
            if item is _END:
                req.out.put(_END)  # later calls end too
                raise StopIteration
            if isinstance(item, BaseException):
                req.out.put(_END)
                raise item
            return item

    def text(self) -> str:
        """Run to the end and return the whole text."""
        return "".join(self)

    def position(self) -> int | None:
        """How many requests are ahead of this one in the queue; None once it runs."""
        return self._service.limit.position(self._req)

    def waiting(self, poll_s: float = 0.5) -> Iterator[int]:
        """While queued, yield the number of requests ahead (at once, then whenever it changes,
        checking every poll_s); returns when the generation starts, ends or is cancelled."""
        last = None
        while True:
            ahead = self.position()
            if ahead is None:
                return
            if self._req.cancelled():
                self._service.limit.withdraw(self._req)
                return
            if ahead != last:
                last = ahead
                yield ahead
            time.sleep(poll_s)

    def close(self) -> None:
        """Stop the generation (the reader is gone); what it wrote so far stays in .stats."""
        _mark_closed(self._req)
        self._service.limit.withdraw(self._req)


def _mark_closed(request: _Request) -> None:
    request.closed = True


class GenerationLimit:
    """The server-wide limit on generations in flight, and the line of those waiting."""

    def __init__(self, limits: ServingLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._active = 0
        self._queue: collections.deque[tuple[_Request, ModelScheduler]] = collections.deque()

    @property
    def active(self) -> int:
        return self._active

    def submit(self, req: _Request, scheduler: "ModelScheduler") -> None:
        with self._lock:
            self._drop_cancelled()
            if self._active < self.limits.max_active:
                self._active += 1
                scheduler.join(req)
                return
            if len(self._queue) >= self.limits.max_queue:
                raise ServerBusy(
                    f"The server is busy: {self._active} answers are being written and "
                    f"{len(self._queue)} more are waiting, the most it queues. Try again in a "
                    f"minute.")
            self._queue.append((req, scheduler))

    def release(self) -> None:
        """A generation ended: its place goes to the first live request in line."""
        with self._lock:
            self._active -= 1
            self._drop_cancelled()
            if self._queue and self._active < self.limits.max_active:
                req, scheduler = self._queue.popleft()
                self._active += 1
                scheduler.join(req)

    def withdraw(self, req: _Request) -> None:
        """A queued request was cancelled: out of the line, its stream ends."""
        with self._lock:
            self._drop_cancelled()
            for i, (r, _) in enumerate(self._queue):
                if r is req:
                    del self._queue[i]
                    r.end("cancelled")
                    return

    def position(self, req: _Request) -> int | None:
        with self._lock:
            if req.state != "queued":
                return None
            ahead = 0
            for r, _ in self._queue:
                if r is req:
                    return ahead
                if not r.cancelled():
                    ahead += 1
            return None

    def _drop_cancelled(self) -> None:
        """Queued requests whose reader is gone leave the line (call with the lock held)."""
        if any(r.cancelled() for r, _ in self._queue):
            keep = collections.deque()
            for r, s in self._queue:
                if r.cancelled():
                    r.end("cancelled")
                else:
                    keep.append((r, s))
            self._queue = keep


class ModelScheduler:
    """Steps all active generations of one model together, in a thread of its own that runs
    while there is work (and holds the model only then)."""

    def __init__(self, model: GPT, limit: GenerationLimit) -> None:
        self._model = weakref.ref(model)
        self.limit = limit
        self._cond = threading.Condition()
        self._joins: list[_Request] = []
        self._thread: threading.Thread | None = None
        self.rows: list[_Request] = []  # row i of the cache belongs to rows[i]
        self.cache: SlotKVCache | None = None
        self.steps = 0  # batched decode steps run (for tests and benchmarks)
        self._logits: torch.Tensor | None = None  # the last step's (rows, V) logits, when whole

    def join(self, req: _Request) -> None:
        with self._cond:
            self._joins.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="generation-scheduler",
                                                daemon=True)
                _threads.add(self._thread)
                self._thread.start()

    def _run(self) -> None:
        model = self._model()
        while True:
            with self._cond:
                joins, self._joins = self._joins, []
                stop = model is None or _exiting.is_set() or (not joins and not self.rows)
                if stop:
                    self._thread, self.cache = None, None
            if stop:  # work left only when the model was unloaded or the process exits
                why = "The server is shutting down." if model else "The model was unloaded."
                for req in joins + self.rows:
                    self._finish(req, "cancelled", why)
                self.rows = []
                return
            try:
                with torch.inference_mode():
                    self._admit(model, joins)
                    self._sample()
                    self._decode(model)
            except Exception as e:  # a bug or out of memory: every reader hears of it
                log.exception("generation scheduler failed")
                for req in joins + self.rows:
                    if req.state != "done":
                        req.emit(e)
                        self._finish(req, None)
                self.rows, self.cache = [], None

    def _admit(self, model: GPT, joins: list[_Request]) -> None:
        """Give newcomers rows and prefill their prompts: those of about the same length in one
        forward pass (prefill_groups), so they share its reads of the weights."""
        param = next(model.parameters())
        block = model.config.block_size
        newcomers = []
        for req in joins:
            if req.cancelled():
                self._finish(req, "cancelled")
                continue
            req.state, req.started = "running", time.perf_counter()
            req.last_read = req.started
            req.set_ctx(fit_prompt(req.ids, req.tokenizer, req.params, block, req.stats.notices), block)
            req.sampler = Sampler(req.params, param.device, req.constraint)
            req.text = TextDeltas(req.tokenizer, req.params.stop)
            req.stats.finish_reason = "length"
            newcomers.append(req)
        if not newcomers:
            return
        self._reserve(model, len(self.rows) + len(newcomers),
                      max(min(block, len(r.ctx) + r.params.max_new_tokens) for r in newcomers))
        for group in prefill_groups(newcomers):
            first = len(self.rows)
            self.rows.extend(group)
            logits = self._prefill(model, first, [req.ctx for req in group])
            for req, row_logits in zip(group, logits):
                req.logits = row_logits
                req.stats.prefill_s = time.perf_counter() - req.started
        self._logits = None

    def _prefill(self, model: GPT, first: int, prompts: list[list[int]]) -> torch.Tensor:
        """Run the model on prompts (token ids) and put their keys and values in rows first,
        first + 1, ...; returns the logits of each prompt's next token (len(prompts), V).
        Prompts shorter than the longest are padded after their end with their last token:
        causal attention keeps the padding out of the real positions, and the padding's keys
        and values land where the row's mask hides them until its own tokens overwrite them."""
        param = next(model.parameters())
        n = max(len(ids) for ids in prompts)
        idx = torch.tensor([ids + ids[-1:] * (n - len(ids)) for ids in prompts], device=param.device)
        tmp = KVCache(model.config, len(prompts), n, param.device, param.dtype)
        hidden = model.hidden(idx, cache=tmp)
        last = torch.tensor([len(ids) - 1 for ids in prompts], device=param.device)
        logits = model.lm_head(hidden[torch.arange(len(prompts), device=param.device), last])
        rows = slice(first, first + len(prompts))
        for layer in range(model.config.n_layer):
            self.cache.put(layer, rows, tmp.k[layer], tmp.v[layer])
        self.cache.lengths[rows] = [len(ids) for ids in prompts]
        return logits

    def _reserve(self, model: GPT, rows: int, length: int) -> None:
        """Make the cache hold at least `rows` rows of `length` positions (grown, not shrunk:
        rows to a power of two up to the server's limit, length to a multiple of 64)."""
        cache, block = self.cache, model.config.block_size
        if cache is not None and cache.slots >= rows and cache.max_len >= length:
            return
        slots = max(rows, cache.slots if cache else 1)
        slots = min(max(self.limit.limits.max_active, rows), 1 << (slots - 1).bit_length())
        length = min(block, -(-max(length, cache.max_len if cache else 0) // 64) * 64)
        param = next(model.parameters())
        grown = SlotKVCache(model.config, slots, length, param.device, param.dtype)
        if cache is not None:
            for i in range(len(self.rows)):
                cache.copy_row(i, i, into=grown)
        self.cache = grown

    def _sample(self) -> None:
        """Each row draws its next token from its logits (one draw_rows for all of them);
        finished rows leave."""
        now = time.perf_counter()
        limits = self.limit.limits
        live = []
        for req in self.rows:
            if req.cancelled():
                self._finish(req, "cancelled")
            elif now - req.started > limits.time_limit_s:
                self._finish(req, "time", f"Stopped after the server's limit of "
                                          f"{limits.time_limit_s:g} seconds per answer.")
            elif not req.out.empty() and now - req.last_read > limits.unread_timeout_s:
                self._finish(req, "cancelled", f"Stopped: nobody read the answer for "
                                               f"{limits.unread_timeout_s:g} seconds.")
            else:
                live.append(req)
        if live:
            # The last step's logits as they are when every row is in it, else gathered (rows
            # that joined or were refilled since have logits of their own).
            logits = self._logits
            if logits is None or not len(live) == len(self.rows) == logits.size(0):
                logits = torch.stack([req.logits for req in live])
            with intra_op_threads(logits.device, step_threads(len(live))):
                tokens = draw_rows([req.sampler for req in live], logits,
                                   [req.history(logits.device) for req in live])
            for req, token in zip(live, tokens):
                self._next_token(req, token)
        self._logits = None
        for i in reversed(range(len(self.rows))):
            if self.rows[i].state == "done":
                self._drop_row(i)

    def _next_token(self, req: _Request, token: int) -> None:
        """generation.TextStream's per-token rules: eos, stop strings, max_new_tokens."""
        if token == req.tokenizer.eot_id:
            self._finish(req, "eos")
            return
        req.token_ids.append(token)
        req.stats.new_tokens += 1
        delta = req.text.add(token)
        if req.text.stopped:
            self._finish(req, "stop")
            return
        if delta:
            req.stats.elapsed_s = time.perf_counter() - req.started
            req.emit(delta)
        if req.stats.new_tokens == req.params.max_new_tokens:
            self._finish(req, "length")
            return
        req.push(token)
        req.next_token = token

    def _decode(self, model: GPT) -> None:
        """One batched forward for every row; a row whose window is full is re-encoded from
        its most recent half first (on its own, as generation.stream does)."""
        if not self.rows:
            return
        block = model.config.block_size
        batch = []
        for i, req in enumerate(self.rows):
            if self.cache.lengths[i] < block:
                batch.append(i)
                continue
            keep = block // 2
            req.set_ctx(req.ctx[-keep:], block)
            req.stats.notices.append(f"Reached the {block}-token context window; continuing "
                                     f"from the last {keep} tokens.")
            req.logits = self._prefill(model, i, [req.ctx])[0]
            self._logits = None
        if batch != list(range(len(batch))):  # rare: move refilled rows out of the batch's way
            self._reorder(batch + [i for i in range(len(self.rows)) if i not in batch])
        n = len(batch)
        if n == 0:
            return
        device = self.rows[0].logits.device
        idx = torch.tensor([self.rows[i].next_token for i in range(n)], device=device)
        with intra_op_threads(device, step_threads(n)):
            logits = model.decode_rows(idx, self.cache)
        for i in range(n):
            self.rows[i].logits = logits[i]
        self._logits = logits
        self.steps += 1

    def _reorder(self, order: list[int]) -> None:
        self.cache.reorder(order)
        self.rows = [self.rows[i] for i in order]

    def _drop_row(self, i: int) -> None:
        """Free row i: the last row moves into it, so rows 0..n-1 stay the active ones."""
        last = len(self.rows) - 1
        if i != last:
            self.cache.copy_row(last, i)
            self.rows[i] = self.rows[last]
        self.cache.lengths[last] = 0
        self.rows.pop()

    def _finish(self, req: _Request, reason: str | None, notice: str = "") -> None:
        if req.state == "done":
            return
        req.end(reason, notice)
        self.limit.release()


def prefill_groups(requests: list[_Request], max_tokens: int = 4096) -> list[list[_Request]]:
    """Newcomers in groups to prefill together, shortest prompts first: a prompt joins the group
    before it while the padding stays at most a quarter of the real tokens and the group under
    max_tokens (padded); otherwise it starts a group."""
    groups: list[list[_Request]] = []
    for req in sorted(requests, key=lambda r: len(r.ctx)):
        n = len(req.ctx)
        group = groups[-1] if groups else []
        padded = (len(group) + 1) * n  # sorted: this prompt is the group's longest
        if group and padded <= max_tokens and padded <= 1.25 * (sum(len(r.ctx) for r in group) + n):
            group.append(req)
        else:
            groups.append([req])
    return groups


class GenerationService:
    """The limit and one scheduler per model: what a server holds to run generations."""

    def __init__(self, limits: ServingLimits | None = None) -> None:
        self.limits = limits or ServingLimits()
        self.limit = GenerationLimit(self.limits)
        self._schedulers: weakref.WeakKeyDictionary[GPT, ModelScheduler] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def scheduler(self, model: GPT) -> ModelScheduler:
        with self._lock:
            s = self._schedulers.get(model)
            if s is None:
                s = self._schedulers[model] = ModelScheduler(model, self.limit)
            return s

    def stream(self, model: GPT, tokenizer: Tokenizer, prompt: str | Sequence[int],
               params: SamplingParams | None = None, cancel: Cancel = None,
               constraint=None) -> ScheduledStream:
        """Like generation.stream(): the continuation of `prompt` as text deltas, decoded in
        a batch with the model's other generations. Raises ServerBusy when the queue is full."""
        params = params or SamplingParams()
        ids = prompt_ids(model, tokenizer, prompt)
        if model.training:
            model.eval()
        stats = GenerationStats(prompt_tokens=len(ids))
        req = _Request(tokenizer, ids, params, cancel, stats, constraint)
        s = ScheduledStream(self, req)
        self.limit.submit(req, self.scheduler(model))
        return s


def limits_from_env(environ: dict | None = None) -> ServingLimits:
    """ServingLimits with any of WORKBENCH_MAX_GENERATIONS, WORKBENCH_MAX_QUEUE,
    WORKBENCH_TIME_LIMIT_S set in the environment (a Space's settings)."""
    env = os.environ if environ is None else environ
    values = {}
    for name, field_name, kind in (("WORKBENCH_MAX_GENERATIONS", "max_active", int),
                                   ("WORKBENCH_MAX_QUEUE", "max_queue", int),
                                   ("WORKBENCH_TIME_LIMIT_S", "time_limit_s", float)):
        raw = (env.get(name) or "").strip()
        if raw:
            try:
                values[field_name] = kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a {'whole number' if kind is int else 'number'}, "
                                 f"got {raw!r}") from None
    return ServingLimits(**values)
