"""What a person (or an HTTP client) may send, in one table, and the checks that apply it.

    params = sampling_params(temperature=0.7, top_k="40", seed="")   # UI values -> SamplingParams
    text = clean_text(message, "message")                            # safe to tokenize, capped
    turns = clean_history(history)                                   # a chat history from a client

Both front ends build their controls from these tables (ranges, steps, defaults, labels, help),
and every value they receive goes through these functions, so the sliders, the Chainlit settings
panel and both HTTP APIs accept the same values and reject the rest with the same message.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from engine.assistant import normalize_messages
from engine.sampling import SamplingParams

MAX_INPUT_CHARS = 8000  # a prompt or chat message; the models' windows are 256-1024 tokens
MAX_HISTORY_MESSAGES = 200  # a chat history sent by a client; older turns are trimmed anyway
# A system prompt / persona for free chat (or an API client's system message): it goes before
# the whole conversation in a 256-1024-token window, so a paragraph, not a document.
MAX_SYSTEM_CHARS = 2000
MAX_HISTORY_CHARS = 400_000  # all of those messages together (50 of the longest)
# A request body to either server (a chat turn with its history, in JSON, where a character may
# take 12 bytes); uploads have their own limit (app.training_data.MAX_UPLOAD_BYTES).
MAX_BODY_BYTES = 8_000_000


@dataclass(frozen=True)
class Limit:
    """The range of one number a person sets. Integer bounds make it a whole-number field."""

    lo: float
    hi: float
    step: float = 1
    default: float | None = None
    label: str = ""
    help: str = ""

    @property
    def integer(self) -> bool:
        return isinstance(self.lo, int) and isinstance(self.hi, int)


# The sampling controls, in the order both UIs show them.
SAMPLING: dict[str, Limit] = {
    "temperature": Limit(0.0, 2.0, 0.05, 0.8, "Temperature",
                         "Randomness: 0 always picks the most likely token, higher is more "
                         "adventurous."),
    "top_k": Limit(0, 200, 1, 50, "Top-k",
                   "Sample only from the k most likely tokens (0 = no limit)."),
    "top_p": Limit(0.05, 1.0, 0.01, 0.95, "Top-p",
                   "Sample from the smallest set of tokens whose probabilities add up to p "
                   "(1 = off)."),
    "repetition_penalty": Limit(1.0, 2.0, 0.01, 1.1, "Repetition penalty",
                                "Makes tokens already in the text less likely (1 = off)."),
    "max_new_tokens": Limit(1, 1024, 1, 200, "Max new tokens",
                            "The most tokens to generate for one answer or story."),
    "seed": Limit(0, 2**31 - 1, 1, None, "Seed",
                  "Same seed, same text; empty or -1 for a new draw each time."),
}
SAMPLING_FIELDS = tuple(SAMPLING)
SAMPLING_DEFAULTS = {name: limit.default for name, limit in SAMPLING.items()}

# TrainConfig fields the UIs let a person set (None = the preset's value).
TRAINING: dict[str, Limit] = {
    "max_steps": Limit(1, 1_000_000, label="Steps"),
    "lr": Limit(1e-6, 1.0, label="Learning rate"),
    "batch_size": Limit(1, 1024, label="Batch (sequences)"),
    "block_size": Limit(8, 8192, label="Context (tokens)"),
    "eval_every": Limit(1, 1_000_000),
    "save_every": Limit(1, 1_000_000),
    "log_every": Limit(1, 100_000),
    "seed": Limit(0, 2**31 - 1),
    "lora_rank": Limit(0, 256, label="LoRA rank (0: the whole model)",
                       help="Above 0, fine-tune LoRA adapters of this rank on the model chosen "
                            "in 'Start from' instead of all its weights (engine/lora.py)."),
}

EXPLORER_TOP = Limit(1, 30, 1, 10, "Candidates to show")  # next-token candidates in the explorer

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls except \t and \n


def _shown(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def as_number(name: str, value, integer: bool):
    """A number from a slider (float), an API (str or number) or a form: int when integer (a
    whole number is required), else float. Booleans, empty values, NaN and infinity are refused."""
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, int) and abs(value) > 2**53:  # 10**400: no float holds it
        raise ValueError(f"{name} is far too large ({len(str(abs(value)))} digits)")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def check(name: str, value, limit: Limit, note: str = ""):
    """value as a number inside limit (see as_number), or a ValueError naming the field, the
    range and the value."""
    value = as_number(name, value, limit.integer)
    if not limit.lo <= value <= limit.hi:
        raise ValueError(f"{name} must be between {_shown(limit.lo)} and {_shown(limit.hi)}"
                         f"{note}, got {value!r}")
    return value


def sampling_params(temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                    max_new_tokens=None, seed=None, stop: tuple[str, ...] = ()) -> SamplingParams:
    """SamplingParams from UI or API values (None = the default), checked against SAMPLING.

    A seed of None, "" or -1 means a fresh random draw."""
    given = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                 repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens)
    values = {name: SAMPLING[name].default if value is None else check(name, value, SAMPLING[name])
              for name, value in given.items()}
    if seed is None or seed == "" or (not isinstance(seed, bool) and seed == -1):
        values["seed"] = None
    else:
        values["seed"] = check("seed", seed, SAMPLING["seed"], " (or empty for a random draw)")
    return SamplingParams(stop=tuple(stop), **values)


def clean_text(text, what: str = "prompt", max_chars: int = MAX_INPUT_CHARS,
               allow_empty: bool = False) -> str:
    """Text a person typed, made safe to tokenize: newlines normalised, control characters and
    lone surrogates removed, length capped with a clear message (a text over twice the cap is
    refused before it is scanned). Emoji, right-to-left text and
    joiners are kept as they are."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"the {what} must be text, got {type(text).__name__}")
    if len(text) > 2 * max_chars:  # refused before any scan: cleaning cannot halve it honestly
        _too_long(what, len(text), max_chars)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if any(unicodedata.category(c) == "Cs" for c in text):
        text = "".join(c for c in text if unicodedata.category(c) != "Cs")
    if len(text) > max_chars:
        _too_long(what, len(text), max_chars)
    if not allow_empty and not text.strip():
        raise ValueError(f"the {what} is empty: type something first")
    return text


def _too_long(what: str, length: int, max_chars: int):
    raise ValueError(f"the {what} is {length:,} characters long; the limit is "
                     f"{max_chars:,}. Shorten it and try again.")


def clean_history(history, keep_notes: bool = False) -> list[dict]:
    """A chat history from a client, checked: [{"role", "content"}] with clean text content.

    Messages are read as the engine reads a conversation (engine.assistant.normalize_messages:
    extra keys dropped, content blocks joined). Notes shown in a UI (messages whose metadata has
    a title, such as a refusal's reason or an answer's sources) are not part of the conversation:
    they are dropped, or with keep_notes (a UI's own copy) kept as {"role", "content",
    "metadata": {"title"}} (and "status": "done" for a note shown collapsed)."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise ValueError(f"the chat history must be a list of messages, got "
                         f"{type(history).__name__}")
    history = history[-MAX_HISTORY_MESSAGES:]
    normalized = normalize_messages(history, "chat history")
    total = sum(len(turn["content"]) for turn in normalized)
    if total > MAX_HISTORY_CHARS:  # checked before any message is scanned or a model called
        raise ValueError(f"the chat history is {total:,} characters long; the limit is "
                         f"{MAX_HISTORY_CHARS:,}. Clear the chat (or start a new one) and ask "
                         "again.")
    turns = []
    for msg, turn in zip(history, normalized):
        metadata = msg.get("metadata")
        title = metadata.get("title") if isinstance(metadata, dict) else None
        if title and not keep_notes:
            continue
        turn["content"] = clean_text(turn["content"], "chat history message", allow_empty=True)
        if title:
            turn["metadata"] = {"title": clean_text(str(title), "note title", allow_empty=True)}
            if metadata.get("status") == "done":
                turn["metadata"]["status"] = "done"
        turns.append(turn)
    return turns
