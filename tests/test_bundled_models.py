"""The models shipped in checkpoints/: they load, have a complete card, fit the size budget, and
the apps' offline defaults (story for stories, python-assistant for the assistant) exist. Each
scores the validation loss its card reports on its held-out text, and writes a known greedy
continuation: a loader or tokenizer regression that yields fluent garbage fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.assistant import respond
from engine.checkpoint import is_checkpoint, load_checkpoint
from engine.evaluate import evaluate_model
from engine.generation import stream
from engine.sampling import SamplingParams
from engine.templates import format_prompt
from engine.train_config import TrainConfig

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


# Each bundled model's held-out text, as its card's last training stage scored it: (data, split).
# The python-assistant's (runs/grounded/val.jsonl of its run, made by
# scripts/build_grounded_sft.py) is not rebuilt in a test (minutes); tests/data keeps a copy.
HELD_OUT = {
    "story": ("data/stories/stories.txt", "val"),  # the 10 % that training held out
    "python-assistant": ("tests/data/python_assistant_val.jsonl", "all"),  # its --val-data
}


def card_validation(card: str) -> tuple[float, int, int]:
    """(validation loss, batch size, evaluation batches) of the card's last training stage."""
    stage = card.split("## Training", 1)[1].split("\n## ", 1)[0].rsplit("\n- ", 1)[-1]
    loss = float(re.search(r"best validation loss ([0-9.]+)", stage).group(1))
    batch = int(re.search(r"batch (\d+) x 1 sequences", stage).group(1))
    given = re.search(r"--eval-batches (\d+)", stage)
    return loss, batch, int(given.group(1)) if given else TrainConfig.eval_batches


def test_every_bundled_model_has_its_held_out_text():
    assert set(HELD_OUT) == {p.name for p in BUNDLED}


# The card's figure is the mean over the same sequences (the first eval-batches x batch of the
# held-out split, as training scores them): measured equal to its 4 decimals; 2e-4 leaves room
# for summation order across torch builds, and none for a different model or tokenizer.
# Slow: 320 x 256 and 160 x 768 tokens through the models, about 15 and 20 s of CPU here.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_bundled_validation_loss_matches_its_card(name):
    card = (ROOT / "checkpoints" / name / "README.md").read_text(encoding="utf-8")
    loss, batch, batches = card_validation(card)
    data, split = HELD_OUT[name]
    got = evaluate_model(str(ROOT / "checkpoints" / name), str(ROOT / data), split=split,
                         batch_size=batch, max_batches=batches, device="cpu")
    assert got["sequences"] == batch * batches
    assert got["loss"] == pytest.approx(loss, abs=2e-4), (name, got)


# Greedy, float32, on the CPU: the exact text of the bundled weights. A retrained model changes
# it; then write down its new continuation here (and look at it first).
GREEDY = {
    "story": ("The king", ", and the king,\nAnd, and the King of the King,\nAnd, and the King of the King"),
    "python-assistant": (format_prompt("How do I reverse a list?"),
                         "Use `del` to reverse=False, which, which=False, which=False, which=False, which"),
}


@pytest.mark.parametrize("name", sorted(GREEDY))
def test_bundled_greedy_continuation_is_known(name):
    ckpt = load_checkpoint(ROOT / "checkpoints" / name)
    prompt, expected = GREEDY[name]
    params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_new_tokens=24)
    assert stream(ckpt.model, ckpt.tokenizer, prompt, params).text() == expected
