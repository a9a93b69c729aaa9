"""Sphinx HTML -> clean plain text, with the stdlib's html.parser only.

Used by scripts/build_corpora.py to turn Debian's python3.11-doc HTML into
training text. The pages are well-formed Sphinx output, so a tiny tree builder
is enough; rendering is Markdown-flavoured (``#`` headings, backticked inline
code, fenced code blocks with their indentation kept) because that is what the
chat UIs display.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
# Elements whose content is navigation chrome or not prose.
SKIP_TAGS = {"script", "style", "nav", "img", "svg", "form", "button", "head", "title"}
SKIP_CLASSES = {"headerlink", "sphinxsidebar", "related", "footer", "seealso",
                "toctree-wrapper", "contents", "audit-hook"}
BLOCK = {"p", "div", "section", "pre", "ul", "ol", "li", "dl", "dt", "dd", "table", "tr",
         "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "figure", "figcaption", "aside",
         "thead", "tbody", "caption", "hr", "article", "main"}


class Node:
    __slots__ = ("tag", "attrs", "children", "parent")

    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None"):
        self.tag, self.attrs, self.children, self.parent = tag, attrs, [], parent

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str, cls: str | None = None):
        return [n for n in self.iter() if n.tag == tag and (cls is None or cls in n.classes)]

    def text(self) -> str:
        """All text below this node, whitespace collapsed (for titles and signatures)."""
        parts: list[str] = []
        for c in self.children:
            if isinstance(c, str):
                parts.append(c)
            elif not _skipped(c):
                parts.append(c.text())
        return re.sub(r"\s+", " ", "".join(parts)).strip()


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v or "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: (v or "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        # Close up to the matching open element; a stray end tag is ignored.
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Node:
    b = _TreeBuilder()
    b.feed(html)
    b.close()
    return b.root


def main_body(root: Node) -> Node:
    """The page's ``div.body`` (Sphinx's main content), without sidebars or header/footer."""
    for n in root.iter():
        if n.tag == "div" and "body" in n.classes and n.attrs.get("role") == "main":
            return n
    raise ValueError("no <div class='body' role='main'> found: not a Sphinx page?")


def _skipped(n: Node) -> bool:
    return n.tag in SKIP_TAGS or bool(n.classes & SKIP_CLASSES)


def _inline(n: Node) -> str:
    """Inline text of a node's children (no block structure)."""
    return "".join(c if isinstance(c, str) else _inline_node(c) for c in n.children)


def _inline_node(c: Node) -> str:
    """Inline text of one element, code spans in backticks."""
    if _skipped(c):
        return ""
    if c.tag == "br":
        return "\n"
    if c.tag == "code" and "literal" in c.classes:
        t = c.text()
        if "`" in t:  # Markdown's way to quote a backtick inside a code span
            return f"`` {t} ``"
        return f"`{t}`" if t else ""
    return _inline(c)


def _clean_inline(s: str) -> str:
    s = re.sub(r"[ \t\r\f\v]*\n[ \t\r\f\v]*", " ", s)
    return re.sub(r"[ \t\u00a0]+", " ", s).strip()


def _pre_text(n: Node) -> str:
    out: list[str] = []

    def walk(x: Node):
        for c in x.children:
            if isinstance(c, str):
                out.append(c)
            elif c.tag == "br":
                out.append("\n")
            elif not (c.tag in SKIP_TAGS or "headerlink" in c.classes):
                walk(c)

    walk(n)
    lines = "".join(out).replace("\t", "    ").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def render_blocks(n: Node, skip=lambda node: False) -> list[str]:
    """Render a node as a list of text blocks (paragraphs, code blocks, list items)."""
    blocks: list[str] = []
    inline_buf: list[str] = []

    def flush():
        t = _clean_inline("".join(inline_buf))
        inline_buf.clear()
        if t:
            blocks.append(t)

    for c in n.children:
        if isinstance(c, str):
            inline_buf.append(c)
            continue
        if _skipped(c) or skip(c):
            continue
        if c.tag not in BLOCK:
            inline_buf.append(_inline_node(c))
            continue
        flush()
        blocks.extend(render_block(c, skip))
    flush()
    return blocks


def render_block(c: Node, skip=lambda node: False) -> list[str]:
    tag = c.tag
    if tag == "pre":
        code = _pre_text(c)
        return [f"```\n{code}\n```"] if code.strip() else []
    if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
        t = _clean_inline(_inline(c))
        return [f"{'#' * int(tag[1])} {t}"] if t else []
    if tag in {"ul", "ol"}:
        out = []
        items = [li for li in c.children if isinstance(li, Node) and li.tag == "li"]
        for i, li in enumerate(items, 1):
            sub = render_blocks(li, skip)
            if not sub:
                continue
            bullet = f"{i}. " if tag == "ol" else "- "
            pad = " " * len(bullet)
            first = bullet + sub[0].replace("\n", "\n" + pad)
            rest = [pad + b.replace("\n", "\n" + pad) for b in sub[1:]]
            out.append("\n".join([first] + rest))
        return ["\n".join(out)] if out else []
    if tag == "table":
        if len(c.find_all("code")) > 40:
            return []  # an index of names (e.g. the builtins table), not prose
        rows = []
        for tr in c.find_all("tr"):
            cells = [_clean_inline(" ".join(render_blocks(td, skip)))
                     for td in tr.children if isinstance(td, Node) and td.tag in {"td", "th"}]
            if any(cells):
                rows.append(" | ".join(cells))
        return ["\n".join(rows)] if rows else []
    if tag == "dt":
        if "sig" in c.classes:
            # An API signature: "class `collections.Counter([iterable-or-mapping])`", the
            # same spelling the Q/A answers lead with.
            prop = " ".join(x.text() for x in c.children if isinstance(x, Node) and "property" in x.classes)
            sig = "".join(x if isinstance(x, str) else ("" if "property" in x.classes else x.text())
                          for x in c.children if isinstance(x, str) or not _skipped(x))
            sig = _clean_inline(sig)
            return [f"{prop} `{sig}`".strip()] if sig else []
        t = _clean_inline(_inline(c))
        return [t] if t else []
    if tag == "div" and "admonition" in c.classes:
        sub = render_blocks(c, skip)
        # "Note" / "Warning" titles get a colon so they read as a lead-in.
        if sub and "admonition-title" in " ".join(
                x.attrs.get("class", "") for x in c.children if isinstance(x, Node)):
            sub[0] = sub[0].rstrip(":") + ":"
        return sub
    return render_blocks(c, skip)


def blocks_to_text(blocks: list[str]) -> str:
    return "\n\n".join(b for b in blocks if b.strip())
