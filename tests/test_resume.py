"""Kill a training run (SIGKILL inside a checkpoint's save, while the best model is being
replaced, and mid-step, plus one clean SIGTERM stop), resume it each time, and check that the
finished run is bit-for-bit the run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.checkpoint import list_checkpoints
from engine.fileio import CRASH_AT
from engine.metrics import read_metrics
from engine.train import train

from test_train import corpus, tiny

ROOT = Path(__file__).resolve().parent.parent
STEPS = 24


def _flags(cfg) -> list[str]:
    return ["--data", cfg.data, "--out", cfg.out, "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
            "--block-size", "32", "--tokenizer", "bpe", "--vocab-size", "300", "--batch-size", "4",
            "--max-steps", str(STEPS), "--warmup-steps", "2", "--lr", "3e-3", "--dropout", "0.1",
            "--eval-every", "8", "--eval-batches", "2", "--save-every", "3", "--keep-last", "2",
            "--log-every", "1", "--sample-tokens", "4", "--seed", "0", "--cache-dir", cfg.cache_dir,
            "--no-progress", "--device", "cpu"]


def _spawn(args: list[str], crash_at: str = "") -> subprocess.Popen:
    """The CLI trainer; crash_at ("<dir>:<point>", engine.fileio.crash_point) makes it SIGKILL
    itself at that point of a save."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), CRASH_AT: crash_at}
    return subprocess.Popen([sys.executable, "-m", "engine", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _last_step(run: Path) -> int:
    steps = [e["step"] for e in read_metrics(run / "metrics.jsonl") if e.get("type") == "train"]
    return steps[-1] if steps else 0


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> bool:
    """Wait until the run has logged `step` (True) or the process has ended (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if _last_step(run) >= step:
            return True
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout}s:\n{proc.communicate()[0].decode()}")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run)[-1][1] / "model.safetensors"))


def _assert_killed(proc: subprocess.Popen, run: Path) -> None:
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed:\n{out}"
    # every checkpoint that a reader can see is complete, whatever the moment of the kill
    for _step, path in list_checkpoints(run):
        assert (path / "model.safetensors").is_file() and (path / "optimizer.pt").is_file()


@pytest.mark.slow
def test_killed_and_resumed_run_equals_the_uninterrupted_run(tmp_path):
    corpus(tmp_path / "corpus.txt")

    # The reference: the same run, never interrupted.
    ref_cfg = tiny(tmp_path, out=str(tmp_path / "ref"), max_steps=STEPS, dropout=0.1, eval_every=8,
                   save_every=3, sample_tokens=4)
    train(ref_cfg, progress=False)
    evals = [(e["step"], e["val_loss"]) for e in read_metrics(tmp_path / "ref" / "metrics.jsonl")
             if e["type"] == "eval"]
    ref_best = [s for i, (s, v) in enumerate(evals) if all(v < w for _, w in evals[:i])]

    cfg = tiny(tmp_path, out=str(tmp_path / "run"))
    run = Path(cfg.out)
    ckpts = run / "checkpoints"
    args = _flags(cfg)
    # 1) a clean stop: SIGTERM makes the trainer save a checkpoint at the step it is on
    proc = _spawn(args)
    assert _wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    end = read_metrics(run / "metrics.jsonl")[-1]
    assert end["type"] == "end" and end["state"] == "stopped"
    assert list_checkpoints(run)[-1][0] == end["step"]  # saved where it stopped
    assert "stopped at step" in out

    # 2) SIGKILL inside the next step checkpoint's save, its files written but not yet in place:
    # readers and --resume never see it.
    step = (end["step"] // 3 + 1) * 3
    assert step < 16
    proc = _spawn(args + ["--resume"], crash_at=f"step-{step}:written")
    _assert_killed(proc, run)
    assert list(ckpts.glob(f".step-{step}.tmp-*")) and not (ckpts / f"step-{step}").exists()
    assert list_checkpoints(run)[-1][0] < step

    # 3) SIGKILL while the best model of step 16 replaces the one of step 8: the old directory
    # is moved aside and the new one not yet in its place.
    assert 8 in ref_best and 16 in ref_best, ref_best  # the seed makes both the best so far
    proc = _spawn(args + ["--resume"], crash_at="best:swapped")
    _assert_killed(proc, run)
    assert not (ckpts / "best").exists() and list(ckpts.glob(".best.old-*"))

    # 4) SIGKILL mid-run, at whatever moment step 20 is logged (mid-step, mid-save, mid-sample)
    proc = _spawn(args + ["--resume"])
    assert _wait_for_step(proc, run, 20), "the run finished before it could be killed"
    proc.kill()
    _assert_killed(proc, run)

    # 5) resume to the end
    proc = _spawn(args + ["--resume"])
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    assert f"finished at step {STEPS}" in out

    assert (run / "tokenizer" / "tokenizer.json").read_bytes() == \
        (tmp_path / "ref" / "tokenizer" / "tokenizer.json").read_bytes()
    ref, got = _weights(tmp_path / "ref"), _weights(run)
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), f"{name} differs after resume"
    # the metrics read as one run: each step once, and the same losses as the reference
    events = read_metrics(run / "metrics.jsonl")
    steps = [e["step"] for e in events if e["type"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    ref_loss = {e["step"]: e["loss"] for e in read_metrics(tmp_path / "ref" / "metrics.jsonl")
                if e["type"] == "train"}
    for e in events:
        if e["type"] == "train":
            assert e["loss"] == ref_loss[e["step"]], f"step {e['step']}"


def test_resume_skips_leftovers_of_an_interrupted_save(tmp_path):
    # A crash mid-save leaves a temporary directory; a half-deleted old checkpoint is renamed
    # first. Neither may be taken for a checkpoint.
    cfg = tiny(tmp_path, max_steps=4, save_every=2)
    train(cfg, progress=False)
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / ".step-6.tmp-abc").mkdir()
    (ckpts / ".step-6.tmp-abc" / "config.json").write_text("{}")
    (ckpts / "step-9").mkdir()  # no config.json: incomplete
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2, 4]
    summary = train(tiny(tmp_path, max_steps=6, save_every=2), resume=True, progress=False)
    assert summary["step"] == 6
    start = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["type"] == "start"][-1]
    assert start["resumed_from"].endswith("step-4")
