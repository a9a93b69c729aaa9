"""The chat modes both apps use: one entry point, `respond()`.

    from engine.assistant import respond
    reply = respond(conversation, "python", checkpoint, SamplingParams(max_new_tokens=200))
    if reply.refused:
        show(reply.refusal)          # polite message; reply.reason says why (for a tooltip)
    else:
        for delta in reply:          # text deltas as the model writes them
            append(delta)
        reply.stats                  # tokens, tokens/s, finish reason, notices

`conversation` is the chat so far, oldest first, ending with the person's new message: a list of
{"role": "user" | "assistant", "content": str} dicts (the OpenAI / Gradio "messages" format;
content may also be a list of {"type": "text", "text": ...} blocks). `checkpoint` is anything
with `.model` and `.tokenizer` (engine.checkpoint.Checkpoint, from engine.loading.ModelCache.get).

Modes:
- "python": the Python assistant. The latest message goes through CodeQuestionFilter (with the
  earlier user messages as context, so "and for a dict?" passes after a Python question). A
  message that is not about programming gets a refusal without any model call; one about another
  language gets a refusal that says the assistant helps with Python.
- "chat": free chat, the same prompt as "python" without the filter.
- "story": plain continuation of the latest message (no template, no history).

The prompt is the instruction template that training uses (engine.templates), one block per
exchange: "### Instruction:\\n<q1>\\n\\n### Response:\\n<a1>\\n\\n### Instruction:\\n<q2>...".
Refused exchanges are left out. When the conversation does not fit the model's context window
(leaving room for the answer, as engine.generation does), the oldest exchanges are dropped first;
the optional `system` text and the latest question are never trimmed (if those alone do not fit,
a ValueError says by how much).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from .code_filter import CodeQuestionFilter, FilterDecision, default_filter
from .generation import GenerationStats, TextStream, stream
from .sampling import SamplingParams
from .templates import STOP, format_exchange, format_prompt

CHAT_MODES = ("python", "chat")  # modes that take a conversation
MODES = (*CHAT_MODES, "story")  # "story" continues the latest message alone
REFUSAL_PREFIX = "Sorry, I'm a Python assistant"
REFUSAL = (f"{REFUSAL_PREFIX}, so I only answer questions about Python and programming. "
           "Try asking about Python code, an error message, a library, or an algorithm.")
REFUSAL_OTHER_LANGUAGE = (f"{REFUSAL_PREFIX}, so I can't help with {{language}} here. "
                          "If you like, ask how to do the same thing in Python.")


def refusal_message(decision: FilterDecision) -> str:
    """The polite refusal for a declined message."""
    if decision.other_language:
        return REFUSAL_OTHER_LANGUAGE.format(language=decision.other_language)
    return REFUSAL


def is_refusal(text: str) -> bool:
    """Is this assistant message one of our refusals (left out of later prompts)?"""
    return isinstance(text, str) and text.startswith(REFUSAL_PREFIX)


@dataclass
class Reply:
    """What respond() returns: a refusal, or a stream of the model's answer."""

    mode: str
    refused: bool = False
    refusal: str = ""  # the message to show when refused
    decision: FilterDecision | None = None  # the filter's verdict (python mode)
    prompt: str = ""  # the exact text given to the model ("" when refused)
    notices: list[str] = field(default_factory=list)  # e.g. the conversation was trimmed
    stream: TextStream | None = None
    sources: list = field(default_factory=list)  # retrieval.Passage: the docs in the prompt

    @property
    def reason(self) -> str:
        """Why the filter decided as it did ("" outside python mode)."""
        return self.decision.reason if self.decision else ""

    @property
    def stats(self) -> GenerationStats | None:
        return self.stream.stats if self.stream is not None else None

    def __iter__(self) -> Iterator[str]:
        if self.refused:
            yield self.refusal
        elif self.stream is not None:
            yield from self.stream

    def text(self) -> str:
        """Run to the end and return the whole answer (or the refusal)."""
        return "".join(self)

    def waiting(self) -> Iterator[int]:
        """While the answer waits for a free place on a busy server (engine.serving), the
        number of requests ahead of it, whenever that changes; nothing otherwise."""
        if self.stream is not None and hasattr(self.stream, "waiting"):
            yield from self.stream.waiting()


def respond(conversation: Sequence[Mapping], mode: str, checkpoint, params: SamplingParams | None = None,
            *, cancel: threading.Event | Callable[[], bool] | None = None,
            code_filter: CodeQuestionFilter | None = None, system: str = "",
            index=None, streamer: Callable = stream, grounded_names: bool = True) -> Reply:
    """Refuse (python mode, not a programming question) or start streaming the answer.

    In python mode a model trained to answer from documentation (`checkpoint.grounding ==
    "python-docs"`, the bundled python-assistant) gets the passages that `index` (default: the
    bundled docs index, engine.retrieval) finds for the question in its prompt, and
    `reply.sources` lists them. Any other model answers from its weights alone, and a notice
    says that the answer has no sources.

    With sources, what the model writes in `backticks` is held to the names the sources show
    (engine.inline_code; `grounded_names=False` turns that off, for comparison).

    `streamer` runs the generation: engine.generation.stream (batch 1, in the reader's thread),
    or a server's engine.serving.GenerationService.stream (batched, limited, queued)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if params is not None and not isinstance(params, SamplingParams):
        raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
    if not hasattr(checkpoint, "model") or not hasattr(checkpoint, "tokenizer"):
        raise ValueError("checkpoint must have .model and .tokenizer (load one with "
                         "engine.loading.load_model or ModelCache.get)")
    params = params or SamplingParams()
    turns = normalize_conversation(conversation)
    reply = Reply(mode=mode)
    earlier = [t["content"] for t in turns[:-1] if t["role"] == "user"]
    if mode == "python":
        reply.decision = (code_filter or default_filter()).classify(turns[-1]["content"], history=earlier)
        if not reply.decision.is_coding:
            reply.refused = True
            reply.refusal = refusal_message(reply.decision)
            return reply
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    if mode == "story":
        reply.prompt = turns[-1]["content"]
    else:
        sources = []
        if mode == "python":
            sources = _sources(turns[-1]["content"], earlier, checkpoint, index, reply.notices)
        reply.prompt, reply.sources, notices = _fit_prompt(
            turns, sources, tokenizer, model.config.block_size, params.max_new_tokens, system)
        reply.notices.extend(notices)
        params = params.replace(stop=params.stop + tuple(s for s in STOP if s not in params.stop))
    extra = {}
    if reply.sources and grounded_names:
        # Names in `backticks` spelled only as the sources spell them (engine.inline_code).
        from .inline_code import InlineCodeConstraint
        extra["constraint"] = InlineCodeConstraint.for_passages(tokenizer, reply.sources)
    reply.stream = streamer(model, tokenizer, reply.prompt, params, cancel, **extra)
    reply.stream.stats.notices.extend(reply.notices)
    return reply


UNGROUNDED_NOTICE = ("This model was not trained to answer from the Python documentation, so its "
                     "answer has no sources; the bundled python-assistant answers from the docs.")


def _sources(question: str, earlier: list[str], checkpoint, index, notices: list[str]) -> list:
    """The passages for a grounded model's prompt ([] and a notice for any other model)."""
    if getattr(checkpoint, "grounding", "") != "python-docs":
        notices.append(UNGROUNDED_NOTICE)
        return []
    from .retrieval import PROMPT_PASSAGES, default_index

    index = index or default_index()
    return [h.passage for h in index.search(question, history=earlier, k=PROMPT_PASSAGES)]


def _fit_prompt(turns, sources, tokenizer, block_size, max_new_tokens, system):
    """build_prompt with as many of the sources as fit (the best first); the question itself
    must fit without any (build_prompt's ValueError says by how much it does not)."""
    from .retrieval import format_context

    for n in range(len(sources), 0, -1):
        try:
            prompt, notices = build_prompt(turns, tokenizer, block_size, max_new_tokens, system,
                                           context=format_context(sources[:n]))
        except ValueError:
            continue
        if n < len(sources):
            notices.append(f"Used the {n} best of {len(sources)} documentation passages to fit "
                           f"the model's {block_size}-token context window.")
        return prompt, sources[:n], notices
    prompt, notices = build_prompt(turns, tokenizer, block_size, max_new_tokens, system)
    if sources:
        notices.append(f"Left out the documentation passages: with this question they do not fit "
                       f"the model's {block_size}-token context window.")
    return prompt, [], notices


def normalize_conversation(conversation: Sequence[Mapping]) -> list[dict]:
    """Validate and copy the conversation as [{"role", "content": str}], ending with a user turn."""
    turns = normalize_messages(conversation)
    if not turns:
        raise ValueError("conversation is empty: it must end with the user's message")
    if turns[-1]["role"] != "user":
        raise ValueError("conversation must end with the user's message, not an assistant turn")
    if not turns[-1]["content"].strip():
        raise ValueError("the last message is empty: type a question or a prompt")
    return turns


def normalize_messages(messages: Sequence[Mapping], what: str = "conversation") -> list[dict]:
    """Chat messages checked and copied as [{"role": "user" | "assistant", "content": str}].

    The one reading of the messages format both apps and their HTTP APIs send: extra keys
    (Gradio's metadata, options) are dropped, and content given as a list of blocks keeps its
    text blocks, joined by newlines (a block without a "type" is text). `what` names the list in
    error messages ("conversation[2]: role must be ...")."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"{what} must be a list of {{'role': 'user'|'assistant', 'content': str}} "
                         f"dicts, got {type(messages).__name__}")
    turns = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            raise ValueError(f"{what}[{i}] must be a dict with 'role' and 'content', "
                             f"got {turn!r:.80}")
        role = turn["role"]
        if role not in ("user", "assistant"):
            raise ValueError(f"{what}[{i}]: role must be 'user' or 'assistant', got {role!r}")
        turns.append({"role": role, "content": _content_text(turn["content"], f"{what}[{i}]")})
    return turns


def _content_text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and all(isinstance(b, Mapping) for b in content):
        texts = [b.get("text", "") for b in content if b.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "\n".join(t for t in texts if t)
    raise ValueError(f"{where}: content must be text, got {type(content).__name__}")


def _exchanges(turns: list[dict]) -> list[tuple[str, str]]:
    """Past (question, answer) pairs: consecutive user turns are joined, refused exchanges and
    questions left without an answer are dropped."""
    pairs, question = [], []
    for t in turns:
        if t["role"] == "user":
            if t["content"].strip():
                question.append(t["content"].strip())
        elif question:
            if t["content"].strip() and not is_refusal(t["content"]):
                pairs.append(("\n\n".join(question), t["content"].strip()))
            question = []
    return pairs


def build_prompt(conversation: Sequence[Mapping], tokenizer, block_size: int, max_new_tokens: int,
                 system: str = "", context: str = "") -> tuple[str, list[str]]:
    """The templated prompt for a conversation, trimmed to fit; returns (prompt, notices).
    `context` (documentation passages) goes with the latest question, as its Input block."""
    turns = normalize_conversation(conversation)
    # The latest question: the user's trailing turns (several in a row are one question).
    start = len(turns)
    while start > 0 and turns[start - 1]["role"] == "user":
        start -= 1
    latest = "\n\n".join(t["content"].strip() for t in turns[start:] if t["content"].strip())
    past = _exchanges(turns[:start])
    head = f"{system.strip()}\n\n" if system and system.strip() else ""
    tail = format_prompt(latest, context)
    room = min(max_new_tokens, block_size // 2)  # what generation.stream keeps for the answer
    budget = block_size - room
    fixed = len(tokenizer.encode(head + tail))
    if fixed > budget:
        raise ValueError(
            f"The message is too long for this model: it needs {fixed} tokens with the template, "
            f"but the {block_size}-token context window leaves {budget} after reserving {room} "
            f"for the answer. Shorten it by about {fixed - budget} tokens, or ask for a shorter answer (max_new_tokens).")
    blocks = [format_exchange(q, a) for q, a in past]
    # Estimate from per-block counts (newest first), then check the real prompt below.
    keep, used = 0, fixed
    for block in reversed(blocks):
        used += len(tokenizer.encode(block))
        if used > budget:
            break
        keep += 1
    # Drop the oldest exchanges until the whole prompt fits (re-encoded: BPE merges can differ
    # at block edges, so counting blocks separately could be off by a token).
    while True:
        prompt = head + "".join(blocks[len(blocks) - keep:]) + tail
        if keep == 0 or len(tokenizer.encode(prompt)) <= budget:
            break
        keep -= 1
    notices = []
    if keep < len(blocks):
        dropped = len(blocks) - keep
        notices.append(f"Left out the {dropped} oldest exchange{'s' if dropped > 1 else ''} of the "
                       f"conversation to fit the model's {block_size}-token context window.")
    return prompt, notices
