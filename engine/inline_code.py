"""Grounded names: what a grounded answer writes in `backticks` must be a name its sources show.

A 4M-parameter model that reads "[1] list.reverse() (Built-in Types)" in its prompt usually
answers "Use `list.reverse()` ...", but it also misspells names it half-remembers ("Use
`re.Match.match()` to split the string", "`str.Line()`"): a fluent, wrong API is the worst
answer a beginner can get. So while the model writes an inline code span (between single
backticks, outside ``` fences), each next token is restricted to those that keep the span a
prefix of a known name, or close it on one: the names in the passages of the prompt (titles,
API names, their short forms, the passages' own inline code) plus Python's builtins and keywords.
The model still decides whether to open a span and which of the allowed names to write; code
blocks and prose are not touched.

    constraint = InlineCodeConstraint.for_passages(tokenizer, passages)
    sampler = Sampler(params, constraint=constraint)      # generation.stream(..., constraint=)

Per step this costs a dictionary lookup per prefix of each matching name (well under a
millisecond); outside a span it only masks the few tokens that would open one on a bad prefix.
"""

from __future__ import annotations

import builtins
import keyword
import re
import threading
from typing import Iterable, Sequence

import torch

FENCE = "```"
MAX_NAME_CHARS = 80  # an inline span longer than this in a passage is prose, not a name
_INLINE = re.compile(r"(?<!`)`([^`\n]{1,%d})`(?!`)" % MAX_NAME_CHARS)
_SIGNATURE = re.compile(r"^`([\w.]+)\(")

_VOCAB_LOCK = threading.Lock()


class _Vocabulary:
    """The tokenizer's tokens as text, indexed for the constraint: text -> ids, and the tokens
    that contain a backtick (the only ones that can open or close a span)."""

    def __init__(self, tokenizer) -> None:
        self.size = tokenizer.vocab_size
        self.by_text: dict[str, list[int]] = {}
        self.text_of: dict[int, str] = {}
        self.with_tick: list[tuple[int, str]] = []
        for i in range(self.size):
            if i == tokenizer.eot_id:
                continue
            try:
                text = tokenizer.token_bytes(i).decode("utf-8")
            except (UnicodeDecodeError, KeyError, ValueError):
                continue  # part of a multi-byte character: never part of an ASCII name
            self.by_text.setdefault(text, []).append(i)
            self.text_of[i] = text
            if "`" in text:
                self.with_tick.append((i, text))
        self.longest = max((len(t) for t in self.by_text), default=1)


def prepare(tokenizer) -> None:
    """Build the tokenizer's index ahead of the first constrained answer (about 0.3 s for
    GPT-2's 50k tokens: worth doing when a grounded model loads, not inside its first reply)."""
    _vocabulary(tokenizer)


def _vocabulary(tokenizer) -> _Vocabulary:
    """One index per tokenizer object, built on first use (about 0.1 s for 50k tokens)."""
    vocab = getattr(tokenizer, "_inline_code_vocabulary", None)
    if vocab is None:
        with _VOCAB_LOCK:
            vocab = getattr(tokenizer, "_inline_code_vocabulary", None)
            if vocab is None:
                vocab = _Vocabulary(tokenizer)
                tokenizer._inline_code_vocabulary = vocab
    return vocab


def base_names() -> set[str]:
    """Python's builtins and keywords, bare and called: `len()`, `None`, `for`."""
    names = set(keyword.kwlist) | set(keyword.softkwlist)
    for n in dir(builtins):
        if not n.startswith("_"):
            names.add(n)
            if callable(getattr(builtins, n)):
                names.add(n + "()")
    return names


def passage_names(passages: Iterable) -> set[str]:
    """The names a set of retrieval passages shows: each one's title when it is code
    ("str.split()"), its API name with and without the call parentheses and its last part
    ("split()"), its signature's name, and the inline code in its text."""
    names: set[str] = set()
    for p in passages:
        title, api, text = getattr(p, "title", ""), getattr(p, "api", ""), getattr(p, "text", "")
        if title and " " not in title.strip() and len(title) <= MAX_NAME_CHARS:
            names.add(title.strip())
        if api and not api.startswith("keyword:"):
            for name in (api, api.rsplit(".", 1)[-1]):
                names.update((name, name + "()"))
        elif api:
            names.add(api.split(":", 1)[1])
        m = _SIGNATURE.match(text)
        if m:
            names.update((m.group(1), m.group(1) + "()"))
        names.update(s.strip() for s in _INLINE.findall(text) if s.strip())
    return {n for n in names if n}


class InlineCodeConstraint:
    """Masks next-token logits so that every inline code span the model writes is one of
    `names`. Stateful per generation: `observe` each token that is kept (Sampler does)."""

    def __init__(self, tokenizer, names: Iterable[str]) -> None:
        self.vocab = _vocabulary(tokenizer)
        self.names = frozenset(n for n in names if n and "`" not in n and "\n" not in n)
        if not self.names:
            raise ValueError("InlineCodeConstraint needs at least one name")
        self.text = ""  # what the model has written so far
        # Outside a span the same tokens are always wrong: those that open a span on a prefix
        # no name has ("`re.Mat" when no name starts so). Computed once.
        self._outside = self._blocked_openers()

    @classmethod
    def for_passages(cls, tokenizer, passages: Sequence) -> "InlineCodeConstraint":
        return cls(tokenizer, passage_names(passages) | base_names())

    def observe(self, token_id: int) -> None:
        # Tokens missing from the index (bytes of a multi-byte character) hold no backtick.
        self.text += self.vocab.text_of.get(token_id, "")

    def state(self) -> tuple[str, str]:
        """Where the model is writing: ("code", "") inside a ``` block, ("span", text so far)
        inside an inline code span, ("prose", "") elsewhere."""
        outside_fences = self.text.split(FENCE)
        if len(outside_fences) % 2 == 0:
            return "code", ""  # an odd number of fences: inside a code block
        tail = outside_fences[-1]
        if tail.count("`") % 2 == 0:
            return "prose", ""
        return "span", tail[tail.rindex("`") + 1:]

    def span(self) -> str | None:
        """The text of the inline span being written, or None when not inside one."""
        where, text = self.state()
        return text if where == "span" else None

    def _is_prefix(self, text: str) -> bool:
        return any(n.startswith(text) for n in self.names)

    def _opener_ok(self, token: str) -> bool:
        """A token seen outside a span: fine unless it opens one on a prefix no name has."""
        if FENCE in token:
            return True
        parts = token.split("`")
        if len(parts) % 2 == 1:
            return all(p in self.names for p in parts[1::2])  # spans it opens and closes
        return all(p in self.names for p in parts[1:-1:2]) and self._is_prefix(parts[-1])

    def _blocked_openers(self) -> torch.Tensor:
        return torch.tensor([i for i, t in self.vocab.with_tick if not self._opener_ok(t)],
                            dtype=torch.long)

    def allowed_in_span(self, span: str) -> list[int]:
        """Token ids that continue `span` towards a name, or close it on one."""
        allowed: set[int] = set()
        longest = self.vocab.longest
        for name in self.names:
            if not name.startswith(span):
                continue
            rest = name[len(span):]
            for j in range(1, min(len(rest), longest) + 1):
                allowed.update(self.vocab.by_text.get(rest[:j], ()))
        for i, t in self.vocab.with_tick:
            head = t.split("`", 1)[0]
            if span + head in self.names or (not span and not head and t.startswith("``")):
                allowed.add(i)  # closes on a name (or, right after an opening tick, a fence)
        return sorted(allowed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (V,) for the next token, with the tokens that would misspell a name at -inf.
        Leaves them as they are when nothing would be allowed (the vocabulary cannot spell any
        name from here: better an unconstrained token than none)."""
        where, span = self.state()
        if where == "code":
            return logits
        if where == "prose":
            if not len(self._outside):
                return logits
            return logits.index_fill(0, self._outside.to(logits.device), float("-inf"))
        allowed = self.allowed_in_span(span)
        if not allowed:
            return logits
        index = torch.tensor(allowed, dtype=torch.long, device=logits.device)
        out = torch.full_like(logits, float("-inf"))
        out[index] = logits[index]
        return out
