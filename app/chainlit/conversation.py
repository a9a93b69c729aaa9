"""The chat's own controls in the Chainlit app: regenerate the latest answer, edit a sent message
(Chainlit's edit_message feature re-sends it; the conversation is cut there), and export the
conversation as Markdown and JSON (app.export, the same files as the Gradio app).

The session's conversation is cl.user_session["history"]: [{"role", "content", "id"}], where a
person's turn carries the id of their Chainlit message, so an edit knows where to cut. The
engine never sees the ids (app.limits.clean_history keeps role and content only).

Saved conversations (saved.py): each answer's message carries the exchange the model saw in its
metadata (turn()), because the text shown is not it (a footer, a refusal's reason, escaped
Markdown). A resumed thread rebuilds the history from those (restore()).
"""

from __future__ import annotations

import chainlit as cl

from app.display import MODE_LABELS
from app.export import conversation_files, file_stem

REGENERATE = "regenerate"
EXPORT = "export_chat"
TURN = "turn"  # the key of an answer's metadata that holds its exchange
MIME = {"md": "text/markdown", "json": "application/json"}


def answer_actions(mode: str) -> list[cl.Action]:
    """The buttons under an answer (a story has no conversation to export)."""
    actions = [cl.Action(name=REGENERATE, label="Regenerate", icon="refresh-cw", payload={},
                         tooltip="Write this answer again (a fresh draw unless a seed is set)")]
    if mode != "story":
        actions.append(cl.Action(name=EXPORT, label="Export", icon="download", payload={},
                                 tooltip="The conversation as Markdown and JSON files"))
    return actions


def forget_from(message_id: str | None) -> None:
    """An edited message comes back with its old id: drop it and everything after it from the
    conversation (Chainlit has removed them from the page already)."""
    history = cl.user_session.get("history") or []
    cut = next((i for i, turn in enumerate(history)
                if message_id and turn.get("id") == message_id), None)
    if cut is not None:
        cl.user_session.set("history", history[:cut])
        cl.user_session.set("last_turn", None)


def remember(text: str, message_id: str | None, answer: cl.Message) -> None:
    """The latest exchange, which Regenerate writes again."""
    cl.user_session.set("last_turn", {"text": text, "id": message_id, "answer": answer})


def turn(text: str, message_id: str | None, answer: str) -> dict:
    """An answer message's metadata: the person's text (and message id) and the model's answer,
    as the history holds them."""
    return {TURN: {"user": text, "user_id": message_id, "assistant": answer}}


def restore(thread: dict, mode: str) -> str | None:
    """A resumed thread (Chainlit's ThreadDict, steps in order): the history from its answers'
    turns (none in Story, which keeps no history) and the latest answer as the one Regenerate
    writes again. Returns that answer's message id, or None when the thread has no answer."""
    history, latest = [], None
    for step in thread.get("steps") or []:
        exchange = (step.get("metadata") or {}).get(TURN)
        if step.get("type") != "assistant_message" or not isinstance(exchange, dict):
            continue  # the person's messages, settings and training messages, errors
        history += [{"role": "user", "content": exchange["user"], "id": exchange.get("user_id")},
                    {"role": "assistant", "content": exchange["assistant"]}]
        latest = (exchange, step)
    cl.user_session.set("history", history if mode != "story" else [])
    cl.user_session.set("last_turn", None)
    if latest is None:
        return None
    exchange, step = latest
    remember(exchange["user"], exchange.get("user_id"),
             cl.Message(content=step.get("output") or "", id=step["id"]))
    return step["id"]


async def regenerate(action: cl.Action, reply_to) -> str | None:
    """Remove the latest answer and write it again with reply_to(text, message_id). Returns a
    message for the person when that cannot be done (an older answer's button)."""
    last = cl.user_session.get("last_turn")
    if not last or last["answer"].id != action.forId:
        return "Only the latest answer can be regenerated; to go back further, edit your message."
    history = cl.user_session.get("history") or []
    if len(history) >= 2 and history[-2].get("id") == last["id"] \
            and history[-2]["content"] == last["text"]:
        cl.user_session.set("history", history[:-2])
    cl.user_session.set("last_turn", None)
    await last["answer"].remove()
    await reply_to(last["text"], last["id"])
    return None


async def export(wb, mode: str, settings: dict) -> None:
    """The conversation as two files to download, in a message."""
    spec = settings.get("model") or wb.models.default(mode)
    files = conversation_files(cl.user_session.get("history") or [], MODE_LABELS.get(mode, ""),
                               wb.models.label(spec))
    stem = file_stem()
    elements = [cl.File(name=f"{stem}.{ext}", content=text.encode("utf-8"), mime=MIME[ext],
                        display="inline") for ext, text in files.items()]
    await cl.Message(content="The conversation, as Markdown and as JSON:", elements=elements,
                     author="Export").send()
