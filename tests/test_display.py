"""app.display: the words both UIs show."""

from __future__ import annotations

from app import display as D
from engine.assistant import MODES


def test_words_both_uis_show():
    assert [D.format_duration(x) for x in (None, 5, 61, 3725)] == [
        "–", "5 s", "1 min 01 s", "1 h 02 min"]
    st = {"state": "running", "step": 1200, "max_steps": 3000, "loss": 3.12345, "val_loss": 3.3,
          "tokens_per_s": 5400.4, "eta_s": 42.4}
    assert D.progress_parts(st) == ["Step 1,200/3,000", "loss 3.123", "validation loss 3.300",
                                    "5,400 tokens/s", "ETA 42 s"]
    assert D.progress_parts({"state": "finished", "elapsed_s": 125})[-1] == "took 2 min 05 s"
    assert D.notice_summary(["a", "b", "a", "a"]) == ["a (3 times)", "b"]


def test_token_label():
    from engine.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    assert D.token_label(tok, tok.encode(" the")[0]) == "␣the"
    assert D.token_label(tok, tok.encode("\n")[0]) == "↵"
    assert D.token_label(tok, tok.eot_id) == "<|endoftext|>"
    partial = tok.encode("世")[0]  # the first byte-level piece of a CJK character
    if len(tok.encode("世")) > 1:
        assert D.token_label(tok, partial).startswith("<0x")


def test_a_label_for_each_engine_mode():
    assert tuple(D.MODE_LABELS) == MODES
    assert set(D.CHAT_MODE_LABELS) < set(MODES)
