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
from engine.distributed import batch_plan
from engine.metrics import read_metrics
from engine.train import train

from test_train import corpus, tiny

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("batch, accum", [(4, 2), (8, 1)])
def test_two_process_ddp_matches_one_process_with_the_same_effective_batch(tmp_path, batch, accum):
    corpus(tmp_path / "corpus.txt")
    steps = 4
    # One process: `accum` micro-batches of `batch` per step (8 sequences).
    single = tiny(tmp_path, out=str(tmp_path / "single"), max_steps=steps, batch_size=batch,
                  grad_accum=accum, eval_every=4, save_every=4)
    train(single, progress=False)

    # Two processes share each step's 8 sequences: (4, 2) one micro-batch of 4 each; (8, 1),
    # as every preset has grad_accum 1, each process takes half of the one micro-batch.
    cfg = tiny(tmp_path, out=str(tmp_path / "ddp"), max_steps=steps, batch_size=batch,
               grad_accum=accum, eval_every=4, save_every=4)
    args = ["--data", cfg.data, "--out", cfg.out, "--n-layer", "2", "--n-head", "2",
            "--n-embd", "32", "--block-size", "32", "--tokenizer", "bpe", "--vocab-size", "300",
            "--batch-size", str(batch), "--grad-accum", str(accum), "--max-steps", str(steps),
            "--warmup-steps", "2", "--lr", "3e-3", "--eval-every", "4", "--eval-batches", "2",
            "--save-every", "4", "--log-every", "1", "--sample-tokens", "8", "--seed", "0",
            "--cache-dir", cfg.cache_dir, "--no-progress", "--device", "cpu"]  # gloo, 2 CPUs
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "engine", "train", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "note: 2 processes share each step's 8 sequences" in proc.stderr

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


@pytest.mark.parametrize("batch, accum, world, micro, per_process, sequences, same", [
    (16, 1, 1, 16, 1, 16, True),
    (16, 1, 2, 8, 1, 16, True),     # cpu-demo on 2 processes: half a micro-batch each
    (4, 2, 2, 4, 1, 8, True),       # whole micro-batches shared
    (16, 8, 2, 16, 4, 128, True),
    (16, 3, 2, 12, 2, 48, True),    # 24 each, in micro-batches of at most 16
    (52, 8, 8, 52, 1, 416, True),
    (52, 1, 8, 52, 1, 416, False),  # tinystories-gpu on 8 GPUs: 52 cannot be split 8 ways
    (16, 1, 3, 16, 1, 48, False),
])
def test_batch_plan_shares_a_step_among_processes(batch, accum, world, micro, per_process,
                                                  sequences, same):
    plan = batch_plan(batch, accum, world)
    assert (plan.micro, plan.accum, plan.sequences) == (micro, per_process, sequences)
    assert plan.micro <= batch
    if world == 1:
        assert plan.note == ""
    elif same:
        assert f"share each step's {batch * accum} sequences" in plan.note
        assert "the same batch as one process" in plan.note
    else:  # what changed, and how to keep the batch of one process
        assert f"a step is {sequences} sequences, {world}x the batch of one process" in plan.note
        assert f"multiple of {world}" in plan.note


@pytest.mark.slow
def test_a_mistake_under_torchrun_is_one_error_line(tmp_path):
    # Every process fails the same way; rank 0 alone prints it, and torchrun's own failure
    # summary shows the same line for each rank (from its error file) instead of "<N/A>".
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    missing = tmp_path / "missing.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "engine", "train", "--preset", "cpu-demo", "--data", str(missing),
         "--out", str(tmp_path / "run"), "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    line = f"error: {missing}: no such file or directory"
    assert [ln for ln in out.splitlines() if ln.startswith("error:")] == [line]
    assert out.count(f"traceback : {line}") == 2  # the launcher's summary, one per rank
    assert "Traceback" not in out.split("Traceback (most recent call last)")[0]  # none of ours
    assert not (tmp_path / "run").exists()
