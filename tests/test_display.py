"""app.display: the words both UIs show."""

from __future__ import annotations

from pathlib import Path

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


def test_the_story_model_is_named_for_what_it_learned():
    """Issue 14: the bundled story model learned Shakespeare and Milton; both apps say so and
    suggest openings in that style (a speaker's name on its own line, then a speech or verse)."""
    from app.chainlit.widgets import PROFILES
    from app.display import BUNDLED_LABELS, STORY_ABOUT, STORY_OPENINGS, bundled_label

    card = (Path(__file__).resolve().parents[1] / "checkpoints/story/README.md").read_text()
    assert "Shakespeare" in card and "Milton" in card  # the framing matches the card
    assert bundled_label("story") == BUNDLED_LABELS["story"]
    assert "Shakespeare" in BUNDLED_LABELS["story"]
    assert bundled_label("python-assistant") == "python-assistant (bundled)"
    assert "Shakespeare" in STORY_ABOUT and "Milton" in STORY_ABOUT
    assert not any("upon a time" in text.lower() for _, text in STORY_OPENINGS)
    assert [(label, text) for label, text, _ in PROFILES["story"][1]] == STORY_OPENINGS
    assert STORY_ABOUT in PROFILES["story"][0]


def test_refusal_reasons_read_as_sentences_about_the_message():
    assert D.refusal_reason("reads like a question about cooking, not code") == \
        "Your message reads like a question about cooking, not code."
    assert D.refusal_reason("asks for creative writing, not code (Tell me a joke)") == \
        "Your message asks for creative writing, not code (Tell me a joke)."
    assert D.refusal_reason("'python' here is the snake (a python)") == \
        "'python' here is the snake (a python)."
    assert D.refusal_reason("") == "It is not a programming question."
    assert D.refusal_reason("too little programming evidence") == \
        "Too little programming evidence."
