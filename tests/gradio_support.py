"""Helpers for the Gradio tests: tiny checkpoints, a Workbench over them, a server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import torch

from engine.checkpoint import ASSISTANT_FILE, save_checkpoint
from engine.config import GPTConfig
from engine.model import GPT
from engine.tokenizer import GPT2Tokenizer

TINY = dict(n_layer=2, n_head=2, n_embd=32)
STORY_TEXT = ("Once upon a time there was a little cat who liked to sit in the sun. "
              "The dog ran to the park and played with a red ball all day long.\n") * 150


# A python model slow enough that a browser test can watch a long answer stream and stop it
# midway however quiet the machine is: 1024 tokens take many seconds. (4 layers x 256 dims was
# enough until decode steps got faster: at int8 with one thread per step it wrote 1024 tokens
# in a few seconds, and the Chainlit stop test found the answer already finished.)
SLOW_PYTHON = dict(n_layer=12, n_head=8, n_embd=512)


def make_checkpoints(root: Path, python_shape: dict | None = None, grounded: bool = False) -> Path:
    """checkpoints/{python,story}: random 2-layer, 32-dim GPT-2-vocabulary models.

    python_shape overrides the python model's shape: a browser test that must see an answer
    stream and then stop it needs a model slow enough that 1024 tokens take seconds even on an
    idle machine (the tiny one writes them in about two). grounded: the python model answers
    from the bundled docs index, as the bundled python-assistant does (its assistant.json, and
    a 1024-token window so that three passages fit in its prompt)."""
    tok = GPT2Tokenizer()
    for seed, name, block in ((1, "python", 1024 if grounded else 128), (2, "story", 64)):
        torch.manual_seed(seed)
        shape = {**TINY, **(python_shape or {})} if name == "python" else TINY
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, **shape))
        save_checkpoint(root / "checkpoints" / name, model, tok, card=f"tiny {name} test model")
    if grounded:
        (root / "checkpoints" / "python" / ASSISTANT_FILE).write_text(
            '{"grounding": "python-docs"}\n', encoding="utf-8")
    return root / "checkpoints"


def make_data(root: Path) -> Path:
    """data/stories/tiny.txt: a small corpus that trains in seconds."""
    d = root / "data" / "stories"
    d.mkdir(parents=True, exist_ok=True)
    (d / "tiny.txt").write_text(STORY_TEXT, encoding="utf-8")
    return root / "data"


def make_workbench(root: Path, python_shape: dict | None = None, grounded: bool = False,
                   **kwargs):
    from app.workbench import Workbench

    return Workbench(runs_dir=root / "runs",
                     bundled_dir=make_checkpoints(root, python_shape, grounded),
                     data_dir=make_data(root), **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen) -> None:
    """End a server started in its own process group: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def start_server(wb):
    """Build the app over wb and serve it on a free loopback port; returns (demo, url)."""
    from app.gradio import build_demo, launch

    demo = build_demo(wb)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"
