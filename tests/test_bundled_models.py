"""The models shipped in checkpoints/: they load, have a complete card, fit the size budget, and
the apps' offline defaults (story for stories, python-assistant for the assistant) exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.assistant import respond
from engine.checkpoint import is_checkpoint, load_checkpoint
from engine.generation import stream
from engine.sampling import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted(p for p in (ROOT / "checkpoints").iterdir() if p.is_dir())
MAX_BYTES = 25 * 1000 * 1000


def test_both_bundled_models_are_there():
    names = {p.name for p in BUNDLED}
    assert {"story", "python-assistant"} <= names
    assert all(is_checkpoint(p) for p in BUNDLED)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_model_loads_fits_and_has_a_card(path):
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= MAX_BYTES, f"{path.name} is {size / 1e6:.1f} MB"
    assert not (path / "optimizer.pt").exists(), "training state does not belong in a bundled model"
    ckpt = load_checkpoint(path)
    card = ckpt.card
    for needed in ("## Data and licence", "## Training", "validation loss", "tokens seen",
                   "scripts/train_bundled.sh", "## Samples"):
        assert needed in card, f"{path.name}/README.md lacks {needed!r}"
    text = stream(ckpt.model, ckpt.tokenizer, "The",
                  SamplingParams(seed=0, max_new_tokens=20)).text()
    assert text.strip()


def test_python_assistant_answers_and_declines():
    ckpt = load_checkpoint(ROOT / "checkpoints" / "python-assistant")
    params = SamplingParams(seed=0, max_new_tokens=30)
    reply = respond([{"role": "user", "content": "How do I sort a list?"}], "python", ckpt, params)
    assert not reply.refused and "".join(reply).strip()
    reply = respond([{"role": "user", "content": "What's a good recipe for pancakes?"}],
                    "python", ckpt, params)
    assert reply.refused and reply.reason
