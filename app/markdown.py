"""Model text read as Markdown, the way both chat UIs render it: which lines are code.

Both UIs render Markdown so that a fenced block in an answer shows as a code block (monospace,
with a copy button). Code is shown as written, so the escaping each UI applies to the rest of
the text (Gradio: HTML and images; Chainlit: images) must skip it:

    code_lines("Use:\\n```python\\nx = 1\\n```")   # [False, True, True, True]
    fence = fence_after("```python", None)        # "```": inside a block until "```" again
    starts_with_marker(">>> x = 1")               # True: shown as text, not as a quotation

The rules are CommonMark's: a fence is three or more backticks or tildes after at most three
spaces (a backtick fence's info string has no backtick, so "```x```" is inline code), closed by
a line of at least as many of the same character; an unclosed fence runs to the end (an answer
still streaming); an indented block is lines of four spaces or a tab after a blank line.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r" {0,3}(`{3,}(?=[^`]*$)|~{3,})")

# A line of model text outside code that starts with one of these is shown as text: the small
# models write Python comments and ">>>" prompts outside code blocks far more often than they
# mean a heading or a quotation.
LINE_MARKERS = "#>"


def starts_with_marker(line: str) -> bool:
    """Does this line (outside code) open a heading or a quotation in Markdown?"""
    stripped = line.lstrip(" ")
    return len(line) - len(stripped) <= 3 and stripped[:1] in LINE_MARKERS and bool(stripped)


def fence_after(line: str, fence: str | None) -> str | None:
    """The open fence after `line` (one whole line): `fence` itself while inside a block that
    this line does not close, a new marker when it opens one, else None."""
    if fence is not None:
        stripped = line.strip()
        closes = (stripped.startswith(fence) and not stripped.strip(fence[0])
                  and len(line) - len(line.lstrip(" ")) <= 3)
        return None if closes else fence
    opener = _FENCE.match(line)
    return opener.group(1) if opener else None


def code_lines(text: str) -> list[bool]:
    """For each line of text ("\\n"-separated), whether the renderer shows it as code: fenced
    blocks with their fence lines, and indented blocks."""
    lines = text.split("\n")
    code = [False] * len(lines)
    fence = None
    indented = False
    for i, line in enumerate(lines):
        if fence is not None or _FENCE.match(line):
            code[i], indented = True, False
            fence = fence_after(line, fence)
        elif line.startswith(("    ", "\t")) and line.strip() and (
                indented or i == 0 or not lines[i - 1].strip()):
            code[i] = indented = True
        elif line.strip():
            indented = False
    return code


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]()~|#!{}+-])")


def plain(text: str) -> str:
    """Any text (an error quoting an uploaded file's keys, a run's message) shown literally in
    Markdown, on one line: HTML escaped (&lt;b&gt;) and every other punctuation mark Markdown
    reads backslash-escaped, so it can open no link, image, HTML tag or emphasis."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
