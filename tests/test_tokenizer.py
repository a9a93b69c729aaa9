"""Tokenizers: GPT-2 BPE (tiktoken, vendored vocabulary) and trained byte-level BPE."""

from __future__ import annotations

import pytest

from engine.tokenizer import EOT, BPETokenizer, GPT2Tokenizer, gpt2_vocab_and_merges

TEXTS = ["Hello world", "  leading spaces and\ttabs\n\nnew lines", "café naïve 世界 🙂👍🏽",
         "def f(x):\n    return x ** 2  # comment", "numbers 1234567 and 3.14159"]


def test_gpt2_known_ids(gpt2_tokenizer):
    assert gpt2_tokenizer.encode("Hello world") == [15496, 995]
    assert gpt2_tokenizer.eot_id == 50256
    assert gpt2_tokenizer.vocab_size == 50257
    assert gpt2_tokenizer.token_bytes(995) == b" world"


@pytest.mark.parametrize("which", ["gpt2", "bpe"])
def test_round_trip_and_token_bytes(which, gpt2_tokenizer, bpe_tokenizer):
    tok = gpt2_tokenizer if which == "gpt2" else bpe_tokenizer
    for text in TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


@pytest.mark.parametrize("which", ["gpt2", "bpe"])
def test_endoftext_in_user_text_is_not_the_special_token(which, gpt2_tokenizer, bpe_tokenizer):
    tok = gpt2_tokenizer if which == "gpt2" else bpe_tokenizer
    ids = tok.encode(f"a{EOT}b")
    assert tok.eot_id not in ids
    assert tok.decode(ids) == f"a{EOT}b"


def test_bpe_save_and_load(tmp_path, bpe_tokenizer):
    bpe_tokenizer.save(tmp_path)
    again = BPETokenizer.from_file(tmp_path / "tokenizer.json")
    for text in TEXTS:
        assert again.encode(text) == bpe_tokenizer.encode(text)
    assert again.eot_id == bpe_tokenizer.eot_id and again.vocab_size == bpe_tokenizer.vocab_size


def test_bpe_bad_inputs():
    from tokenizers import Tokenizer as HFTokenizer, models

    with pytest.raises(ValueError, match="vocab_size must be at least 258"):
        BPETokenizer.train(["abc"], vocab_size=100)
    word_level = HFTokenizer(models.WordLevel({"hello world": 0, EOT: 1}, unk_token=EOT))
    with pytest.raises(ValueError, match="not byte-level BPE"):
        BPETokenizer(word_level)
    with pytest.raises(ValueError, match="has no <\\|endoftext\\|> token"):
        BPETokenizer(HFTokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]")))


def test_gpt2_merges_recovered_from_ranks(gpt2_tokenizer):
    vocab, merges = gpt2_vocab_and_merges()
    assert len(vocab) == 50257 and len(merges) == 50000
    assert merges[0] == ("Ġ", "t") and vocab["Ġworld"] == 995  # GPT-2's merges.txt, line 2
    hf = gpt2_tokenizer.to_hf()
    for text in TEXTS:
        assert hf.encode(text, add_special_tokens=False).ids == gpt2_tokenizer.encode(text)
        assert hf.decode(gpt2_tokenizer.encode(text)) == text
