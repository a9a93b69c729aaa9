"""Words both UIs show, so the same figures read the same in each: mode names, what the models
are, durations, training progress, generation notices, documentation sources and tokens. Plain
text; each UI escapes it for its markup.
"""

from __future__ import annotations

import re

from engine.assistant import CHAT_MODES
from engine.jobs import ACTIVE

# What a person sees for each of the engine's modes (engine.assistant.MODES, in its order):
# Gradio's mode radio and Chainlit's chat profiles.
MODE_LABELS = {"python": "Python assistant", "chat": "Free chat", "story": "Story"}
CHAT_MODE_LABELS = {mode: MODE_LABELS[mode] for mode in CHAT_MODES}

# One line on each landing view (Gradio's header, Chainlit's profiles): what a person is talking
# to. Plain text that reads the same as Markdown.
ABOUT_MODELS = ("The bundled models are small, trained here and run offline. In the Python "
                "assistant the sources are the Python documentation; the prose is a small "
                "model's, so check it against them. Hub models (gpt2 and larger) can be picked "
                "in the model list when online.")

# The bundled story model (checkpoints/story; its card says how it was made) learned from the
# plays and poems of Shakespeare and Milton, not from modern stories: what both apps call it, say
# about it and suggest as openings. The one place that framing lives.
STORY_CORPUS = "Shakespeare and Milton"
BUNDLED_LABELS = {"story": f"story: {STORY_CORPUS} (bundled)"}  # others: "<name> (bundled)"
STORY_ABOUT = ("The bundled story model learned from Shakespeare's plays and Milton's poems, so "
               "it continues an opening in their manner: speeches under a speaker's name, verse, "
               "old words. It is small: expect their sound more than their sense. Openings in "
               "that style suit it best; for modern prose pick a hub model (gpt2) when online.")
STORY_PLACEHOLDER = "HAMLET.\nWhat news, my lord?"
# (label, opening): a speaker's name on its own line, then the speech, as in the corpus.
STORY_OPENINGS = [
    ("A king speaks", "KING.\nNow, lords, the day is ours; yet hear me speak,"),
    ("A lover's vow", "ROMEO.\nBy yonder moon I swear, sweet lady,"),
    ("A storm at sea", "FIRST SAILOR.\nThe wind grows high, and all our sails are torn;"),
    ("Milton's verse", "Of Man's first hope, and of the darkness fall'n"),
]


def bundled_label(name: str) -> str:
    """The model picker's label for a bundled model (the story model says what it learned)."""
    return BUNDLED_LABELS.get(name, f"{name} (bundled)")


def free_chat_note(label: str, better: str | None) -> str:
    """What free chat with a model trained on the Python docs will sound like, and the better
    pick when the list has one (a hub model: a general GPT-2, not a chat model either)."""
    text = (f"Free chat has no topic filter, but it still talks to {label}, which learned from "
            "Python questions and the Python documentation: whatever you ask, it answers like a "
            "programming help page and knows little else.")
    if better:
        text += (f" For open conversation pick {better} in the model list (it needs the network "
                 "the first time); it is a general GPT-2 that continues your text rather than "
                 "following instructions.")
    return text


# The training loss curve's lines, the same colours in both apps (Gradio's LinePlot, Chainlit's
# Plotly chart): one per split of engine.metrics' curve points.
CURVE_COLORS = {"train": "#6366f1", "validation": "#f97316"}


# Why the Python assistant declined (engine.code_filter's reason, plain words already): made a
# sentence about the person's message, the same in both apps.
_REASON_VERBS = ("reads", "asks", "uses", "follows", "mentions", "contains", "is", "has")


def refusal_reason(reason: str) -> str:
    """'reads like a question about cooking, not code' -> 'Your message reads like a question
    about cooking, not code.'; other reasons get a capital and a full stop."""
    text = " ".join((reason or "").split()) or "it is not a programming question"
    if text.split()[0] in _REASON_VERBS:
        text = "Your message " + text
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# Sources: the documentation passages a grounded answer was given (engine.retrieval.Passage),
# listed under the answer in both UIs, collapsed.
SOURCE_EXCERPT_CHARS = 200
SOURCES_CAPTION = "The Python documentation passages the model was given for this answer."
_SAFE_URL = re.compile(r"https?://[^\s<>\"'`()\[\]{}\\]+\Z")


def sources_title(n: int) -> str:
    """'Sources (3)': the collapsed line under an answer."""
    return f"Sources ({n})"


def source_entries(sources) -> list[dict]:
    """Each passage as {"title", "section", "url", "excerpt"}: what both UIs list. The url is ""
    unless it is a plain http(s) address (never a javascript: link, whatever an index holds)."""
    entries = []
    for p in sources or ():
        url = p.url if isinstance(p.url, str) and _SAFE_URL.match(p.url) else ""
        entries.append({"title": p.title, "section": p.section, "url": url,
                        "excerpt": p.excerpt(SOURCE_EXCERPT_CHARS)})
    return entries


def format_duration(seconds) -> str:
    """'42 s', '1 min 05 s', '1 h 02 min'; '–' when not known."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_parts(st: dict) -> list[str]:
    """A training status (app.training) as short phrases: ["Step 120/300", "loss 3.124",
    "validation loss 3.301", "5,400 tokens/s", "ETA 42 s"] (or "took 2 min 05 s" once ended).
    Numbers only; a UI adds the run's name and state in its own markup."""
    parts = []
    if st.get("max_steps"):
        parts.append(f"Step {st.get('step') or 0:,}/{st['max_steps']:,}")
    if st.get("loss") is not None:
        parts.append(f"loss {st['loss']:.3f}")
    if st.get("val_loss") is not None:
        parts.append(f"validation loss {st['val_loss']:.3f}")
    if st.get("tokens_per_s"):
        parts.append(f"{st['tokens_per_s']:,.0f} tokens/s")
    if st.get("state") in ACTIVE:
        parts.append(f"ETA {format_duration(st.get('eta_s'))}")
    elif st.get("elapsed_s"):
        parts.append(f"took {format_duration(st['elapsed_s'])}")
    return parts


def notice_summary(notices) -> list[str]:
    """Each distinct generation notice once, in order, with "(3 times)" when it repeated (a long
    reply re-fills a small context window many times)."""
    counts: dict[str, int] = {}
    for n in notices or ():
        counts[n] = counts.get(n, 0) + 1
    return [n + (f" ({k} times)" if k > 1 else "") for n, k in counts.items()]


def queue_line(ahead: int) -> str:
    """While an answer waits for a free place on a busy server (Reply.waiting())."""
    if ahead <= 0:
        return "The server is busy: yours is next in line…"
    return f"The server is busy: {ahead} request{'s' if ahead != 1 else ''} ahead of yours…"


def token_label(tokenizer, token_id: int) -> str:
    """A token as a person can read it: spaces as '␣', newlines as '↵', tabs as '⇥', bytes that
    are only part of a UTF-8 character as <0xNN>."""
    data = tokenizer.token_bytes(token_id)
    if token_id == tokenizer.eot_id:
        return "<|endoftext|>"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in data)
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"
