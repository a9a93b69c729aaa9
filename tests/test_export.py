"""app.export: a conversation as Markdown and JSON files, the same from both apps."""

from __future__ import annotations

import json

import pytest

from app.export import conversation_files, file_stem

HISTORY = [{"role": "user", "content": "What is <b>?"},
           {"role": "assistant", "content": "A tag.\n\n```html\n<b>x</b>\n```"},
           {"role": "assistant", "content": "Sources", "metadata": {"title": "Sources (1)"}},
           {"role": "user", "content": "Thanks"}]


def test_markdown_and_json_hold_the_conversation_as_written():
    files = conversation_files(HISTORY, mode="Free chat", model="story (bundled)",
                               system="Be brief.", now=0)
    md = files["md"]
    assert md.startswith("# Conversation (GPT Workbench)\n\n*Free chat · story (bundled) · "
                         "1970-01-01 00:00 UTC*")
    assert "**You:**\n\nWhat is <b>?" in md and "```html\n<b>x</b>\n```" in md
    assert "**System prompt:**\n\nBe brief." in md and "Sources" not in md  # notes left out
    data = json.loads(files["json"])
    assert data["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is <b>?"},
                                {"role": "assistant", "content": HISTORY[1]["content"]},
                                {"role": "user", "content": "Thanks"}]
    assert data["model"] == "story (bundled)" and file_stem(0) == "chat-19700101-0000"


def test_an_empty_or_broken_history_is_a_message():
    with pytest.raises(ValueError, match="nothing to export yet"):
        conversation_files([])
    with pytest.raises(ValueError, match="must be a dict with 'role'"):
        conversation_files([{"content": "no role"}])
