"""The shipped training corpora (data/) and the code that builds them (scripts/build_corpora.py)."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
sys.path.insert(0, str(ROOT / "scripts"))

import build_corpora as bc  # noqa: E402
import htmltext as ht  # noqa: E402

TEXT_FILES = ["stories/stories.txt", "python/docs.txt", "python/qa.jsonl", "python/qa_val.jsonl"]
DOC_HTML = Path("/usr/share/doc/python3.11/html")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))


def _jsonl(name: str) -> list[dict]:
    rows = []
    with open(DATA / "python" / name, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            assert line.strip(), f"{name}:{i} is blank"
            rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="module")
def qa_train() -> list[dict]:
    return _jsonl("qa.jsonl")


@pytest.fixture(scope="module")
def qa_val() -> list[dict]:
    return _jsonl("qa_val.jsonl")


# ---------------------------------------------------------------- the committed files

def test_files_match_manifest(manifest):
    """Every built file is present and unchanged since the build (no hand edits)."""
    assert set(manifest["files"]) >= set(TEXT_FILES) | {"python/LICENSE-PSF.txt", "stories/works.json"}
    for rel, meta in manifest["files"].items():
        data = (DATA / rel).read_bytes()
        assert len(data) == meta["bytes"], rel
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], f"{rel} differs from the build"


def test_total_size_is_shippable():
    index = DATA / "python" / "index"  # the assistant's docs index (scripts/build_docs_index.py)
    files = [p for p in DATA.rglob("*") if p.is_file()]
    corpora = sum(p.stat().st_size for p in files if index not in p.parents)
    searchable = sum(p.stat().st_size for p in files if index in p.parents)
    assert corpora < 12 * 1024 * 1024, f"data/'s corpora are {corpora / 2**20:.1f} MiB"
    assert searchable < 8 * 1024 * 1024, f"data/python/index is {searchable / 2**20:.1f} MiB"


@pytest.mark.parametrize("rel", TEXT_FILES)
def test_text_is_clean_utf8(rel):
    raw = (DATA / rel).read_bytes()
    text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
    assert text.endswith("\n") and not text.startswith("\n")
    assert "\r" not in text and "\x00" not in text and "\ufeff" not in text
    assert not re.search(r"[ \t]+\n", text), "trailing whitespace"
    assert "\n\n\n\n" not in text, "more than two blank lines in a row"
    # Leftovers of HTML or Sphinx chrome.
    assert not re.search(r"&(lt|gt|quot|nbsp|amp);", text), "HTML entity"
    for junk in ("\u00b6", "Permalink to this", "Previous topic",
                 "Show Source", "Report a Bug"):
        assert junk not in text, f"{rel} contains {junk!r}"
    assert not re.search(r'<(span|div|p|a|em|code|dl|dt|dd|section)\b[^>\n]*class=', text)


def test_stories_are_the_works_without_gutenberg_boilerplate():
    text = (DATA / "stories" / "stories.txt").read_text(encoding="utf-8")
    works = json.loads((DATA / "stories" / "works.json").read_text(encoding="utf-8"))
    docs = text.rstrip("\n").split("\n\n\n")
    assert len(docs) == len(works) >= 40
    assert all(len(d) > 1000 for d in docs), "an empty or truncated work"
    assert len({hashlib.sha256(d.encode()).hexdigest() for d in docs}) == len(docs), "duplicate work"
    assert len({w["title"] for w in works}) == len(works)
    for line in ("To be, or not to be,--that is the question:--",
                 "Of Mans First Disobedience, and the Fruit"):
        assert line in text
    assert not re.search(r"gutenberg|\bebook|\betext|\*\*\* ?(start|end)", text, re.I)
    assert 2_000_000 < len(text.encode()) < 7_000_000


def test_docs_cover_tutorial_faq_howtos_and_builtins():
    text = (DATA / "python" / "docs.txt").read_text(encoding="utf-8")
    for heading in ("# 4. More Control Flow Tools", "# Programming FAQ", "# Sorting HOW TO",
                    "# Built-in Functions", "# Built-in Exceptions", "# Glossary"):
        assert f"\n{heading}\n" in f"\n{text}", heading
    # A code block keeps its indentation.
    assert "```\ndef all(iterable):\n    for element in iterable:\n        if not element:" in text
    assert text.count("```") % 2 == 0
    assert len(text.encode()) < 4_000_000


def test_qa_rows_are_alpaca_and_not_empty(qa_train, qa_val):
    for name, rows in (("qa.jsonl", qa_train), ("qa_val.jsonl", qa_val)):
        for i, r in enumerate(rows, 1):
            assert set(r) == {"instruction", "input", "output"}, f"{name}:{i} keys {sorted(r)}"
            assert all(isinstance(v, str) for v in r.values()), f"{name}:{i}"
            assert r["instruction"].strip() and r["output"].strip(), f"{name}:{i} empty"
            assert r["output"].count("```") % 2 == 0, f"{name}:{i} unbalanced code fence"


def test_qa_has_no_duplicates_and_no_val_leak(qa_train, qa_val):
    keys = [(r["instruction"].lower(), r["input"].lower()) for r in qa_train + qa_val]
    assert len(keys) == len(set(keys)), "duplicate question"
    # Paraphrases of one entry stay on one side of the split.
    train_answers = {r["output"] for r in qa_train}
    leaked = [r for r in qa_val if r["output"] in train_answers]
    assert len(leaked) <= len(qa_val) // 50, leaked[:3]


def test_qa_size_split_and_variety(qa_train, qa_val, manifest):
    report = manifest["report"]["python"]
    assert (len(qa_train), len(qa_val)) == (report["qa_train"], report["qa_val"])
    assert len(qa_train) >= 3000
    assert 0.03 < len(qa_val) / (len(qa_train) + len(qa_val)) < 0.08
    assert sum(1 for r in qa_train if r["input"]) > 100, "no pairs use the input field"
    # Several phrasings, not one template.
    openers = {" ".join(r["instruction"].split()[:2]).lower() for r in qa_train}
    assert len(openers) > 50
    for kind in ("faq", "function", "exception", "glossary", "section", "pydoc_topic"):
        assert report["qa_by_kind"].get(kind, 0) >= 50, kind


def test_qa_answers_fit_in_about_200_tokens(qa_train, qa_val):
    from engine.tokenizer import gpt2_tokenizer
    enc = gpt2_tokenizer().encode
    lengths = [len(enc(r["output"])) for r in qa_train + qa_val]
    assert max(lengths) <= 210, max(lengths)


def test_known_answers_are_right(qa_train, qa_val):
    by_q = {r["instruction"]: r["output"] for r in qa_train + qa_val if not r["input"]}
    split = [o for q, o in by_q.items() if re.fullmatch(r".*\bstr\.split\(\).*", q)]
    assert split and split[0].startswith("`str.split(sep=None, maxsplit=-1)`")
    assert "Return a list of the words in the string" in split[0]
    value_error = [o for q, o in by_q.items() if re.search(r"\bValueError\b", q)]
    assert value_error and all("inappropriate value" in o for o in value_error)


def test_licence_ships_with_the_python_data():
    lic = (DATA / "python" / "LICENSE-PSF.txt").read_text(encoding="utf-8")
    assert "PSF LICENSE AGREEMENT" in lic and "ZERO-CLAUSE BSD" in lic
    assert "Copyright (c) 2001-2023 Python Software Foundation" in lic
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for needle in ("public domain", "PSF", "python scripts/build_corpora.py", "qa_val.jsonl"):
        assert needle in readme


# ---------------------------------------------------------------- the converters

SPHINX = """<html><body><div class="sphinxsidebar">Previous topic</div>
<div class="body" role="main"><section id="x"><h1>Demo<a class="headerlink" href="#x">\u00b6</a></h1>
<nav class="contents"><p>Contents</p></nav>
<p>Call <code class="docutils literal"><span class="pre">f(x)</span></code> &amp; smile.</p>
<div class="highlight"><pre><span>def f(x):</span>
<span>    return x</span>
</pre></div>
<ul><li><p>one</p></li><li><p>two</p></li></ul>
<p class="audit-hook">Raises an auditing event.</p>
<dl class="py class"><dt class="sig sig-object py" id="m.C"><em class="property"><span>class</span><span> </span></em>
<span class="sig-prename">m.</span><span class="sig-name">C</span>(<em>x</em>)<a class="headerlink" href="#m.C">\u00b6</a></dt>
<dd><p>A class.</p></dd></dl>
</section></div></body></html>"""


def test_html_to_text_keeps_content_and_drops_chrome():
    body = ht.main_body(ht.parse(SPHINX))
    text = ht.blocks_to_text(ht.render_blocks(body))
    assert text == ("# Demo\n\nCall `f(x)` & smile.\n\n```\ndef f(x):\n    return x\n```\n\n- one\n- two"
                    "\n\nclass `m.C(x)`\n\nA class.")


def test_html_without_sphinx_body_is_a_clear_error():
    with pytest.raises(ValueError, match="not a Sphinx page"):
        ht.main_body(ht.parse("<html><p>hi</p></html>"))


def test_trim_answer_keeps_whole_blocks_and_sentences():
    blocks = ["First sentence here. Second one is here too.", "x" * 800]
    assert bc.trim_answer(blocks) == "First sentence here. Second one is here too."
    long_para = " ".join(f"Sentence number {i} says something." for i in range(60))
    cut = bc.trim_answer([long_para])
    assert cut.endswith(".") and len(cut) <= bc.MAX_ANSWER_CHARS and cut.startswith("Sentence number 0")
    # A lead-in whose code block did not fit is dropped with it.
    lead = "A fine explanation of the thing, long enough to keep."
    assert bc.trim_answer([lead, "For example:", "```\n" + "y = 1\n" * 200 + "```"]) == lead
    assert bc.trim_answer(["Too short."]) is None


def test_literary_cleaning_refuses_boilerplate():
    assert bc.clean_literary("  HAMLET\n\n\n\n............O, _that_ this   flesh\r\n") == "HAMLET\n\nO, that this flesh"
    with pytest.raises(ValueError, match="boilerplate"):
        bc.clean_literary("This etext was produced by volunteers.")


def test_normalize_and_titles():
    assert bc.normalize("\u2018a\u2019 \u201cb\u201d \u2014 c\u2026  \n\n\n\nd") == "'a' \"b\" -- c...\n\nd"
    assert bc._lower_title("More on Defining Functions") == "more on defining functions"
    assert bc._lower_title("Unicode HOWTO") == "Unicode HOWTO"
    assert bc._lower_title("Overview of Descriptor Invocation") == "descriptor invocation"


@pytest.mark.slow
@pytest.mark.skipif(not DOC_HTML.is_dir(), reason="needs Debian's python3.11-doc (apt-get install -y python3.11-doc)")
def test_python_build_is_deterministic(tmp_path, manifest):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_corpora.py"), "--only", "python",
                        "--out", str(out)], check=True, capture_output=True)
        outs.append({p.name: p.read_bytes() for p in (out / "python").iterdir()})
    assert outs[0] == outs[1]
    # Same inputs as the committed build: same bytes.
    if manifest["sources"]["pydoc_data.topics"] == f"Python {sys.version.split()[0]} standard library" \
            and shutil.which("dpkg-query"):
        deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3.11-doc"],
                             capture_output=True, text=True).stdout
        if manifest["sources"]["python3.11-doc"].endswith(deb):
            for name, data in outs[0].items():
                assert hashlib.sha256(data).hexdigest() == manifest["files"][f"python/{name}"]["sha256"], name
