"""Engine output into Chainlit messages: token streaming, the reply's footer, its sources, and
showing untrusted text safely.

Chainlit escapes HTML (unsafe_allow_html = false in .chainlit/config.toml), so a model's <script>
is shown as text. Markdown still renders, which suits code answers (fenced code shows as a code
block with a copy button); the one markdown construct left that would make the browser fetch
something a model wrote is an image, so "![" is escaped (outside code blocks), as is a "#" or
">" that starts a line.
"""

from __future__ import annotations

import asyncio
import time

import chainlit as cl

from app.display import (SOURCES_CAPTION, notice_summary, queue_line, source_entries,
                         sources_title)
from app.markdown import LINE_MARKERS, fence_after


async def wait_in_line(reply) -> None:
    """On a busy server, a note saying how many requests are ahead of this answer, kept up to
    date until the answer starts, then removed (also when the person stops it while it waits)."""
    waiting = reply.waiting()
    note = None
    try:
        while (ahead := await asyncio.to_thread(next, waiting, None)) is not None:
            if note is None:
                note = cl.Message(content=md_text(queue_line(ahead)))
                await note.send()
            else:
                note.content = md_text(queue_line(ahead))
                await note.update()
    finally:
        if note is not None:
            await note.remove()


async def stream_into(msg, reply, interval: float = 0.05) -> str:
    """Stream the reply's text deltas into msg; returns the model's raw text.

    Each token is produced in a worker thread (the event loop keeps serving other sessions) and
    only when the previous one has been taken, so once this coroutine is cancelled (Chainlit's
    stop button cancels the message handler) no further token is computed: generation ends
    within a token. Deltas are sent to the browser at most every `interval` seconds (the first
    at once): the page re-renders the whole message for each update, and a small model can write
    hundreds of tokens a second.
    """
    tokens = iter(reply)
    raw: list[str] = []
    safe = MarkdownGuard()
    pending, last_sent = "", float("-inf")
    try:
        while True:
            delta = await asyncio.to_thread(next, tokens, None)
            if delta is None:
                break
            raw.append(delta)
            pending += safe(delta)
            if time.monotonic() - last_sent >= interval:
                await msg.stream_token(pending)
                pending, last_sent = "", time.monotonic()
    except asyncio.CancelledError:
        msg.content += pending  # shown with the caller's final update
        raise
    if pending:
        await msg.stream_token(pending)
    return "".join(raw)


def reply_footer(reply, mode: str) -> str:
    """Small print under a reply: the engine's notices (context trimmed), and for a story or a
    reply cut at max_new_tokens, its length and speed."""
    stats = reply.stats
    if stats is None:
        return ""
    lines = [f"_{md_text(n)}_" for n in notice_summary(stats.notices)]
    if mode == "story" or stats.finish_reason == "length":
        n = stats.new_tokens
        tail = f"{n} token{'' if n == 1 else 's'} · {stats.tokens_per_s:.0f} tokens/s"
        if stats.finish_reason == "length":
            tail += " · stopped at the max new tokens setting"
        lines.append(f"_{tail}_")
    return ("\n\n" + "\n\n".join(lines)) if lines else ""


def sources_element(sources) -> cl.CustomElement | None:
    """The documentation passages a grounded reply was given, as the collapsed "Sources (n)"
    list under the answer (public/elements/Sources.jsx: title linked to docs.python.org in a
    new tab, the page, a short excerpt). None when the reply has no sources."""
    entries = source_entries(sources)
    if not entries:
        return None
    return cl.CustomElement(name="Sources", display="inline",
                            props={"title": sources_title(len(entries)),
                                   "caption": SOURCES_CAPTION, "items": entries})


class MarkdownGuard:
    """Escapes "![" (a markdown image) and a "#" or ">" that starts a line (a Python comment or
    a >>> prompt, not a heading or a quotation: app.markdown.LINE_MARKERS) in streamed text,
    across delta boundaries, except inside fenced code blocks (app.markdown.fence_after), where
    they are code and show as written."""

    def __init__(self) -> None:
        self.last = ""
        self.line = ""  # the current line so far
        self.fence: str | None = None  # the open code fence, if any

    def __call__(self, delta: str) -> str:
        if not delta:
            return delta
        out = []
        for ch in delta:
            if self.fence is None and (
                    (ch == "[" and self.last == "!")
                    or (ch in LINE_MARKERS and not self.line.strip() and len(self.line) <= 3)):
                out.append("\\")
            out.append(ch)
            if ch == "\n":
                self.fence = fence_after(self.line, self.fence)
                self.line = ""
            else:
                self.line += ch
            self.last = ch
        return "".join(out)


def md_text(text: str) -> str:
    """Plain text for a markdown line (the filter's reason may quote the question)."""
    return MarkdownGuard()(text.replace("\n", " "))


async def show_error(text: str, author: str = "Workbench") -> None:
    """A problem a person can act on, shown as a message (never a traceback)."""
    await cl.ErrorMessage(content=text, author=author).send()
