"""engine.serving: batched decoding equals sequential decoding; limits, queue, time, cancel."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

from engine.generation import stream
from engine.model import KVCache, SlotKVCache
from engine.sampling import SamplingParams
from engine.serving import GenerationService, ServerBusy, ServingLimits, limits_from_env
from conftest import make_model

GREEDY = dict(temperature=0.0, repetition_penalty=1.0)


def wait_until(condition, timeout: float = 60.0) -> None:
    """Poll (a loaded machine can be slow; the tests wait for states, not for fixed times)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class GatedModel(torch.nn.Module):
    """Wraps a GPT so a test can hold the scheduler between steps (decode_rows waits for a
    permit), to make requests join at chosen steps."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config
        self.permits = threading.Semaphore(0)
        self.batch_sizes: list[int] = []
        self.lm_head = model.lm_head

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def hidden(self, *args, **kwargs):  # the scheduler's prefill: hidden states, then lm_head
        return self.inner.hidden(*args, **kwargs)

    def decode_rows(self, idx, cache):
        assert self.permits.acquire(timeout=20), "test did not release the scheduler"
        self.batch_sizes.append(idx.size(0))
        return self.inner.decode_rows(idx, cache)


def test_decode_rows_equals_batch_one_at_different_positions():
    model = make_model(97)
    prompts = [torch.randint(0, 97, (n,)) for n in (5, 11, 3)]
    cache = SlotKVCache(model.config, 4, 40, "cpu", torch.float32)
    with torch.inference_mode():
        for row, p in enumerate(prompts):  # rows hold prompts of different lengths
            tmp = KVCache(model.config, 1, len(p), "cpu", torch.float32)
            model(p.view(1, -1), cache=tmp)
            for layer in range(model.config.n_layer):
                cache.put(layer, slice(row, row + 1), tmp.k[layer], tmp.v[layer])
            cache.lengths[row] = len(p)
        nxt = torch.tensor([7, 8, 9])
        for step in range(3):
            out = model.decode_rows(nxt, cache)
            prompts = [torch.cat([p, nxt[i:i + 1]]) for i, p in enumerate(prompts)]
            for i, p in enumerate(prompts):
                torch.testing.assert_close(out[i], model(p.view(1, -1))[0][0, -1],
                                           rtol=1e-5, atol=1e-5)
    assert cache.lengths[:3] == [8, 14, 6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3])
def test_slot_cache_attention_equals_sdpa_per_row(dtype, rows):
    """SlotKVCache.attend (SDPA for one float32 row, multiply-and-sum otherwise) against SDPA
    in float64 on each row's own filled positions alone."""
    model = make_model(97)
    H, D = model.config.n_head, model.config.head_dim
    cache = SlotKVCache(model.config, 4, 16, "cpu", dtype)
    g = torch.Generator().manual_seed(0)
    lengths = [5, 11, 0][:rows]
    for row, n in enumerate(lengths):
        cache.put(0, slice(row, row + 1), *(torch.randn(1, H, n, D, generator=g).to(dtype) for _ in "kv"))
        cache.lengths[row] = n
    q, k, v = (torch.randn(rows, H, D, generator=g).to(dtype) for _ in "qkv")
    cache.begin_step(rows, torch.device("cpu"))
    out = cache.attend(0, q, k, v)
    cache.end_step(rows)
    assert out.dtype == dtype and out.shape == (rows, H, D)
    for row, n in enumerate(lengths):
        keys = cache.k[0][row, :n + 1].transpose(0, 1).double()  # (H, n + 1, D), the new key last
        values = cache.v[0][row, :n + 1].transpose(0, 1).double()
        assert torch.equal(keys[:, n], k[row].double()) and torch.equal(values[:, n], v[row].double())
        want = torch.nn.functional.scaled_dot_product_attention(q[row].double().unsqueeze(1), keys, values)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out[row].double(), want.squeeze(1), rtol=tol, atol=tol)
    assert cache.lengths[:rows] == [n + 1 for n in lengths]


def test_batched_greedy_equals_sequential_with_joins_at_different_steps(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    gated = GatedModel(model)
    service = GenerationService(ServingLimits(max_active=4))
    prompts = ["Once upon a time", "The dog ran to the park and played", "def add(a, b):",
               "Unicode"]
    lengths = [20, 9, 25, 14]  # rows leave at different steps too
    expected = []
    for p, n in zip(prompts, lengths):
        s = stream(model, bpe_tokenizer, p, SamplingParams(**GREEDY, max_new_tokens=n))
        s.text()
        expected.append(s.token_ids)
    streams = []
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        streams.append(service.stream(gated, bpe_tokenizer, p,
                                      SamplingParams(**GREEDY, max_new_tokens=n)))
        wait_until(lambda: streams[-1]._req.state != "queued")  # prefilled, has its row
        for _ in range(3 * i + 1):  # let the ones already running take a few steps
            gated.permits.release()
    for _ in range(200):
        gated.permits.release()
    texts = [s.text() for s in streams]
    assert [s.token_ids for s in streams] == expected
    assert all(s.stats.finish_reason in ("length", "eos") for s in streams)
    assert texts[0] == bpe_tokenizer.decode(expected[0])
    assert max(gated.batch_sizes) >= 3  # they really were decoded together
    assert service.limit.active == 0


def test_each_request_keeps_its_own_sampling_settings_and_seed(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size, seed=5)
    service = GenerationService()
    settings = [SamplingParams(temperature=1.0, top_k=0, max_new_tokens=15, seed=123),
                SamplingParams(**GREEDY, max_new_tokens=15),
                SamplingParams(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.3,
                               max_new_tokens=15, seed=7)]
    alone = []
    for p in settings:
        s = stream(model, bpe_tokenizer, "The cat", p)
        s.text()
        alone.append(s.token_ids)
    together = [service.stream(model, bpe_tokenizer, "The cat", p) for p in settings]
    for s in together:
        s.text()
    # Tiny model, clear winners: the same tokens as each would draw alone with its seed.
    assert [s.token_ids for s in together] == alone
    again = [service.stream(model, bpe_tokenizer, "The cat", p) for p in settings]
    assert [s.text() and s.token_ids for s in again] == alone
    assert alone[0] != alone[1]


def test_stop_strings_and_cancel(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    service = GenerationService()
    params = SamplingParams(temperature=1.0, top_k=0, max_new_tokens=30, seed=11)
    free = stream(model, bpe_tokenizer, "Once", params).text()
    stop = free[8:11]
    assert len(stop) == 3 and free.index(stop) > 0
    s = service.stream(model, bpe_tokenizer, "Once", params.replace(stop=("never", stop)))
    seen = ""
    for delta in s:
        seen += delta
        assert stop not in seen
    assert seen == free[:free.index(stop)] and s.stats.finish_reason == "stop"

    event = threading.Event()
    s = service.stream(model, bpe_tokenizer, "Once", SamplingParams(**GREEDY, max_new_tokens=1000,
                                                                   stop=["never"]), cancel=event)
    next(s)
    event.set()
    list(s)
    assert s.stats.finish_reason == "cancelled" and s.stats.new_tokens < 60
    assert service.limit.active == 0


def test_limit_queue_positions_and_busy(bpe_tokenizer):
    gated = GatedModel(make_model(bpe_tokenizer.vocab_size, seed=3))
    service = GenerationService(ServingLimits(max_active=2, max_queue=2))
    params = SamplingParams(**GREEDY, max_new_tokens=3)
    running = [service.stream(gated, bpe_tokenizer, "a", params) for _ in range(2)]
    queued = [service.stream(gated, bpe_tokenizer, "b", params) for _ in range(2)]
    assert [s.position() for s in running] == [None, None]
    assert [s.position() for s in queued] == [0, 1]
    assert next(queued[1].waiting(poll_s=0.01)) == 1
    with pytest.raises(ServerBusy, match="busy: 2 answers are being written and 2 more are waiting"):
        service.stream(gated, bpe_tokenizer, "c", params)
    queued[0].close()  # the first in line gives up: the second moves up
    assert queued[1].position() == 0
    for _ in range(100):
        gated.permits.release()
    assert list(queued[1].waiting(poll_s=0.01)) in ([], [0])
    for s in running + queued[1:]:
        s.text()
        assert s.stats.new_tokens == 3
    assert queued[0].text() == "" and queued[0].stats.finish_reason == "cancelled"
    assert service.limit.active == 0


def test_time_limit(bpe_tokenizer):
    gated = GatedModel(make_model(bpe_tokenizer.vocab_size, seed=3))
    service = GenerationService(ServingLimits(time_limit_s=0.3))
    s = service.stream(gated, bpe_tokenizer, "Once", SamplingParams(**GREEDY, max_new_tokens=500))
    gated.permits.release()
    time.sleep(0.4)
    for _ in range(10):
        gated.permits.release()
    s.text()
    assert s.stats.finish_reason == "time" and s.stats.new_tokens <= 3
    assert "limit of 0.3 seconds" in s.stats.notices[-1]
    assert service.limit.active == 0


class NoEndOfText:
    """A per-generation constraint that never lets the model end its text (so a generation runs
    until it is cancelled, however fast the machine)."""

    def __init__(self, eot_id: int) -> None:
        self.eot_id = eot_id

    def __call__(self, logits):
        return logits.index_fill(0, torch.tensor([self.eot_id]), float("-inf"))

    def observe(self, token: int) -> None:
        pass


def test_a_reader_that_goes_away_is_cancelled_and_frees_its_place(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    service = GenerationService(ServingLimits(max_active=1, unread_timeout_s=0.3))
    params = SamplingParams(temperature=1.0, max_new_tokens=100_000, seed=1)
    endless = NoEndOfText(bpe_tokenizer.eot_id)

    def wait_free():
        wait_until(lambda: service.limit.active == 0)

    # read once, then never again (endless: an end-of-text token drawn before the 0.3 s would
    # end it as "eos" on a fast machine)
    s = service.stream(model, bpe_tokenizer, "Once", params, constraint=endless)
    next(s)
    wait_free()
    assert s.stats.finish_reason == "cancelled" and "nobody read" in s.stats.notices[-1]

    def gradio_like():  # a generator the server closes when the client leaves
        for delta in service.stream(model, bpe_tokenizer, "Once", params, constraint=endless):
            yield delta
    g = gradio_like()
    next(g)
    g.close()
    gc.collect()
    wait_free()

    s = service.stream(model, bpe_tokenizer, "Once", params, constraint=endless)
    next(s)
    del s  # dropped without closing
    gc.collect()
    wait_free()
    assert service.stream(model, bpe_tokenizer, "x", params.replace(max_new_tokens=2)).text() is not None


def test_limits_are_checked_and_read_from_the_environment():
    assert limits_from_env({"WORKBENCH_MAX_GENERATIONS": "4", "WORKBENCH_TIME_LIMIT_S": "9.5"}) \
        == ServingLimits(max_active=4, time_limit_s=9.5)
    with pytest.raises(ValueError, match="WORKBENCH_MAX_QUEUE must be a whole number, got 'lots'"):
        limits_from_env({"WORKBENCH_MAX_QUEUE": "lots"})
    with pytest.raises(ValueError, match="max_active must be a whole number >= 1, got 0"):
        ServingLimits(max_active=0)
    with pytest.raises(ValueError, match="time_limit_s must be a number of seconds > 0"):
        ServingLimits(time_limit_s=-1)


def test_the_workbench_runs_chat_and_story_through_one_limit(tmp_path):
    from app.limits import sampling_params
    from app.workbench import USER_ERRORS
    from gradio_support import make_workbench

    from app.gradio import chat as chat_tab
    from app.gradio import story as story_tab

    wb = make_workbench(tmp_path, limits=ServingLimits(max_active=1, max_queue=3))
    story, python = wb.models.default("story"), wb.models.default()
    model = wb.models.load(story).model
    gate = threading.Event()
    real = model.decode_rows
    model.decode_rows = lambda idx, cache: gate.wait(20) and real(idx, cache)  # held until set
    first = wb.story("Once upon a time", story, sampling_params(max_new_tokens=50))
    second = wb.chat("Tell me a story", [], "chat", python, sampling_params(max_new_tokens=3))
    assert next(second.waiting()) == 0
    tab = story_tab.write(wb, "Once", story, max_new_tokens=2)  # the Story tab's handler
    assert next(tab) == ("Once", "The server is busy: 1 request ahead of yours…")
    chat = chat_tab.respond(wb, "Hello", [], "Free chat", python, max_new_tokens=2)
    next(chat)  # the question, shown at once
    assert next(chat)[3] == "The server is busy: 2 requests ahead of yours…"
    with pytest.raises(USER_ERRORS, match="The server is busy"):
        wb.story("One more", story, sampling_params(max_new_tokens=5))
    first.stream.close()  # the reader went away: its place goes to the chat
    gate.set()
    assert second.text() is not None and second.stats.new_tokens <= 3
    *_, (text, stats) = tab  # then the story tab's turn
    assert text.startswith("Once") and " tokens · " in stats
    *_, (_, history, _, stats) = chat  # and the chat tab's
    assert history[-1]["role"] == "assistant" and " tokens · " in stats
    assert first.stats.finish_reason == "cancelled" and first.stats.new_tokens <= 2
    assert wb.generations.limit.active == 0


def test_window_refill_in_a_batch_matches_stream(bpe_tokenizer):
    # block_size 64: 100 new tokens re-encode the last half of the window, as stream() does,
    # while the other row keeps decoding in the same batch.
    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    service = GenerationService()
    jobs = [("Once upon a time", 100), ("The dog ran to the park and played with", 90)]
    expected = []
    for prompt, n in jobs:
        s = stream(model, bpe_tokenizer, prompt, SamplingParams(**GREEDY, max_new_tokens=n))
        s.text()
        expected.append((s.token_ids, s.stats.notices))
    got = [service.stream(model, bpe_tokenizer, p, SamplingParams(**GREEDY, max_new_tokens=n))
           for p, n in jobs]
    for s in got:
        s.text()
    assert [(s.token_ids, s.stats.notices) for s in got] == expected
    assert all(any("Reached the 64-token context window" in n for n in s.stats.notices)
               for s in got)


class RecordingModel(GatedModel):
    """A GatedModel that records the intra-op thread count of each prefill (hidden) and each
    batched step (decode_rows), with the step's row count or the prefill's batch size."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.prefills: list[tuple[int, int]] = []  # (prompts, threads)
        self.steps: list[tuple[int, int]] = []  # (rows, threads)

    def hidden(self, idx, *args, **kwargs):
        self.prefills.append((idx.size(0), torch.get_num_threads()))
        return super().hidden(idx, *args, **kwargs)

    def decode_rows(self, idx, cache):
        self.steps.append((idx.size(0), torch.get_num_threads()))
        return super().decode_rows(idx, cache)


def test_steps_run_on_their_thread_counts_and_give_the_same_text(bpe_tokenizer, monkeypatch):
    """A step of two or more rows runs on serving.BATCH_THREADS intra-op threads, a step of one
    row on generation.DECODE_THREADS; prefills keep the scheduler thread's count, which every
    step restores (a request that joins after steps ran prefills on it again). The tokens are
    the same as with torch's count everywhere."""
    from engine import generation, serving

    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    settings = [SamplingParams(**GREEDY, max_new_tokens=12),
                SamplingParams(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2,
                               max_new_tokens=12, seed=5),
                SamplingParams(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2,
                               max_new_tokens=12, seed=6)]
    prompts = ["Once upon a time", "The dog", "def add(a, b):"]

    def run(batch_threads, decode_threads):
        monkeypatch.setattr(serving, "BATCH_THREADS", batch_threads)
        monkeypatch.setattr(generation, "DECODE_THREADS", decode_threads)
        rec = RecordingModel(model)
        service = GenerationService(ServingLimits(max_active=4))
        first = service.stream(rec, bpe_tokenizer, prompts[0], settings[0])
        wait_until(lambda: first._req.state != "queued")
        rec.permits.release()  # one step of one row
        wait_until(lambda: len(rec.steps) == 1)
        rest = [service.stream(rec, bpe_tokenizer, p, s) for p, s in zip(prompts[1:], settings[1:])]
        for _ in range(100):
            rec.permits.release()
        streams = [first] + rest
        for s in streams:
            s.text()
        return [s.token_ids for s in streams], rec

    everywhere, rec = run(None, None)
    full = rec.prefills[0][1]  # the scheduler thread's count
    assert {threads for _, threads in rec.prefills + rec.steps} == {full}
    tokens, rec = run(1, 1)
    assert tokens == everywhere
    assert {threads for _, threads in rec.prefills} == {full}
    assert {threads for _, threads in rec.steps} == {1}
    if full >= 2:  # one row on DECODE_THREADS, more on BATCH_THREADS
        tokens, rec = run(None, 1)
        assert tokens == everywhere
        assert {threads for rows, threads in rec.steps if rows == 1} == {1}
        assert {threads for rows, threads in rec.steps if rows > 1} == {full}
        assert {threads for _, threads in rec.prefills} == {full}


def test_newcomers_of_similar_length_prefill_together(bpe_tokenizer):
    """Requests that join at the same step prefill in one forward pass when their prompts are
    of about the same length (right-padded), a much longer one on its own; each writes what
    it would alone."""
    from engine.serving import prefill_groups

    model = make_model(bpe_tokenizer.vocab_size, seed=3)
    rec = RecordingModel(model)
    service = GenerationService(ServingLimits(max_active=5))
    prompts = ["Once upon a time", "Once upon a time there", "The dog ran to the",
               "The dog ran to the park and played with the ball in the sun all day long"]
    expected = []
    for p in prompts + ["Hello"]:
        s = stream(model, bpe_tokenizer, p, SamplingParams(**GREEDY, max_new_tokens=10))
        s.text()
        expected.append(s.token_ids)
    first = service.stream(rec, bpe_tokenizer, "Hello", SamplingParams(**GREEDY, max_new_tokens=10))
    wait_until(lambda: first._req.state != "queued")  # prefilled alone; waits for a permit
    rest = [service.stream(rec, bpe_tokenizer, p, SamplingParams(**GREEDY, max_new_tokens=10))
            for p in prompts]
    for _ in range(100):
        rec.permits.release()
    assert [s.text() and s.token_ids for s in rest + [first]] == expected
    assert sorted(n for n, _ in rec.prefills) == [1, 1, 3]  # "Hello"; the long one; three
    lengths = [len(bpe_tokenizer.encode(p)) for p in prompts]
    assert max(lengths[:3]) * 3 <= 1.25 * sum(lengths[:3]) < lengths[3] * 4  # as grouped

    class R:  # prefill_groups only reads .ctx
        def __init__(self, n):
            self.ctx = [0] * n

    groups = prefill_groups([R(n) for n in (10, 40, 11, 12, 300, 9)], max_tokens=4096)
    assert [[len(r.ctx) for r in g] for g in groups] == [[9, 10, 11, 12], [40], [300]]
