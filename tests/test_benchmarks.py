"""The benchmarks the README and docs point to, run on the smallest settings: each ends with its
JSON line of figures. decode has its own test (tests/test_benchmark_decode.py). Not run here:
benchmarks.retrieval (it scores the whole question set, minutes) and benchmarks.lora (issue 15's,
about a minute on this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import train as train_benchmark

ROOT = Path(__file__).resolve().parent.parent


def test_train_benchmark_compares_both_sides(monkeypatch, capsys):
    # In-process, with the matmul peak (the MFU's denominator) measured on a small matrix: the
    # default 2048x2048 costs most of a minute on a single busy thread.
    peak = train_benchmark.matmul_peak
    monkeypatch.setattr(train_benchmark, "matmul_peak", lambda dt: peak(dt, n=256, repeats=1))
    assert train_benchmark.main(["--models", "story", "--runs", "1", "--steps", "1",
                                 "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (r,) = out["results"]
    assert r["model"] == "story" and r["ours_tok_s"] > 0 and r["transformers_tok_s"] > 0
    assert abs(r["ratio"] - r["ours_tok_s"] / r["transformers_tok_s"]) < 0.01
    assert 0 < r["ours_mfu"] and out["runs"] == 1 and out["steps_per_run"] == 1


def test_serving_benchmark_runs_as_written():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.serving", "--models", "small",
                           "--runs", "1", "--concurrent", "2", "--new-tokens", "4",
                           "--threads", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (r,) = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    assert r["model"] == "small" and r["concurrent"] == 2
    assert r["one_tok_s"] > 0 and r["batched_tok_s"] > 0 and r["unbatched_tok_s"] > 0
