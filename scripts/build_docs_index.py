"""Build the Python-docs retrieval index the assistant grounds its answers in.

    .venv/bin/python scripts/build_docs_index.py [--html /usr/share/doc/python3.11/html]
                                                 [--out data/python/index]

Sources (the same as data/python/, see data/README.md): Debian's python3.11-doc HTML (the
tutorial, FAQ, HOWTOs, glossary and the library pages in build_corpora.LIBRARY) and the stdlib's
`pydoc_data.topics` (the text `help("for")` shows). Each passage keeps where it came from:

    {"id": 17, "title": "str.split()", "api": "str.split", "kind": "method",
     "section": "Built-in Types", "url": "https://docs.python.org/3/library/stdtypes.html#str.split",
     "text": "`str.split(sep=None, maxsplit=-1)`\\n\\nReturn a list of the words ..."}

Writes `passages.jsonl` and `embeddings.safetensors` (all-MiniLM-L6-v2 vectors of each passage's
title and opening, float16) plus `meta.json` (counts, sources, the sha256 of passages.jsonl that
the embeddings belong to). engine/retrieval.py loads them; the lexical (BM25) side is built from
the passages at load time (under a second). Deterministic: the same inputs give the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import build_corpora as bc  # noqa: E402
import htmltext as ht  # noqa: E402

DOCS_URL = "https://docs.python.org/3/"
MAX_PASSAGE_CHARS = 1200  # one passage: an API entry or one section's own text
EMBED_CHARS = 400  # what the sentence model sees: the title and the opening
# Methods the docs document on frozenset but only a (mutable) set has.
SET_ONLY = {"add", "remove", "discard", "pop", "clear", "update", "intersection_update",
            "difference_update", "symmetric_difference_update"}


def clip(blocks: list[str], limit: int = MAX_PASSAGE_CHARS) -> str:
    """Whole leading blocks up to `limit` characters (a long first block is cut at a sentence)."""
    out, size = [], 0
    for b in blocks:
        if re.fullmatch(r"New in version [\d.]+\.", b) or b.startswith("#"):
            continue
        if size + len(b) + 2 > limit:
            if not out and not b.startswith("```"):
                cut = b[:limit]
                end = max(cut.rfind(". "), cut.rfind(".\n"))
                out.append(cut[: end + 1] if end > 40 else cut)
            break
        out.append(b)
        size += len(b) + 2
    while out and out[-1].rstrip().endswith(":") and not out[-1].startswith("```"):
        out.pop()  # a lead-in to a code block that did not fit
    return bc.normalize("\n\n".join(out))


def page_title(body: ht.Node) -> str:
    h1 = body.find_all("h1")
    return bc._strip_number(bc.normalize(h1[0].text())) if h1 else ""


def api_passages(body: ht.Node, rel: str, section: str):
    page = Path(rel).stem
    common = page in {"functions", "stdtypes", "exceptions", "constants"}
    for kind, name, sig, blocks in bc._api_entries(body, page):
        if kind == "attribute" and not common:
            continue
        text = clip(blocks)
        if not text or (kind == "data" and not common and len(text) < 100):
            continue
        api = name
        owner, _, meth = name.rpartition(".")
        if owner == "frozenset" and meth in SET_ONLY:
            api = f"set.{meth}"
            sig = "set" + sig[len("frozenset"):]
        title = bc._display_name(kind, api, page)
        if "(" in sig:
            text = f"`{sig}`\n\n{text}"
        yield dict(title=title, api=api, kind=kind, section=section,
                   url=f"{DOCS_URL}{rel}#{name}", text=text)


def unnamed_api_passages(body: ht.Node, rel: str, section: str):
    """The tutorial documents list methods (`list.append(x)`) without anchors of their own."""
    for sec in body.find_all("section"):
        for dl in (c for c in sec.children if isinstance(c, ht.Node) and c.tag == "dl"):
            if "py" not in dl.classes or "method" not in dl.classes:
                continue
            kids = [c for c in dl.children if isinstance(c, ht.Node)]
            dt = next((c for c in kids if c.tag == "dt"), None)
            dd = next((c for c in kids if c.tag == "dd"), None)
            if dt is None or dd is None or dt.attrs.get("id"):
                continue
            sig = bc.normalize(dt.text())
            name = sig.split("(")[0]
            text = clip([bc.normalize(b) for b in ht.render_blocks(dd)])
            if text and "." in name:
                yield dict(title=f"{name}()", api=name, kind="method", section=section,
                           url=f"{DOCS_URL}{rel}#{sec.attrs.get('id', '')}",
                           text=f"`{sig}`\n\n{text}")


def section_passages(body: ht.Node, rel: str, section: str, kind: str):
    for sec in body.find_all("section"):
        title = bc._strip_number(bc._heading(sec))
        if not title or bc._SKIP_SECTION_TITLES.match(title):
            continue
        blocks = [bc.normalize(b) for b in bc._own_blocks(sec)]
        blocks = [b for b in blocks if b and not b.startswith("Source code: ")]
        # Long sections become several passages, each under the section's title.
        chunk: list[str] = []
        for b in blocks + [None]:
            if b is not None and sum(len(x) + 2 for x in chunk) + len(b) <= MAX_PASSAGE_CHARS:
                chunk.append(b)
                continue
            text = clip(chunk) if chunk else ""
            if len(text) >= 80:
                yield dict(title=title, api="", kind=kind, section=section,
                           url=f"{DOCS_URL}{rel}#{sec.attrs.get('id', '')}", text=text)
            chunk = [b] if b is not None else []


def glossary_passages(body: ht.Node, rel: str):
    for dl in body.find_all("dl", "glossary"):
        kids = [c for c in dl.children if isinstance(c, ht.Node)]
        for i, dt in enumerate(kids):
            if dt.tag != "dt" or i + 1 >= len(kids) or kids[i + 1].tag != "dd":
                continue
            term = bc.normalize(dt.text())
            if not term or term in {">>>", "..."}:
                continue
            text = clip([bc.normalize(b) for b in ht.render_blocks(kids[i + 1])])
            if text:
                yield dict(title=term, api="", kind="glossary", section="Glossary",
                           url=f"{DOCS_URL}{rel}#{dt.attrs.get('id', '')}", text=text)


def anchor_map(html_root: Path) -> dict[str, str]:
    """Element id -> page, over the language reference and library pages (for pydoc topics,
    whose keys are the Sphinx labels the HTML keeps as ids)."""
    where: dict[str, str] = {}
    for sub in ("reference", "library"):
        for page in sorted((html_root / sub).glob("*.html")):
            for m in re.finditer(r'id="([^"]+)"', page.read_text(encoding="utf-8")):
                where.setdefault(m.group(1), f"{sub}/{page.name}")
    return where


def topic_passages(anchors: dict[str, str]):
    from pydoc_data.topics import topics
    for key in sorted(topics):
        raw = bc.normalize(topics[key])
        m = re.match(r"(.+)\n\*+\n", raw)
        if not m or key not in anchors:
            continue
        title = m.group(1).strip().replace('"', "")
        blocks = []
        for para in re.split(r"\n\s*\n", raw[m.end():].lstrip("\n")):
            if re.match(r"=+\n|-+\n", para) or re.match(r".+\n[=\-]{3,}$", para):
                break  # the next sub-heading: the lead is the passage
            if "::=" in para:
                continue  # grammar rules are no help to a reader of a chat answer
            if para.startswith("   ") and bc._looks_like_code(para):
                blocks.append("```\n" + "\n".join(l[3:] for l in para.split("\n")) + "\n```")
            else:
                blocks.append(bc._quoted_code(re.sub(r"\s*\n\s*", " ", para).strip()))
        text = clip(blocks)
        if len(text) >= 80:
            yield dict(title=title, api=f"keyword:{key}" if key.isidentifier() else "",
                       kind="topic", section="The Python Language Reference",
                       url=f"{DOCS_URL}{anchors[key]}#{key}", text=text)


def build(html_root: Path) -> list[dict]:
    passages: list[dict] = []
    for group, rel in bc.doc_pages(html_root):
        body = ht.main_body(ht.parse((html_root / rel).read_text(encoding="utf-8")))
        section = page_title(body)
        if group == "library":
            passages += api_passages(body, rel, section)
        elif group == "glossary":
            passages += glossary_passages(body, rel)
        else:
            passages += unnamed_api_passages(body, rel, section)
            passages += section_passages(body, rel, section, group)
    passages += topic_passages(anchor_map(html_root))
    seen, out = set(), []
    for p in passages:
        key = (p["title"], p["text"])
        if key not in seen:
            seen.add(key)
            out.append({"id": len(out), **p})
    return out


def embed_text(p: dict) -> str:
    return f"{p['title']} ({p['section']}): {p['text'][:EMBED_CHARS]}"


def write(passages: list[dict], out: Path) -> dict:
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from engine.code_filter_model import MODEL_NAME, shared_encoder

    out.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages)
    (out / "passages.jsonl").write_text(lines, encoding="utf-8")
    digest = hashlib.sha256(lines.encode()).hexdigest()
    enc, texts, batch = shared_encoder(), [embed_text(p) for p in passages], 32
    vecs = torch.cat([enc.encode_batch(texts[i:i + batch])
                      for i in tqdm(range(0, len(texts), batch), desc="embedding", unit="batch")])
    save_file({"embeddings": vecs.half().contiguous()}, str(out / "embeddings.safetensors"),
              metadata={"model": MODEL_NAME, "passages_sha256": digest})
    os.chmod(out / "embeddings.safetensors", 0o644)  # safetensors writes 0600
    kinds: dict[str, int] = {}
    for p in passages:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    meta = {"passages": len(passages), "by_kind": dict(sorted(kinds.items())),
            "encoder": MODEL_NAME, "passages_sha256": digest,
            "sources": {"python3.11-doc": bc._deb_version("python3.11-doc"),
                        "pydoc_data": sys.version.split()[0]}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", type=Path, default=Path("/usr/share/doc/python3.11/html"))
    ap.add_argument("--out", type=Path, default=bc.ROOT / "data" / "python" / "index")
    args = ap.parse_args(argv)
    t0 = time.time()
    passages = build(args.html)
    meta = write(passages, args.out)
    print(json.dumps({**meta, "seconds": round(time.time() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
