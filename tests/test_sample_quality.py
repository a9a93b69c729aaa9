"""Sample quality (engine/sample_quality.py): words of the corpus, repeated word 4-grams."""

from __future__ import annotations

import pytest

from engine import sample_quality as SQ


def test_words_are_case_folded_letter_runs_with_inner_apostrophes():
    assert SQ.words("The KING press'd on, 'tis 2 o'er-much_x!") == \
        ["the", "king", "press'd", "on", "tis", "o'er", "much", "x"]


def test_a_word_the_model_completes_counts_whole():
    assert SQ.continuation_words("The king", "dom, my lord") == ["kingdom", "my", "lord"]
    assert SQ.continuation_words("The king", " is dead") == ["is", "dead"]


def test_scores_by_hand():
    vocab = SQ.corpus_words(["The king is dead. Long live the King!"])
    assert vocab == {"the", "king", "is", "dead", "long", "live"}
    texts = [" is dead, long live the king is dead, long live",  # 10 words, 7 4-grams, 1 repeats
             " is medessenice"]  # 2 words, one invented, no 4-gram
    q = SQ.score_texts(texts, vocab, "The king", 200)
    assert (q.samples, q.words, q.real_words, q.ngrams, q.repeated_ngrams) == (2, 12, 11, 7, 1)
    assert q.real_word_share == pytest.approx(11 / 12)
    assert q.repeated_4gram_share == pytest.approx(1 / 7)
    d = q.to_dict()
    assert d["real_word_share"] == q.real_word_share and d["prompt"] == "The king"


def test_empty_samples_score_zero_not_an_error():
    q = SQ.score_texts(["", "..."], frozenset({"a"}))
    assert (q.words, q.real_word_share, q.repeated_4gram_share) == (0, 0.0, 0.0)


def test_samples_on_a_tiny_model_are_seeded_and_scored(bpe_tokenizer, tiny_model):
    vocab = SQ.corpus_words(["once upon a time there was a little cat"])
    texts = SQ.generate_samples(tiny_model, bpe_tokenizer, 3, "Once", 12)
    assert len(texts) == 3 and texts == SQ.generate_samples(tiny_model, bpe_tokenizer, 3, "Once", 12)
    assert len(set(texts)) > 1  # seeds 0, 1, 2 differ
    q = SQ.sample_quality(tiny_model, bpe_tokenizer, vocab, 3, "Once", 12)
    assert q.to_dict() == SQ.score_texts(texts, vocab, "Once", 12).to_dict()
    assert not tiny_model.training


@pytest.mark.parametrize("n", [0, -1, True, 2.0])
def test_bad_sample_counts_are_refused(bpe_tokenizer, tiny_model, n):
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        SQ.generate_samples(tiny_model, bpe_tokenizer, n)
