"""python -m engine generate / export, run as a person would: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import precision
from engine.checkpoint import save_checkpoint
from engine.fileio import current_umask
from engine.generation import generate
from engine.sampling import SamplingParams
from conftest import make_model

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, stdin: str | None = None, env: dict | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120, env=full_env)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, bpe_tokenizer):
    path = tmp_path_factory.mktemp("cli") / "tiny"
    save_checkpoint(path, make_model(bpe_tokenizer.vocab_size, seed=2), bpe_tokenizer)
    return path


def test_generate_streams_the_same_text_as_the_library(ckpt, bpe_tokenizer):
    args = ["generate", "--model", str(ckpt), "--prompt", "Once upon", "--temperature", "0.9",
            "--top-k", "20", "--top-p", "0.9", "--repetition-penalty", "1.2",
            "--max-new-tokens", "15", "--seed", "7", "--device", "cpu", "--stats"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2,
                            max_new_tokens=15, seed=7)
    # The CLI's default precision is auto (int8 on a CPU); the library gives the same text at
    # the same precision.
    model = precision.apply(make_model(bpe_tokenizer.vocab_size, seed=2), "auto")
    expected = generate(model, bpe_tokenizer, "Once upon", params)
    assert r.stdout == expected + "\n"
    exact = cli(*args, "--precision", "fp32").stdout
    assert exact == generate(make_model(bpe_tokenizer.vocab_size, seed=2), bpe_tokenizer,
                             "Once upon", params) + "\n"
    assert "tokens/s" in r.stderr and "finished:" in r.stderr
    assert cli(*args).stdout == r.stdout  # same seed, same text


def test_prompt_from_stdin_and_long_prompt_notice(ckpt):
    r = cli("generate", "-m", str(ckpt), "-p", "-", "-n", "3", "-t", "0", stdin="the cat " * 60)
    assert r.returncode == 0, r.stderr
    assert "note: The prompt has" in r.stderr and "64-token context window" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--top-p", "1.5"], "error: top_p must be in (0, 1], got 1.5"),
    (["--stop", ""], "error: stop strings must be non-empty strings, got ''"),
    (["--device", "tpu"], "error: device must be one of auto, cuda, mps, cpu (or cuda:N), got 'tpu'"),
])
def test_bad_sampling_input_exits_nonzero_with_the_message(ckpt, args, message):
    r = cli("generate", "--model", str(ckpt), "--prompt", "hi", *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == message


def test_bad_models_and_flags(tmp_path):
    r = cli("generate", "--model", "./no/such/dir", "--prompt", "hi")
    assert r.returncode == 2 and "no/such/dir: no such directory" in r.stderr
    r = cli("generate", "--model", "gpt2", "--prompt", "hi", env={"HF_HOME": str(tmp_path)})
    assert r.returncode == 2 and "cannot fetch the Hugging Face Hub model 'gpt2'" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("generate", "--model", "x", "--prompt", "hi", "--top-k", "many")
    assert r.returncode == 2 and "invalid int value: 'many'" in r.stderr


@pytest.mark.parametrize("spec, message", [
    ("runs/stroy", "error: runs/stroy: no such directory; did you mean runs/story?"),
    ("checkpoints/stroy", "error: checkpoints/stroy: no such directory; did you mean "
                          "checkpoints/story?"),
    ("stroy", "did you mean the bundled model 'story'?"),                   # a hub id, offline
])
def test_a_mistyped_local_folder_is_not_a_hub_failure(tmp_path, spec, message):
    (tmp_path / "runs" / "story").mkdir(parents=True)  # a folder of runs, as in a checkout
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    r = cli("generate", "--model", spec, "--prompt", "hi", cwd=tmp_path,
            env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    if "/" in spec:
        assert "Hugging Face" not in r.stderr and "connect" not in r.stderr


def test_help_explains_every_flag():
    r = cli("generate", "--help")
    assert r.returncode == 0
    for flag in ("--model", "--prompt", "--temperature", "--top-k", "--top-p",
                 "--repetition-penalty", "--repetition-window", "--max-new-tokens", "--seed",
                 "--stop", "--device", "--precision", "--stats"):
        assert flag in r.stdout
    assert "0 = greedy" in r.stdout and "1 = off" in r.stdout and "0 = off" in r.stdout
    r = cli("export", "--help")
    assert r.returncode == 0 and "--out" in r.stdout and "GPT2LMHeadModel" in r.stdout


def test_export_command(ckpt, tmp_path, bpe_tokenizer):
    from transformers import GPT2LMHeadModel

    out = tmp_path / "exported"
    r = cli("export", "--model", str(ckpt), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr
    # every file as readable as the folder's other files (safetensors makes its file 0600)
    umask = current_umask()
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name
    theirs = GPT2LMHeadModel.from_pretrained(out).eval()
    ours = make_model(bpe_tokenizer.vocab_size, seed=2)
    idx = torch.randint(0, bpe_tokenizer.vocab_size, (1, 20))
    with torch.inference_mode():
        assert (theirs(idx).logits - ours(idx)[0]).abs().max() <= 1e-4
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "a.txt").write_text("x")
    r = cli("export", "--model", str(ckpt), "--out", str(tmp_path / "taken"))
    assert r.returncode == 2 and "exists and is not empty" in r.stderr
