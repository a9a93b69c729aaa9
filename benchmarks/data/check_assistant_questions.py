#!/usr/bin/env python3
"""Validate benchmarks/data/assistant_questions.jsonl.

Run with the project's Python 3.11 interpreter, e.g.

    .venv/bin/python benchmarks/data/check_assistant_questions.py [path]

Checks
  * every line is a JSON object with exactly the keys
    id, split, category, question, apis, history
  * ids are unique and of the form qNNN
  * split follows the fixed rule below; category is a short lowercase word
  * follow-up items ("history" holds one earlier question) use category
    "followup"; single questions have an empty history
  * every API name resolves in this interpreter: the longest importable
    module prefix is imported and the rest is looked up with getattr
    (names without an importable prefix are looked up on builtins); the
    module must be one of the modules the assistant indexes
  * "keyword:<kw>" entries name a real Python keyword / soft keyword and
    appear in at most 20 items
  * 220 single questions and 40 follow-ups

Split rule (fixed before any results were looked at): within each
category, items are taken in id order and numbered k = 0, 1, 2, ...;
an item is "dev" when k % 5 is 1 or 3, otherwise "test".  This gives
about 40 % dev in every category (including the follow-ups).

Exit status is non-zero on any bad name or malformed line.  Counts per
split and category are printed.
"""
from __future__ import annotations

import builtins
import collections
import importlib
import json
import keyword
import re
import sys
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("assistant_questions.jsonl")

ALLOWED_MODULES = {
    "builtins", "string", "re", "datetime", "collections", "collections.abc",
    "itertools", "functools", "operator", "os", "os.path", "pathlib", "sys",
    "json", "csv", "math", "random", "statistics", "subprocess", "argparse",
    "logging", "typing", "dataclasses", "enum", "time", "shutil", "glob",
    "tempfile", "io", "textwrap", "copy", "pprint", "heapq", "bisect",
    "contextlib", "abc", "urllib.parse", "urllib.request", "threading",
    "hashlib", "base64", "uuid", "decimal", "fractions", "timeit", "secrets",
    "zipfile", "pickle", "sqlite3", "unittest", "asyncio",
    "concurrent.futures", "struct", "array", "fnmatch", "shlex", "difflib",
    "traceback", "warnings", "inspect", "calendar", "types", "weakref",
    "queue", "zoneinfo", "getpass", "platform", "configparser", "gzip",
}
# Only these asyncio names are indexed.
ALLOWED_ASYNCIO = {
    "asyncio.run", "asyncio.gather", "asyncio.sleep", "asyncio.create_task",
    "asyncio.wait_for",
}
KEYS = {"id", "split", "category", "question", "apis", "history"}
EXPECTED_SINGLE = 220
EXPECTED_FOLLOWUP = 40
MAX_KEYWORD_ITEMS = 20
FOLLOWUP_CATEGORY = "followup"
_MISSING = object()


def expected_split(k: int) -> str:
    return "dev" if k % 5 in (1, 3) else "test"


def resolve(name: str) -> tuple[str | None, str | None]:
    """Return (module, error). module is the module the name was found in."""
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None, "not a dotted identifier"
    module_name, obj, rest = None, None, parts
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        try:
            obj = importlib.import_module(prefix)
        except ImportError:
            continue
        module_name, rest = prefix, parts[i:]
        break
    if module_name is None:
        module_name, obj = "builtins", builtins
    for attr in rest:
        obj = getattr(obj, attr, _MISSING)
        if obj is _MISSING:
            return module_name, f"{attr!r} not found (looked up from module {module_name!r})"
    if module_name not in ALLOWED_MODULES:
        return module_name, f"module {module_name!r} is not in the indexed list"
    if module_name == "asyncio" and name not in ALLOWED_ASYNCIO:
        return module_name, "only asyncio.run/gather/sleep/create_task/wait_for are indexed"
    return module_name, None


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_PATH
    errors: list[str] = []
    warnings: list[str] = []
    if sys.version_info[:2] != (3, 11):
        warnings.append(
            f"running on Python {sys.version.split()[0]}; names are meant to be checked on 3.11")

    items = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                errors.append(f"line {lineno}: empty line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {lineno}: invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict) or set(obj) != KEYS:
                errors.append(f"line {lineno}: expected an object with keys {sorted(KEYS)}")
                continue
            items.append((lineno, obj))

    ids = collections.Counter()
    per_cat_seen = collections.Counter()
    counts = collections.Counter()
    keyword_items = 0
    n_single = n_followup = 0
    kwset = set(keyword.kwlist) | set(getattr(keyword, "softkwlist", []))
    names_checked = 0
    names_failed = 0

    for lineno, obj in items:
        where = f"line {lineno} ({obj.get('id')})"
        qid, split, cat = obj["id"], obj["split"], obj["category"]
        question, apis, history = obj["question"], obj["apis"], obj["history"]
        if not isinstance(qid, str) or not re.fullmatch(r"q\d{3,}", qid):
            errors.append(f"{where}: bad id {qid!r}")
        ids[qid] += 1
        if not isinstance(cat, str) or not re.fullmatch(r"[a-z]{2,20}", cat):
            errors.append(f"{where}: bad category {cat!r}")
            cat = str(cat)
        if split not in ("dev", "test"):
            errors.append(f"{where}: bad split {split!r}")
        k = per_cat_seen[cat]
        per_cat_seen[cat] += 1
        if split != expected_split(k):
            errors.append(f"{where}: split {split!r} breaks the rule (position {k} in {cat!r})")
        if not isinstance(question, str) or not question.strip():
            errors.append(f"{where}: empty question")
        if (not isinstance(history, list) or len(history) > 1
                or not all(isinstance(h, str) and h.strip() for h in history)):
            errors.append(f"{where}: history must be [] or [one earlier question]")
        elif history:
            n_followup += 1
            if cat != FOLLOWUP_CATEGORY:
                errors.append(f"{where}: follow-up items use category {FOLLOWUP_CATEGORY!r}")
        else:
            n_single += 1
            if cat == FOLLOWUP_CATEGORY:
                errors.append(f"{where}: category {FOLLOWUP_CATEGORY!r} needs a history")
        if not isinstance(apis, list) or not apis:
            errors.append(f"{where}: apis must be a non-empty list")
            apis = []
        if len(set(map(str, apis))) != len(apis):
            errors.append(f"{where}: duplicate api names")
        has_kw = False
        for name in apis:
            if not isinstance(name, str):
                errors.append(f"{where}: api {name!r} is not a string")
                continue
            if name.startswith("keyword:"):
                has_kw = True
                if name[len("keyword:"):] not in kwset:
                    errors.append(f"{where}: {name!r} is not a Python keyword")
                continue
            names_checked += 1
            _, err = resolve(name)
            if err:
                names_failed += 1
                errors.append(f"{where}: {name!r}: {err}")
        keyword_items += has_kw
        counts[(split, cat)] += 1

    for qid, n in ids.items():
        if n > 1:
            errors.append(f"id {qid!r} used {n} times")
    if keyword_items > MAX_KEYWORD_ITEMS:
        errors.append(f"{keyword_items} items use keyword: entries (max {MAX_KEYWORD_ITEMS})")
    if n_single != EXPECTED_SINGLE:
        errors.append(f"{n_single} single questions (expected {EXPECTED_SINGLE})")
    if n_followup != EXPECTED_FOLLOWUP:
        errors.append(f"{n_followup} follow-up items (expected {EXPECTED_FOLLOWUP})")

    # Report.
    cats = sorted({c for _, c in counts})
    print(f"{path}: {len(items)} items ({n_single} single, {n_followup} follow-up)")
    print(f"{'category':<14}{'dev':>5}{'test':>6}{'total':>7}")
    for c in cats:
        d, t = counts[("dev", c)], counts[("test", c)]
        print(f"{c:<14}{d:>5}{t:>6}{d + t:>7}")
    dev = sum(v for (s, _), v in counts.items() if s == "dev")
    test = sum(v for (s, _), v in counts.items() if s == "test")
    print(f"{'TOTAL':<14}{dev:>5}{test:>6}{dev + test:>7}")
    print(f"api names resolved: {names_checked - names_failed}/{names_checked}; "
          f"items with keyword: entries: {keyword_items}")
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if errors:
        for e in errors:
            print(f"ERROR: {e}", file=sys.stderr)
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print("OK: 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
