"""The Chat tab: Python assistant (with the code-question filter) and free chat, streaming.

Gradio 6's ChatInterface conventions (submit/stop in the textbox, retry, undo, clear, examples)
built from gr.Chatbot events, because the conversation is kept in two forms: the raw messages
in a gr.BrowserState (what the person and the model wrote; it survives a page reload and is what
the engine sees) and the displayed copy: Markdown whose code blocks show as code and whose HTML
is escaped, so model output shows as text, never as markup (common.show_markdown).
A declined question gets the assistant's refusal and, under it, a collapsible note saying why; a
grounded answer gets, under it, a collapsed note listing its documentation sources. Notes (messages
with a metadata title) are for the person only: app.limits.clean_history leaves them out of what
the model sees, and Copy chat leaves them out too.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import threading
from functools import partial
from pathlib import Path

import gradio as gr

from app.display import (CHAT_MODE_LABELS, SOURCES_CAPTION, queue_line, refusal_reason,
                         source_entries, sources_title)
from app.export import conversation_files, file_stem
from app.limits import MAX_SYSTEM_CHARS, clean_history, clean_text, sampling_params
from app.workbench import Workbench

from .common import Controls, Throttle, guard, show_markdown, show_text, stats_line

MODE_LABELS = {label: mode for mode, label in CHAT_MODE_LABELS.items()}  # radio label -> mode
EXAMPLES = {
    "python": ["How do I reverse a list in Python?",
               "What does KeyError mean?",
               "How can I read a file line by line?",
               "Write a function that checks if a number is prime."],
    "chat": ["Tell me a short story about a cat.",
             "What is the weather like by the sea?",
             "Hello! Who are you?"],
}
REASON_TITLE = "Why I declined"
EMPTY_HINT = "*Type a message first, then press Enter.*"
STORAGE_KEY = "gpt-workbench-chat"
# BrowserState encrypts what it stores with this secret. A fixed secret from the environment
# lets history survive a server restart too; otherwise it survives page reloads.
STATE_SECRET = os.environ.get("WORKBENCH_STATE_SECRET") or secrets.token_hex(16)


COPY_JS = """(history) => {
    const text = (history || []).filter(m => !(m.metadata && m.metadata.title))
        .map(m => (m.role === "user" ? "You: " : "Model: ") + m.content).join("\\n\\n");
    if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text);
    } else {  // plain http on another host: the old way
        const area = document.createElement("textarea");
        area.value = text; document.body.appendChild(area); area.select();
        document.execCommand("copy"); area.remove();
    }
}"""


# The chatbot's per-message copy button copies the message as the chatbot holds it, which is
# made safe for display (common.show_markdown: outside code, "&", "<", ">" as entities, "![" and
# a line-opening "#" with a backslash). This script, in the page's head, undoes exactly that for
# a copy made from the chat, so the clipboard gets what the person or the model wrote.
COPY_MESSAGE_HEAD = """<script>
(() => {
  const clip = navigator.clipboard;
  if (!clip || !clip.writeText) return;
  const write = clip.writeText.bind(clip);
  const fence = /^ {0,3}(`{3,}|~{3,})/;
  const raw = (text) => {
    let open = null;
    return String(text).split("\\n").map((line) => {
      const f = line.match(fence);
      if (open !== null || f) {
        if (f && (open === null || f[1].startsWith(open))) open = open === null ? f[1] : null;
        return line;
      }
      return line.replace(/^\\\\#/, "#").replace(/!\\\\\\[/g, "![")
        .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
    }).join("\\n");
  };
  clip.writeText = (text) => {
    const from = document.activeElement;
    const inChat = from && from.closest && from.closest("#chatbot")
      && !from.closest('button[aria-label="Copy chat"]');  // that one copies the raw chat
    return write(inChat ? raw(text) : text);
  };
})();
</script>"""


def display(history: list) -> list:
    """The chatbot's copy of the raw history: content as safe Markdown (show_markdown), notes
    kept as notes. The history is checked first (app.limits.clean_history), whatever form it
    came in."""
    return [{**msg, "content": show_markdown(msg["content"])}
            for msg in clean_history(history, keep_notes=True)]


_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|#])")


def _md_plain(text: str) -> str:
    """Text shown literally inside Markdown (a title such as "__init__" stays as written)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def sources_note(sources) -> dict:
    """The collapsed note under a grounded answer: each passage as its title (a link to
    docs.python.org, which the chatbot opens in a new tab), its page, and a short excerpt.
    Raw Markdown, like every message in the history: display() makes it safe."""
    entries = source_entries(sources)
    lines = [f"*{SOURCES_CAPTION}*", ""]
    for i, e in enumerate(entries, 1):
        title = _md_plain(e["title"])
        link = f"[{title}]({e['url']})" if e["url"] else title
        lines.append(f"{i}. **{link}** — {_md_plain(e['section'])}")
        if e["excerpt"]:
            lines.append(f"   {' '.join(e['excerpt'].split())}")
    return {"role": "assistant", "content": "\n".join(lines),
            "metadata": {"title": sources_title(len(entries)), "status": "done"}}


def _copy(history: list) -> list:
    """A snapshot to yield (the handler goes on changing its own list while it streams)."""
    return [dict(m) for m in history]


def examples_for(mode_label: str) -> list[dict]:
    return [{"text": t} for t in EXAMPLES[MODE_LABELS.get(mode_label, "python")]]


def _busy():
    return gr.update(value="", interactive=False, submit_btn=False, stop_btn=True)


def _idle(value: str | None = None):
    """The textbox ready for the next message (value None leaves its text as it is)."""
    update = dict(interactive=True, submit_btn=True, stop_btn=False)
    if value is not None:
        update["value"] = value
    return gr.update(**update)


def respond(wb: Workbench, message, history, mode_label, model, system=None, **sampling):
    """Stream one answer. Yields (chatbot, raw history, textbox, stats) as the model writes.
    system: the free-chat system prompt / persona (app.limits.MAX_SYSTEM_CHARS; not used by
    the Python assistant, whose prompt is the documentation)."""
    before = clean_history(history, keep_notes=True)  # checked: the only copy used
    mode = MODE_LABELS.get(mode_label, mode_label)
    if mode not in CHAT_MODE_LABELS:
        raise ValueError(f"unknown chat mode {mode_label!r}; choose one of: "
                         f"{', '.join(MODE_LABELS)}")
    params = sampling_params(**sampling)
    message = clean_text(message, "message", allow_empty=True)
    if not message.strip():  # Enter on an empty box: a hint, not an error over the chat
        yield gr.skip(), gr.skip(), _idle(""), EMPTY_HINT
        return
    history = before + [{"role": "user", "content": message}]
    yield display(history), _copy(history), _busy(), ""  # show the question at once
    cancel = threading.Event()
    try:
        reply = wb.chat(message, before, mode, model, params, cancel=cancel,
                        system=(system or "") if mode == "chat" else "")
    except Exception:
        yield display(before), _copy(before), _idle(message), ""  # give the question back
        raise
    if reply.refused:
        history.append({"role": "assistant", "content": reply.refusal})
        history.append({"role": "assistant",
                        "content": refusal_reason(reply.reason),
                        "metadata": {"title": REASON_TITLE}})
        why = show_text(refusal_reason(reply.reason))
        yield (display(history), _copy(history), _idle(""),
               f"Declined without calling the model. Why: {why}")
        return
    answer = {"role": "assistant", "content": ""}
    history.append(answer)
    if reply.sources:  # under the answer from the start, so a stopped answer keeps them
        history.append(sources_note(reply.sources))
    # While it streams, only the new messages change: the earlier ones are cleaned and rendered
    # once (a 200-message history re-cleaned per token made an answer 20 times slower), and the
    # raw history goes to the browser at most once a second (a stop keeps what was sent last).
    shown_before, new = display(before), len(before)
    throttle, save = Throttle(), Throttle(1.0)
    try:
        for ahead in reply.waiting():  # only on a busy server
            yield shown_before + display(history[new:]), gr.skip(), _busy(), queue_line(ahead)
        for delta in reply:
            answer["content"] += delta
            if throttle.ready():
                state = _copy(history) if save.ready() else gr.skip()
                yield shown_before + display(history[new:]), state, _busy(), ""
    finally:
        cancel.set()  # a stop click closes this generator; end the engine's stream too
    if not answer["content"].strip():
        answer["content"] = "(the model ended its answer without writing anything)"
    yield display(history), _copy(history), _idle(""), stats_line(reply.stats)


def retry(wb: Workbench, history, mode_label, model, **sampling):
    """Drop the last answer and ask the last question again."""
    history = clean_history(history, keep_notes=True)
    while history and history[-1]["role"] == "assistant":
        history.pop()
    if not history:
        raise ValueError("nothing to retry yet: ask something first")
    message = history.pop()["content"]
    yield from respond(wb, message, history, mode_label, model, **sampling)


def edit(wb: Workbench, history, mode_label, model, evt: gr.EditData, **sampling):
    """A sent message edited in place: the conversation is cut there and the edited message
    asked again (what came after it is gone, as in other chat apps)."""
    history = clean_history(history, keep_notes=True)
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not isinstance(index, int) or not 0 <= index < len(history) \
            or history[index]["role"] != "user":
        raise ValueError("only your own messages can be edited")
    text = evt.value if isinstance(evt.value, str) else str(evt.value or "")
    yield from respond(wb, text, history[:index], mode_label, model, **sampling)


def undo(history):
    """Remove the last question and its answer; put the question back in the textbox."""
    history = clean_history(history, keep_notes=True)
    while history and history[-1]["role"] == "assistant":
        history.pop()
    message = history.pop()["content"] if history else ""
    return display(history), history, _idle(message)


def export(wb: Workbench, history, mode_label, model, system):
    """The conversation as a Markdown and a JSON file to download (app.export)."""
    label = wb.models.label(model) if isinstance(model, str) else ""
    in_chat = MODE_LABELS.get(mode_label) == "chat"
    files = conversation_files(history, mode_label if mode_label in MODE_LABELS else "", label,
                               (system or "") if in_chat else "")
    folder = Path(tempfile.mkdtemp(prefix="chat-export-"))
    paths = []
    for ext, text in files.items():
        path = folder / f"{file_stem()}.{ext}"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return gr.update(value=paths, visible=True)


def clear():
    return [], [], _idle(""), ""


def example(wb: Workbench, history, mode_label, model, evt: gr.SelectData, **sampling):
    """An example question clicked: ask it."""
    text = evt.value["text"] if isinstance(evt.value, dict) else str(evt.value)
    yield from respond(wb, text, history, mode_label, model, **sampling)


def change_mode(mode_label):
    """The examples, and the system prompt box (free chat only), follow the mode."""
    return (gr.update(examples=examples_for(mode_label)),
            gr.update(visible=MODE_LABELS.get(mode_label) == "chat"))


def chat_note(wb: Workbench, mode_label, model) -> str:
    """Under the mode: in free chat with the Python-docs model, what it will sound like and a
    better pick (app.catalog.ModelCatalog.free_chat_note); otherwise nothing."""
    if MODE_LABELS.get(mode_label) != "chat" or not isinstance(model, str):
        return ""
    return show_text(wb.models.free_chat_note(model))


def build(demo: gr.Blocks, wb: Workbench, controls: Controls) -> None:
    mode = gr.Radio(list(MODE_LABELS), value=CHAT_MODE_LABELS["python"], label="Mode",
                    info="The Python assistant answers programming questions from the Python "
                         "docs, listing its sources, and politely declines the rest; free chat "
                         "has no filter.", elem_id="chat-mode")
    note = gr.Markdown("", elem_id="chat-note")
    system = gr.Textbox("", label="System prompt (free chat)", lines=1, max_lines=6,
                        max_length=MAX_SYSTEM_CHARS, visible=False, elem_id="chat-system",
                        placeholder="A persona or instructions put before the conversation, "
                                    "e.g. You are a friendly pirate. Answer in one sentence.")
    state = gr.BrowserState([], storage_key=STORAGE_KEY, secret=STATE_SECRET)
    # Copy chat copies the raw conversation from the browser state; each message's own copy
    # button gets its raw text back through COPY_MESSAGE_HEAD. Code blocks have their own.
    # Markdown renders (code blocks as code); HTML in messages is escaped by show_markdown and
    # the sanitizer cleans anything left; no LaTeX ("$" is common in code).
    copy_btn = gr.Button("Copy chat", size="sm", elem_id="chat-copy", render=False)
    export_btn = gr.Button("Export", size="sm", elem_id="chat-export", render=False)
    chatbot = gr.Chatbot(elem_id="chatbot", label="Chat", show_label=False, height=460,
                         render_markdown=True, latex_delimiters=[], editable="user",
                         sanitize_html=True, allow_tags=False,
                         buttons=["copy", copy_btn, export_btn],
                         examples=examples_for(CHAT_MODE_LABELS["python"]),
                         placeholder="Ask a Python question, or switch to free chat.",
                         feedback_options=None)
    textbox = gr.Textbox(placeholder="Type a message and press Enter", show_label=False,
                         submit_btn=True, stop_btn=False, elem_id="chat-input", lines=1,
                         max_lines=8, autofocus=True)
    stats = gr.Markdown("", elem_id="chat-stats")
    exported = gr.File(label="The conversation (Markdown and JSON)", file_count="multiple",
                       visible=False, interactive=False, elem_id="chat-export-files")
    outs = [chatbot, state, textbox, stats]

    def ask(*components) -> dict:  # the sidebar's values and the system prompt, by name
        return {**controls.inputs(*components),
                "inputs_kwargs": {**controls.sampling, "system": system}}

    submit = textbox.submit(guard(partial(respond, wb)), **ask(textbox, state, mode),
                            outputs=outs, api_name="chat", show_progress="minimal")
    again = chatbot.retry(guard(partial(retry, wb)), **ask(state, mode),
                          outputs=outs, api_name="chat_retry", show_progress="minimal")
    picked = chatbot.example_select(guard(partial(example, wb)), **ask(state, mode),
                                    outputs=outs, api_visibility="undocumented",
                                    show_progress="minimal")
    edited = chatbot.edit(guard(partial(edit, wb)), **ask(state, mode),
                          outputs=outs, api_visibility="undocumented", show_progress="minimal")
    for event in (submit, again, picked, edited):
        event.then(_idle, None, textbox, api_visibility="undocumented", queue=False)
    textbox.stop(_idle, None, textbox, cancels=[submit, again, picked, edited],
                 api_visibility="undocumented", queue=False)
    chatbot.undo(guard(undo), [state], [chatbot, state, textbox],
                 api_visibility="undocumented", queue=False)
    chatbot.clear(clear, None, outs, api_visibility="undocumented", queue=False)
    mode.change(change_mode, mode, [chatbot, system], api_visibility="undocumented",
                queue=False)
    gr.on([mode.change, controls.model.change], guard(partial(chat_note, wb)),
          [mode, controls.model], note, api_visibility="undocumented", show_progress="hidden")
    copy_btn.click(None, state, None, js=COPY_JS, api_visibility="undocumented", queue=False)
    export_btn.click(guard(partial(export, wb)), [state, mode, controls.model, system], exported,
                     api_visibility="undocumented", queue=False)
    # A page reload: show the conversation the browser kept.
    demo.load(guard(display), state, chatbot, api_visibility="undocumented", queue=False)
