"""Pieces every Gradio tab uses: error handling, the shared sampling controls, safe text display.

Handlers are plain functions (tested without a server in tests/test_gradio_handlers.py); the tab
modules bind them to components. Every handler goes through `guard`, so a person sees the
app's message ("top_p must be between 0.05 and 1, got 1.5") in the UI, never a traceback, and
the server keeps serving. A handler that generates takes the sidebar's values as
`model, **sampling` (Controls.inputs wires them), and turns them into SamplingParams with
app.limits.sampling_params(**sampling).
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import re
import time
import typing
from dataclasses import dataclass

import gradio as gr

from app.display import notice_summary
from app.markdown import code_lines, starts_with_marker
from app.limits import SAMPLING
from app.workbench import USER_ERRORS

log = logging.getLogger("app.gradio")


def _as_gr_error(e: BaseException) -> gr.Error:
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, USER_ERRORS):
        msg = str(e)
        return gr.Error(msg[:1].upper() + msg[1:], print_exception=False)
    log.exception("unexpected error in a handler")
    return gr.Error(f"Something went wrong ({type(e).__name__}: {e}). The server is still "
                    "running; try again, or report this with the server's log.",
                    print_exception=False)


def guard(fn):
    """Turn engine errors into gr.Error with the engine's message (functions and generators)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every error becomes a message
                raise _as_gr_error(e) from None
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                raise _as_gr_error(e) from None
    # Gradio finds special arguments (evt: gr.SelectData) from type hints, which a partial
    # does not carry: copy the resolved hints of the function underneath.
    target = fn.func if isinstance(fn, functools.partial) else fn
    try:
        wrapper.__annotations__ = dict(typing.get_type_hints(target))
    except (NameError, TypeError):
        pass
    return wrapper


def show_text(text: str) -> str:
    """Text for components that render HTML/Markdown (stats, messages, the explorer): escaped,
    so `<script>` or `<b>` shows as those characters and never runs."""
    return html.escape(text or "", quote=False)


_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def show_markdown(text: str) -> str:
    """A chat message (the model's, a person's, a note) for the chatbot, which renders Markdown:
    fenced and indented code blocks (app.markdown.code_lines) and `inline code` are left as
    written (the renderer shows them as escaped code, with a copy button on each block);
    everywhere else HTML is escaped, so `<script>` or `<b>` shows as those characters, a line
    starting with "#" or ">" is text (app.markdown.LINE_MARKERS), and a Markdown image ("![")
    is escaped so that model output never makes the browser fetch anything. Whatever the renderer reads differently is still cleaned by its HTML sanitizer."""
    lines = (text or "").split("\n")
    code = code_lines(text or "")
    out, prose = [], []
    for line, is_code in zip(lines, code):
        if is_code:
            if prose:
                out.append(_prose(prose))
                prose = []
            out.append(line)
        else:
            prose.append(line)
    if prose:
        out.append(_prose(prose))
    return "\n".join(out)


def _prose(lines: list[str]) -> str:
    """Markdown prose lines, HTML-escaped outside inline code spans; a line that starts with
    "#" (a Python comment) stays text, not a heading (">" is escaped as HTML already)."""
    text = "\n".join("\\" + line.lstrip(" ") if starts_with_marker(line)
                     and not line.lstrip(" ").startswith(">") else line for line in lines)
    parts, end = [], 0
    for m in _CODE_SPAN.finditer(text):
        parts.append(_escape(text[end:m.start()]))
        parts.append(m.group(0))
        end = m.end()
    parts.append(_escape(text[end:]))
    return "".join(parts)


def _escape(text: str) -> str:
    return html.escape(text, quote=False).replace("![", "!\\[")


class Throttle:
    """Yield at most every `interval` seconds while streaming (the last one always goes out):
    a fast CPU model writes hundreds of tokens a second, more updates than a browser needs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.last = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


def stats_line(stats, extra: str = "") -> str:
    """'42 tokens · 118.3 tokens/s · stopped: end of text' plus any notices, as Markdown."""
    if stats is None:
        return extra
    reasons = {"eos": "the model ended the text", "stop": "a stop sequence",
               "length": "max new tokens reached", "cancelled": "stopped by you",
               "time": "the server's time limit per answer"}
    parts = [f"{stats.new_tokens} tokens", f"{stats.tokens_per_s:.1f} tokens/s"]
    if stats.finish_reason:
        parts.append(f"ended: {reasons.get(stats.finish_reason, stats.finish_reason)}")
    line = " · ".join(parts)
    notes = [show_text(n) for n in notice_summary(stats.notices)]
    return "  \n".join([line + (f" · {extra}" if extra else "")] + [f"*{n}*" for n in notes])


@dataclass
class Controls:
    """The sidebar's components, which every tab reads: the model picker and the sampling
    controls (name -> component, in app.limits.SAMPLING order)."""

    model: gr.Dropdown
    sampling: dict

    def inputs(self, *components) -> dict:
        """Event arguments for a handler `fn(*components, model, **sampling)`: the sampling
        values go by name, so the HTTP API names them (temperature=..., seed=...)."""
        return dict(inputs=[*components, self.model], inputs_kwargs=self.sampling)

    @property
    def triggers(self) -> list:
        """A change to any of them (for views that follow the settings)."""
        return [c.change for c in [self.model, *self.sampling.values()]]


def sampling_components() -> dict:
    """The sampling controls, with ranges, labels and help from app.limits.SAMPLING."""
    comps = {}
    for name, limit in SAMPLING.items():
        if name == "seed":
            # -1, not None: Gradio 6.31 shows an empty Number as 0 and sends 0, which would
            # make every answer the same.
            comps[name] = gr.Number(value=-1, label=limit.label, info=limit.help, precision=0,
                                    minimum=-1, maximum=limit.hi, elem_id=f"sampling-{name}")
        else:
            comps[name] = gr.Slider(limit.lo, limit.hi, value=limit.default, step=limit.step,
                                    label=limit.label, info=limit.help,
                                    elem_id=f"sampling-{name.replace('_', '-')}")
    return comps


CSS = """
/* Chat messages are Markdown (show_markdown): line breaks are kept by the renderer, code
   blocks keep their indentation; a sources note's excerpts read as small print. */
#chatbot .thought .message-content li { margin-bottom: 0.4em; }
.explorer-table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
.explorer-table th { text-align: left; padding: 4px 6px; font-weight: 600;
                     border-bottom: 1px solid var(--border-color-primary); }
.explorer-table td { padding: 3px 6px; vertical-align: middle; }
.explorer-table td.tok { font-family: var(--font-mono); white-space: pre; }
.explorer-table .bar { position: relative; height: 18px; min-width: 90px;
                       background: var(--background-fill-secondary); border-radius: 3px; }
.explorer-table .fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px;
                        background: var(--color-accent); opacity: 0.75; }
.explorer-table .num { position: relative; padding-left: 4px; font-size: 0.85em;
                       line-height: 18px; font-variant-numeric: tabular-nums; }
.explorer-table .removed .num { color: var(--body-text-color-subdued); }
.explorer-table tr.picked td.tok { font-weight: 700; }
#train-status { font-variant-numeric: tabular-nums; }
/* The chat's toolbar (Copy chat, clear) floats over the top of the messages: leave it room, so
   it never covers the first message (a long one, or on a phone). */
#chatbot .bubble-wrap { padding-top: 44px; }
"""
