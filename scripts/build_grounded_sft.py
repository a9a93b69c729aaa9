"""Instruction data that teaches the Python assistant to answer from retrieved documentation.

    .venv/bin/python scripts/build_grounded_sft.py [--out data/python/grounded]

Every example is made from the docs index (data/python/index, scripts/build_docs_index.py), never
from an evaluation set: for each passage, how-to questions derived from its own words ("Return a
list of the words in the string" -> "How do I get a list of the words in a string?"), its name
("What does str.split() do?") or its title (FAQ questions, tutorial sections); the prompt carries
the passages the real retriever (engine.retrieval) finds for that question, formatted exactly as
chat formats them; the answer names the API, says what the passage says and shows a short example
(the passage's own, or a call built from its signature):

    {"instruction": "how do I get a list of the words in a string?",
     "input": "[1] str.split() (Built-in Types)\\n`str.split(sep=None, maxsplit=-1)`...",
     "output": "Use `str.split()` to get a list of the words in the string, ...\\n\\n```\\n...```",
     "history": [{"instruction": ..., "output": ...}]}      # some: a follow-up in a conversation

When the retriever misses the passage a question was made from, that passage goes first in the
context (so the answer is always grounded in what the prompt shows). About one example in five
carries an earlier exchange: an unrelated one (the model must answer the new question), or the
same method on another type, asked as a follow-up ("and for a set?"), retrieved with the history
as chat retrieves it. Split by passage: questions about a held-out passage are all in the
validation file. Deterministic for a given index and seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import build_corpora as bc  # noqa: E402

from engine.retrieval import (PROMPT_PASSAGES, DocsIndex, Passage, format_context,  # noqa: E402
                              is_follow_up)

SEED = 2026
VAL_FRACTION = 0.03
MAX_EXAMPLE_LINES = 8  # a passage's own example longer than this is not "short"
HISTORY_SHARE = 0.2
# Receivers for calls on built-in types: `text.split()`, not `str.split(self)`.
RECEIVER = {"str": "text", "bytes": "data", "bytearray": "buf", "list": "items", "dict": "d",
            "set": "s", "frozenset": "s", "int": "n", "float": "x", "tuple": "t", "range": "r",
            "memoryview": "view", "complex": "z"}
# First words of a passage that are verbs in the imperative ("Reverse the elements ...").
VERBS = set("""add append apply calculate call cancel change check choose clear close compare
compile compute convert copy count create decode decompress delete deserialize discard divide
dump encode ensure execute extend fetch fill find flush format generate get handle insert iterate
join load look make match merge move multiply open pad parse pick pop print put raise read
register remove rename repeat replace reset reverse round run search select send serialize set
shuffle sleep sort split start stop strip subtract sum swap terminate test truncate unpack update
wait walk wrap write""".split())
HOW = ["How do I {t}?", "how to {t} in python", "How can I {t}?", "python {t}",
       "What's the way to {t} in Python?", "Is there a function to {t}?"]
NAMED = ["What does {n} do?", "How do I use {n}?", "Explain {n}.", "{n} example"]
FOLLOW = ["and for a {k}?", "what about a {k}?", "And with a {k}?", "same for a {k}?",
          "how about for a {k}"]


def first_sentence(p: Passage) -> str:
    """The passage's first sentence of prose (after the signature line)."""
    for block in p.text.split("\n\n"):
        if block.startswith(("`", "```")) and block.endswith("`") and "\n" not in block:
            continue  # the signature
        if block.startswith("```"):
            continue
        m = re.match(r"(.+?[.!?])(\s|$)", block.replace("\n", " "))
        return (m.group(1) if m else block).strip()
    return ""


def task_phrase(sentence: str) -> str | None:
    """'Return a list of the words in the string, using sep ...' -> 'get a list of the words in
    a string'; None when the sentence does not describe a task."""
    s = re.split(r",|;| if | using | when | where | unless | such that | which ", sentence)[0]
    s = s.rstrip(".").strip()
    words = s.split()
    if len(words) < 2 or len(words) > 14 or re.search(r"[`\[\]()]", s):
        return None
    verb = words[0].lower()
    if verb in ("return", "returns"):
        rest = " ".join(words[1:])
        if rest.startswith(("True", "true", "False", "None", "whether")):
            return None
        phrase = "get " + rest
    elif verb in VERBS and words[0][0].isupper():
        phrase = " ".join([verb] + words[1:])
    else:
        return None
    phrase = re.sub(r"\bthe (string|list|dictionary|set|sequence|file|number)\b", r"a \1", phrase, 1)
    return phrase


def call_example(p: Passage) -> str | None:
    """A call built from the signature: `text.split(sep=None, maxsplit=-1)`, `import json` +
    `json.dumps(obj)`; None when the passage has no signature."""
    m = re.match(r"`([\w.]+)\((.*)\)`", p.text)
    if not m:
        return None
    name, args = m.group(1), m.group(2)
    args = re.sub(r"\[,?\s*", ", ", args).replace("]", "")  # optional parts: (a[, b]) -> (a, b)
    parts = [a.strip() for a in args.split(",")]
    parts = [a for a in parts if a and a not in ("/", "*", "self") and not a.startswith("**")]
    owner, _, attr = name.rpartition(".")
    lines = []
    if owner in RECEIVER:
        call = f"{RECEIVER[owner]}.{attr}({', '.join(parts)})"
    else:
        module = owner.split(".")[0] if owner else ""
        if module and module not in RECEIVER and module.islower():
            lines.append(f"import {module}" if "." not in owner or owner.split(".")[1][0].islower()
                         else f"from {module} import {owner.split('.')[1]}")
        call = f"{name}({', '.join(parts)})"
    if lines and lines[0].startswith("from "):
        call = call[len(module) + 1:]
    lines.append(call)
    code = "\n".join(lines)
    try:
        compile(code, "<example>", "exec")
    except SyntaxError:
        return None
    return code


def own_example(p: Passage) -> str | None:
    for m in re.finditer(r"```\n(.*?)\n```", p.text, re.S):
        code = m.group(1)
        if 0 < code.count("\n") + 1 <= MAX_EXAMPLE_LINES:
            return code
    return None


def answer(p: Passage) -> str:
    """Name the API, say what the passage says, show a short example."""
    s = first_sentence(p)
    t = p.title
    if p.api and not p.api.startswith("keyword:"):
        if p.kind == "exception":
            lead = (f"`{t}` is {s[0].lower()}{s[1:]}" if s.startswith("Raised")
                    else f"`{t}`: {s}")
        elif s.split(" ")[0] in ("Return", "Returns"):
            lead = f"Use `{t}` to get {s.split(' ', 1)[1]}" if " " in s else f"Use `{t}`."
        elif s and s.split(" ")[0].lower() in VERBS:
            lead = f"Use `{t}` to {s[0].lower()}{s[1:]}"
        else:
            lead = f"Use `{t}`. {s}".strip()
        code = own_example(p) or call_example(p)
    else:
        prose = re.sub(r"```.*?```", " ", p.text, flags=re.S)
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", re.sub(r"\s+", " ", prose).strip())
        lead = " ".join(sentences[:2]).strip() or s
        code = own_example(p)
    lead = re.sub(r"\s+", " ", re.sub(r"\s?\[\d+\]", "", lead)).strip()
    if lead and lead[-1] not in ".!?:":
        lead += "."
    return lead + (f"\n\n```\n{code}\n```" if code else "")


def questions(p: Passage, rng: random.Random) -> list[str]:
    out = []
    if p.api and not p.api.startswith("keyword:"):
        task = task_phrase(first_sentence(p))
        if task:
            out += [t.format(t=task) for t in rng.sample(HOW, 2)]
        k = 1 if task else 2
        out += [t.format(n=p.title) for t in rng.sample(NAMED, k)]
    elif p.kind == "faq" and p.title.endswith("?"):
        out += [p.title, p.title[0].lower() + p.title[1:-1]]
    elif p.kind in ("tutorial", "howto", "topic"):
        how = bc._how_question(p.title)
        if how:
            out += [f"How do I {how}?"]
        out += [f"Explain {bc._lower_title(p.title)}."]
    elif p.kind == "glossary":
        out += [f"What does {p.title} mean in Python?"]
    return out


def sibling_pairs(index: DocsIndex) -> list[tuple[Passage, Passage]]:
    """The same method on two built-in types (list.pop / dict.pop): follow-up material."""
    by_attr: dict[str, list[Passage]] = {}
    for p in index.passages:
        owner, _, attr = p.api.rpartition(".")
        if owner in ("list", "dict", "set", "str", "bytes", "tuple") and p.kind == "method":
            by_attr.setdefault(attr, []).append(p)
    return [(a, b) for group in by_attr.values() for a in group for b in group
            if a.api.split(".")[0] != b.api.split(".")[0]]


def context_for(index: DocsIndex, question: str, gold: Passage, history=()) -> str:
    hits = [h.passage for h in index.search(question, history=list(history), k=PROMPT_PASSAGES)]
    if gold.id not in {p.id for p in hits}:
        hits = [gold] + hits[: PROMPT_PASSAGES - 1]
    return format_context(hits)


def is_val(p: Passage) -> bool:
    h = int(hashlib.sha256(f"{SEED}:{p.title}:{p.url}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < VAL_FRACTION


class CachedEncoder:
    """The index's encoder with the build's queries encoded up front, in batches (about 20x
    faster than one at a time); anything else is encoded when asked."""

    def __init__(self, encoder, texts: list[str], batch: int = 64) -> None:
        self.encoder, self.cache = encoder, {}
        texts = sorted(set(texts), key=len)  # similar lengths per batch: less padding
        for i in range(0, len(texts), batch):
            chunk = texts[i:i + batch]
            self.cache.update(zip(chunk, self.encoder.encode_batch(chunk)))
            if i // batch % 20 == 0:
                print(f"encoded {i}/{len(texts)} queries", file=sys.stderr)

    def encode(self, text: str):
        vec = self.cache.get(text)
        return vec if vec is not None else self.encoder.encode(text)


def plan(index: DocsIndex, rng: random.Random, limit: int | None) -> list[dict]:
    """What to generate: (question, gold passage, answer, history) before any retrieval."""
    rows, done, seen_sections = [], [], set()
    for p in index.passages[:limit] if limit else index.passages:
        a = answer(p)
        if len(a) < 30 or (p.title, p.url) in seen_sections:
            continue  # a long section's later chunks would answer its title's question badly
        seen_sections.add((p.title, p.url))
        for q in questions(p, rng):
            history = []
            if done and rng.random() < HISTORY_SHARE:
                hq, ha = rng.choice(done)
                history = [{"instruction": hq, "output": ha}]
            rows.append({"q": q, "gold": p, "a": a, "history": history})
            done.append((q, a))
    for first, second in sibling_pairs(index):
        if limit or rng.random() > 0.5:
            continue
        q1 = rng.choice(questions(first, rng) or [f"What does {first.title} do?"])
        q2 = rng.choice(FOLLOW).format(k=second.api.split(".")[0])
        rows.append({"q": q2, "gold": second, "a": answer(second),
                     "history": [{"instruction": q1, "output": answer(first)}]})
    return rows


def build(index: DocsIndex, seed: int = SEED, limit: int | None = None) -> tuple[list, list]:
    rng = random.Random(seed)
    rows = plan(index, rng, limit)
    # The texts search() will encode: each question, and a follow-up's question with the earlier one.
    texts = [r["q"].strip() for r in rows]
    texts += [r["history"][-1]["instruction"].strip() + " " + r["q"].strip()
              for r in rows if r["history"] and is_follow_up(r["q"])]
    index._encoder = CachedEncoder(index.encoder, texts)
    train, val = [], []
    t0 = time.time()
    for n, r in enumerate(rows):
        history = [h["instruction"] for h in r["history"]]
        row = {"instruction": r["q"], "input": context_for(index, r["q"], r["gold"], history),
               "output": r["a"]}
        if r["history"]:
            row["history"] = r["history"]
        (val if is_val(r["gold"]) else train).append(row)
        if n % 2000 == 0:
            print(f"{n}/{len(rows)} examples, {time.time() - t0:.0f} s", file=sys.stderr)
    rng.shuffle(train)
    return train, val


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=bc.ROOT / "data" / "python" / "grounded")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--limit", type=int, default=None, help="only the first N passages (a quick look)")
    args = ap.parse_args(argv)
    index = DocsIndex.load()
    train, val = build(index, args.seed, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        with open(args.out / name, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(json.dumps({"train": len(train), "val": len(val),
                      "with_history": sum("history" in r for r in train)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
