"""Sampling: each processor against transformers' on the same logits, edge cases, validation."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from engine.sampling import (RepetitionPenalty, Sampler, SamplingParams, Temperature, TopK, TopP,
                             draw_rows, explain, processors)

V = 1000


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(3, V) * 4  # positive and negative values


@pytest.fixture
def history():
    torch.manual_seed(1)
    return torch.randint(0, V, (3, 40))


def same_distribution(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal after softmax (a constant shift of the logits would not matter), and the same
    tokens removed."""
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs))
    torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("penalty", [1.1, 1.5, 0.8])
def test_repetition_penalty_matches_transformers(logits, history, penalty):
    ours = RepetitionPenalty(penalty)(logits, history)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(history, logits.clone())
    torch.testing.assert_close(ours, theirs)  # exactly the same logits, not just distribution
    seen = history[0].unique()
    pos = logits[0, seen] > 0
    assert (ours[0, seen][pos] < logits[0, seen][pos]).all() == (penalty > 1)  # CTRL rule


def test_repetition_penalty_window(logits):
    hist = torch.tensor([[1, 2, 3, 4]])
    out = RepetitionPenalty(2.0, window=2)(logits[:1], hist)
    assert torch.equal(out[0, [1, 2]], logits[0, [1, 2]])  # outside the window: untouched
    assert not torch.equal(out[0, [3, 4]], logits[0, [3, 4]])


@pytest.mark.parametrize("t", [0.3, 0.8, 1.0, 2.5])
def test_temperature_matches_transformers(logits, history, t):
    ours = Temperature(t)(logits, history)
    theirs = TemperatureLogitsWarper(t)(history, logits.clone())
    same_distribution(ours, theirs)


@pytest.mark.parametrize("k", [1, 5, 50, V - 1])
def test_top_k_matches_transformers(logits, history, k):
    ours = TopK(k)(logits, history)
    theirs = TopKLogitsWarper(k)(history, logits.clone())
    same_distribution(ours, theirs)
    assert (~torch.isneginf(ours)).sum(-1).eq(k).all()


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.95, 0.999])
def test_top_p_matches_transformers(logits, history, p):
    ours = TopP(p)(logits, history)
    theirs = TopPLogitsWarper(p)(history, logits.clone())
    same_distribution(ours, theirs)


def test_ties_keep_every_tied_token_like_transformers(history):
    flat = torch.zeros(1, V)  # every token tied
    flat[0, :3] = 5.0
    for proc, ref in ((TopK(5), TopKLogitsWarper(5)), (TopP(0.5), TopPLogitsWarper(0.5))):
        same_distribution(proc(flat, history[:1]), ref(history[:1], flat.clone()))
    assert (~torch.isneginf(TopK(5)(flat, history[:1]))).sum() == V  # 3 above, 997 tied at 5th


def test_full_chain_matches_transformers_order(logits, history):
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.3)
    ours = logits
    for _, proc in processors(params):
        ours = proc(ours, history)
    theirs = logits.clone()
    for proc in (RepetitionPenaltyLogitsProcessor(1.3), TemperatureLogitsWarper(0.7),
                 TopKLogitsWarper(40), TopPLogitsWarper(0.9)):
        theirs = proc(history, theirs)
    same_distribution(ours, theirs)


def test_sampler_draws_from_the_processed_distribution():
    """The sampler's fast path (top-k first, then temperature and top-p on k values) draws
    from the same distribution as the documented chain."""
    torch.manual_seed(3)
    logits, hist = torch.randn(50) * 2, torch.tensor([0, 1, 2])
    params = SamplingParams(temperature=0.9, top_k=6, top_p=0.8, repetition_penalty=1.2, seed=7)
    expected = logits[None]
    for proc in (RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(0.9),
                 TopKLogitsWarper(6), TopPLogitsWarper(0.8)):
        expected = proc(hist[None], expected)
    expected = expected.softmax(-1)[0]
    sampler, n = Sampler(params), 4000
    counts = torch.bincount(torch.tensor([sampler(logits, hist) for _ in range(n)]), minlength=50)
    assert set(counts.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
    assert (counts / n - expected).abs().max() < 0.03


@pytest.mark.parametrize("top_p, vocab", [(0.8, 50), (0.97, 5000)])
def test_sampler_top_p_alone_draws_from_the_processed_distribution(top_p, vocab):
    """Top-p without top-k takes the top 64, 256, ... tokens until they hold p (no full sort):
    the same distribution as transformers' chain, also when the nucleus needs several rounds."""
    torch.manual_seed(4)
    logits, hist = torch.randn(vocab) * (2 if vocab == 50 else 0.5), torch.tensor([0, 1, 2])
    params = SamplingParams(temperature=0.9, top_k=0, top_p=top_p, repetition_penalty=1.2, seed=7)
    expected = logits[None]
    for proc in (RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(0.9),
                 TopPLogitsWarper(top_p)):
        expected = proc(hist[None], expected)
    expected = expected.softmax(-1)[0]
    assert vocab == 50 or int((expected > 0).sum()) > 256  # several rounds of topk
    sampler, n = Sampler(params), 4000
    counts = torch.bincount(torch.tensor([sampler(logits, hist) for _ in range(n)]), minlength=vocab)
    assert set(counts.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())
    assert (counts / n - expected).abs().max() < 0.03


def test_sampler_tie_fallback_keeps_tied_tokens():
    logits = torch.zeros(100)
    logits[:2] = 1.0  # top_k=5 cuts through 98 tied tokens: all of them stay eligible
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=5, seed=0))
    drawn = {sampler(logits, torch.tensor([], dtype=torch.long)) for _ in range(300)}
    assert len(drawn - {0, 1}) > 5


def test_seed_determinism():
    logits = torch.randn(500)
    hist = torch.tensor([1, 2], dtype=torch.long)
    draw = lambda seed: [Sampler(SamplingParams(seed=seed))(logits, hist) for _ in range(1)]  # noqa: E731
    a = Sampler(SamplingParams(seed=42, top_k=0))
    b = Sampler(SamplingParams(seed=42, top_k=0))
    assert [a(logits, hist) for _ in range(20)] == [b(logits, hist) for _ in range(20)]
    assert draw(1) == draw(1)


def test_greedy_and_tiny_temperatures_are_finite():
    logits = torch.tensor([1e4, 1e4 - 1, -1e4, 0.0])
    hist = torch.tensor([0])
    assert Sampler(SamplingParams(temperature=0))(logits, torch.tensor([], dtype=torch.long)) == 0
    # The penalty moves token 0 below token 1 (1e4 / 2 < 9999): greedy sees the penalty.
    assert Sampler(SamplingParams(temperature=0, repetition_penalty=2.0))(logits, hist) == 1
    for t in (1e-6, 1e-30, 1e-300):
        scaled = Temperature(t)(logits, hist)
        probs = scaled.softmax(-1)
        assert not torch.isnan(probs).any() and probs[0] == 1.0
        for k in (0, 2):
            assert Sampler(SamplingParams(temperature=t, top_k=k, seed=0))(logits, hist) == 0
    tiny_p = TopP(1e-9)(logits, hist)
    assert (~torch.isneginf(tiny_p)).sum() == 1  # every filter keeps at least one token


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_p=1.5), "top_p must be in (0, 1], got 1.5"),
    (dict(top_p=0), "top_p must be in (0, 1], got 0"),
    (dict(temperature=-0.1), "temperature must be >= 0 (0 means greedy), got -0.1"),
    (dict(temperature=float("nan")), "temperature must be a finite number, got nan"),
    (dict(top_k=-1), "top_k must be >= 0 (0 means off), got -1"),
    (dict(top_k=2.5), "top_k must be an integer, got 2.5"),
    (dict(top_k=True), "top_k must be an integer, got True"),
    (dict(repetition_penalty=0), "repetition_penalty must be > 0 (1.0 means off), got 0"),
    (dict(repetition_window=-2), "repetition_window must be >= 0 (0 means all tokens), got -2"),
    (dict(max_new_tokens=0), "max_new_tokens must be between 1 and 100000, got 0"),
    (dict(seed=-1), "seed must be in [0, 2**63), got -1"),
    (dict(stop=["ok", ""]), "stop strings must be non-empty strings, got ''"),
])
def test_validation_messages(kwargs, message):
    with pytest.raises(ValueError) as err:
        SamplingParams(**kwargs)
    assert str(err.value) == message


def test_from_dict_and_stop_coercion():
    with pytest.raises(ValueError, match="unknown sampling parameter\\(s\\): topk"):
        SamplingParams.from_dict({"topk": 3})
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")


def test_explain_stages():
    logits = torch.randn(200)
    out = explain(logits, [1, 2, 3], SamplingParams(temperature=0.5, top_k=3, top_p=0.9,
                                                      repetition_penalty=1.2), top=5)
    names = [s["name"] for s in out["stages"]]
    assert names == ["raw", "repetition penalty", "temperature", "top-k", "top-p"]
    final = out["stages"][-1]["probs"]
    assert sum(p > 0 for p in final) <= 3 and math.isclose(sum(final), 1.0, rel_tol=1e-5)
    greedy = explain(logits, [], SamplingParams(temperature=0), top=5)
    assert greedy["stages"][-1]["name"] == "greedy" and max(greedy["stages"][-1]["probs"]) == 1.0
    with pytest.raises(ValueError, match="top must be a positive integer"):
        explain(logits, [], SamplingParams(), top=0)


def test_explain_shows_exactly_top_candidates_when_sampling_reorders_them():
    """The explorer's "Candidates to show" 10 showed 11: a token that the repetition penalty
    lifts into the final top now takes the place of the least likely raw candidate."""
    logits = torch.zeros(50)
    logits[:10] = torch.linspace(5.0, 4.1, 10)  # tokens 0..9 lead the raw distribution
    logits[10] = 4.0  # just outside the raw top 10
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=2.0)
    out = explain(logits, list(range(10)), params, top=10)  # 0..9 were repeated: penalised
    assert len(out["token_ids"]) == 10 and len(set(out["token_ids"])) == 10
    assert 10 in out["token_ids"] and 9 not in out["token_ids"]  # 9: the least likely raw one
    assert out["token_ids"][:9] == list(range(9))  # the rest keep the raw order
    assert all(len(s["probs"]) == 10 for s in out["stages"])


def test_draw_rows_draws_what_each_sampler_would_alone():
    """draw_rows (the batching scheduler's draws) gives every row the token its own Sampler
    would draw from the same logits and history, step after step with the same generators:
    rows that share top-k settings (one batched topk), others with their own, greedy, top-p
    alone, and a row whose top k ties (the full-vocabulary fallback)."""
    settings = [SamplingParams(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=1),
                SamplingParams(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=2),
                SamplingParams(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=2),
                SamplingParams(temperature=1.3, top_k=5, repetition_penalty=1.5, seed=3),
                SamplingParams(temperature=0.0, repetition_penalty=1.2),
                SamplingParams(temperature=1.0, top_k=0, top_p=0.9, seed=4),
                SamplingParams(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1, seed=5)]
    alone = [Sampler(p) for p in settings]
    batched = [Sampler(p) for p in settings]
    gen = torch.Generator().manual_seed(0)
    histories = [torch.randint(0, V, (n,), generator=gen) for n in (0, 30, 30, 7, 12, 5, 40)]
    for step in range(20):
        logits = torch.randn(len(settings), V, generator=gen) * 3
        logits[-1, :60] = 9.0  # the last row: 60 tokens tie above its top 50
        expected = [s(logits[i].clone(), histories[i]) for i, s in enumerate(alone)]
        assert draw_rows(batched, logits.clone(), histories) == expected
        histories = [torch.cat([h, torch.tensor([t])]) for h, t in zip(histories, expected)]


def test_draw_rows_on_a_subset_and_with_a_constraint():
    """Rows with different top-k settings take different batched topks; a row with a
    constraint is drawn by its Sampler (which masks its logits first)."""

    class OnlyEven:
        def __call__(self, logits):
            return logits.masked_fill(torch.arange(logits.size(-1)) % 2 == 1, float("-inf"))

        def observe(self, token):
            self.last = token

    params = SamplingParams(temperature=0.9, top_k=20, seed=9)
    rows = [Sampler(params), Sampler(params.replace(top_k=7)), Sampler(params, constraint=OnlyEven())]
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(1))
    history = torch.tensor([1, 2, 3])
    again = [Sampler(params), Sampler(params.replace(top_k=7)), Sampler(params, constraint=OnlyEven())]
    expected = [s(logits[i].clone(), history) for i, s in enumerate(again)]
    tokens = draw_rows(rows, logits.clone(), [history] * 3)
    assert tokens == expected and tokens[2] % 2 == 0 and rows[2].constraint.last == tokens[2]


def test_top_rows_equals_torch_topk():
    """The blockwise top-n of draw_rows gives torch.topk's values and token ids, on a
    GPT-2-sized vocabulary, with ties (then it is torch.topk) and on a small vocabulary."""
    from engine.sampling import top_rows

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50257, generator=gen) * 3
    logits[1, 100:140] = 20.0  # 40 ties at the top
    logits[2, -3:] = 30.0  # the largest in the last, partial block
    for n in (1, 6, 51):
        values, ids = top_rows(logits, n)
        expected = torch.topk(logits, n)
        assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)
    small = torch.randn(3, V, generator=gen)
    assert torch.equal(top_rows(small, 51)[1], torch.topk(small, 51).indices)


def test_top_rows_takes_the_long_way_only_for_rows_with_ties(monkeypatch):
    """A tie in one row sends that row, not the whole batch, to torch.topk; every row still
    equals torch.topk (untied rows from the blockwise path)."""
    from engine import sampling

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 50257, generator=gen) * 3
    logits[2, 500:520] = 25.0  # ties at the top of row 2 only
    expected = torch.topk(logits, 6)
    full_rows = []
    real_topk = torch.topk

    def counting_topk(x, n, *a, **kw):
        if x.shape[-1] == logits.shape[-1]:
            full_rows.append(x.shape[0])
        return real_topk(x, n, *a, **kw)

    monkeypatch.setattr(sampling.torch, "topk", counting_topk)
    values, ids = sampling.top_rows(logits, 6)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)
    assert full_rows == [1]  # only row 2 was searched over the whole vocabulary
