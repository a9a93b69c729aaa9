"""How good is the Python assistant? Retrieval and answers on a held-out question set.

    python -m engine eval-assistant --model python-assistant --split test

The question set (benchmarks/data/assistant_questions.jsonl, written for this and never used to
make training data) has, per item, the API names any one of which a right answer mentions:

    {"id": "q002", "split": "dev", "question": "python split sentence into words",
     "apis": ["str.split"], "history": []}

Figures (each over the chosen split):
- recall@3: a right API is among the three sources the assistant shows (a source counts when it
  is that API's entry, or when its text shows the API in code: the FAQ answer "Use the
  `reversed()` built-in function" counts for `reversed`);
- named: the reply mentions a right API (the same test on the reply's text);
- code parses: the share of fenced code blocks in replies that `ast.parse` accepts (doctest
  `>>>` prompts are stripped first, so a session transcript counts as its code);
- time to first token: median and 90th percentile, from the question to the first streamed text
  (filter, retrieval, prompt and prefill included).
The development split is for tuning (retrieval weights, prompt layout); report the test split.
"""

from __future__ import annotations

import ast
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_QUESTIONS = ROOT / "benchmarks" / "data" / "assistant_questions.jsonl"
SPLITS = ("dev", "test", "all")


def read_questions(path: Path | str = DEFAULT_QUESTIONS, split: str = "test") -> list[dict]:
    """The items of one split (or all), each checked for the fields the evaluation needs."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such question file")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path} line {n}: not valid JSON ({e})") from None
        if not (isinstance(item, dict) and isinstance(item.get("question"), str)
                and isinstance(item.get("apis"), list) and item["apis"]):
            raise ValueError(f"{path} line {n}: needs 'question' (text) and 'apis' (a list)")
        if split == "all" or item.get("split") == split:
            items.append(item)
    if not items:
        raise ValueError(f"{path}: no questions in split {split!r}")
    return items


def _patterns(api: str) -> list[re.Pattern]:
    """How a text shows that it means `api`: the dotted name, or its last part used as code."""
    if api.startswith("keyword:"):
        kw = re.escape(api.split(":", 1)[1])
        return [re.compile(rf"`{kw}`|```[^`]*\b{kw}\b[^`]*```|^\s*{kw}\b", re.S | re.M)]
    parts = api.split(".")
    last = re.escape(parts[-1])
    pats = [re.compile(rf"(?<![\w.]){re.escape(api)}\b")]
    if len(parts) == 1:  # a builtin: sorted( / `sorted` / sorted()
        pats.append(re.compile(rf"(?<![\w.]){last}\(|`{last}(\(\))?`"))
    else:  # a method or module member: .split( / `split()` / Counter(
        pats.append(re.compile(rf"\.{last}\b|`{last}(\(\))?`"))
        if parts[-1][:1].isupper() or len(parts) > 1 and parts[0] not in _BUILTIN_TYPES:
            pats.append(re.compile(rf"(?<![\w.]){last}\("))
    return pats


_BUILTIN_TYPES = {"str", "bytes", "list", "dict", "set", "frozenset", "tuple", "int", "float",
                  "object", "BaseException"}


def mentions(text: str, apis: Iterable[str]) -> bool:
    """Does `text` show one of `apis` (see the module docstring)?"""
    return any(p.search(text) for api in apis for p in _patterns(api))


def source_matches(source: dict, apis: Iterable[str]) -> bool:
    """A source is right when it is the entry of one of `apis`, or its text uses one in code."""
    apis = list(apis)
    api = source.get("api", "")
    if api and (api in apis or any(api.endswith("." + a) for a in apis if "." in a)):
        return True
    return mentions(f"{source.get('title', '')}\n{source.get('text', '')}", apis)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[\w+-]*\n(.*?)```", text, re.S)


def parses(code: str) -> bool:
    """Does the block parse as Python? A doctest transcript counts by its `>>>` lines."""
    lines = code.splitlines()
    if any(l.lstrip().startswith(">>>") for l in lines):
        lines = [l.lstrip()[4:] for l in lines if l.lstrip().startswith((">>>", "..."))]
    try:
        ast.parse("\n".join(lines))
        return True
    except (SyntaxError, ValueError):
        return False


@dataclass
class Report:
    split: str
    questions: int = 0
    retrieved: int = 0  # a right API in the top-3 sources
    named: int = 0  # the reply mentions a right API
    refused: int = 0
    blocks: int = 0
    blocks_parsing: int = 0
    ttft_s: list[float] = field(default_factory=list)
    misses: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        n = max(1, self.questions)
        ttft = sorted(self.ttft_s)
        return {
            "split": self.split, "questions": self.questions,
            "recall_at_3": round(self.retrieved / n, 3),
            "named_in_reply": round(self.named / n, 3),
            "refused": self.refused,
            "code_blocks": self.blocks,
            "code_blocks_parse": round(self.blocks_parsing / self.blocks, 3) if self.blocks else None,
            "ttft_median_ms": round(statistics.median(ttft) * 1000, 1) if ttft else None,
            "ttft_p90_ms": round(ttft[int(0.9 * (len(ttft) - 1))] * 1000, 1) if ttft else None,
        }


def evaluate(items: list[dict], ask: Callable[[list[dict]], tuple], split: str = "test",
             progress: Callable[[int], None] | None = None) -> Report:
    """Run each item through `ask(conversation) -> (reply_iterable, sources, refused)` and score.

    `ask` is engine.assistant.respond bound to a model (see commands/eval_assistant.py); taking
    it as a function keeps this module free of model loading and easy to test."""
    report = Report(split=split)
    for item in items:
        conversation = [{"role": "user", "content": h} for h in item.get("history", [])]
        # An earlier question in a follow-up item gets the assistant's own answer first.
        turns = []
        for turn in conversation:
            turns.append(turn)
            reply, _, _ = ask(list(turns))
            turns.append({"role": "assistant", "content": "".join(reply)})
        turns.append({"role": "user", "content": item["question"]})
        t0 = time.perf_counter()
        reply, sources, refused = ask(turns)
        chunks, first = [], None
        for delta in reply:
            if first is None and delta:
                first = time.perf_counter() - t0
            chunks.append(delta)
        text = "".join(chunks)
        report.questions += 1
        report.refused += bool(refused)
        if first is not None and not refused:
            report.ttft_s.append(first)
        hit = any(source_matches(s, item["apis"]) for s in sources[:3])
        named = not refused and mentions(text, item["apis"])
        report.retrieved += hit
        report.named += named
        for code in code_blocks(text):
            report.blocks += 1
            report.blocks_parsing += parses(code)
        if not (hit and named):
            report.misses.append({"id": item.get("id"), "question": item["question"],
                                  "apis": item["apis"], "sources": [s["title"] for s in sources],
                                  "reply": text[:300], "retrieved": hit, "named": named})
        if progress:
            progress(1)
    return report
