"""A conversation as files a person downloads: Markdown to read, JSON to load elsewhere (the
OpenAI / Gradio "messages" format). Both apps export through here, so the files are the same.

    files = conversation_files(history, mode="Free chat", model="python-assistant (bundled)")
    files["md"], files["json"]          # text of each file
"""

from __future__ import annotations

import json
import time

from .limits import clean_history

APP_NAME = "GPT Workbench"
SPEAKERS = {"user": "You", "assistant": "Model"}


def conversation_files(history, mode: str = "", model: str = "", system: str = "",
                       now: float | None = None) -> dict[str, str]:
    """{"md": ..., "json": ...} for a chat history (checked with app.limits.clean_history: notes
    such as a refusal's reason or an answer's sources are left out, as the model never saw
    them). ValueError when there is nothing to export yet."""
    turns = clean_history(history)
    if not turns:
        raise ValueError("nothing to export yet: the conversation is empty")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() if now is None else now))
    about = " · ".join(x for x in (mode, model, stamp) if x)
    lines = [f"# Conversation ({APP_NAME})", "", f"*{about}*", ""]
    if system:
        lines += ["**System prompt:**", "", system.strip(), ""]
    for turn in turns:
        lines += [f"**{SPEAKERS[turn['role']]}:**", "", turn["content"].strip(), ""]
    data = {"app": APP_NAME, "mode": mode, "model": model, "exported": stamp,
            "messages": ([{"role": "system", "content": system}] if system else []) + turns}
    return {"md": "\n".join(lines), "json": json.dumps(data, ensure_ascii=False, indent=2) + "\n"}


def file_stem(now: float | None = None) -> str:
    """'chat-20261202-0040': a name for the downloaded files."""
    return time.strftime("chat-%Y%m%d-%H%M", time.gmtime(time.time() if now is None else now))
