"""DistributedDataParallel: the same command under torchrun, 2 CPU processes with gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.checkpoint import list_checkpoints
from engine.metrics import read_metrics
from engine.train import train

from test_train import corpus, tiny

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_effective_batch(tmp_path):
    corpus(tmp_path / "corpus.txt")
    steps = 4
    # One process: 2 micro-batches of 4 per step.
    single = tiny(tmp_path, out=str(tmp_path / "single"), max_steps=steps, grad_accum=2,
                  eval_every=4, save_every=4)
    train(single, progress=False)

    # Two processes: grad_accum 2 is divided by the world size, so each process does one
    # micro-batch of 4 per step and the effective batch is the same 8 sequences.
    cfg = tiny(tmp_path, out=str(tmp_path / "ddp"), max_steps=steps, grad_accum=2, eval_every=4,
               save_every=4)
    args = ["--data", cfg.data, "--out", cfg.out, "--n-layer", "2", "--n-head", "2",
            "--n-embd", "32", "--block-size", "32", "--tokenizer", "bpe", "--vocab-size", "300",
            "--batch-size", "4", "--grad-accum", "2", "--max-steps", str(steps),
            "--warmup-steps", "2", "--lr", "3e-3", "--eval-every", "4", "--eval-batches", "2",
            "--save-every", "4", "--log-every", "1", "--sample-tokens", "8", "--seed", "0",
            "--cache-dir", cfg.cache_dir, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "engine", "train", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    events = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    # rank 0 alone writes: one start, one line per step, one end
    assert [e["type"] for e in events].count("start") == 1
    assert [e["step"] for e in events if e["type"] == "train"] == list(range(1, steps + 1))
    assert events[0]["world_size"] == 2
    assert events[-1]["type"] == "end" and events[-1]["tokens"] == steps * 8 * 32
    assert [s for s, _ in list_checkpoints(tmp_path / "ddp")] == [steps]

    ref = {e["step"]: e["loss"] for e in read_metrics(tmp_path / "single" / "metrics.jsonl")
           if e["type"] == "train"}
    for e in events:
        if e["type"] == "train":
            assert e["loss"] == pytest.approx(ref[e["step"]], abs=1e-4)
    a = load_file(str(list_checkpoints(tmp_path / "single")[-1][1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "ddp")[-1][1] / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=2e-4, rtol=1e-3, msg=name)


def test_grad_accum_must_divide_among_processes(tmp_path, monkeypatch):
    # Checked before any work: 3 micro-batches cannot be shared by 2 processes.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: None)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: None)
    corpus(tmp_path / "corpus.txt")
    with pytest.raises(ValueError, match=r"grad-accum \(3\) must be a multiple of the number of processes \(2\)"):
        train(tiny(tmp_path, grad_accum=3), progress=False)
    assert not (tmp_path / "cache").exists()
