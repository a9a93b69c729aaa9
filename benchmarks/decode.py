"""Decode speed: our streaming generation against transformers' generate(), same weights.

    python -m benchmarks.decode [--runs 5] [--new-tokens 128] [--models small,gpt2-124m]

Both sides get the same random weights (ours converted with engine.hub, and the logits checked
equal before timing), float32, batch 1, the same prompt, the same sampling settings
(temperature 0.8, top-k 50, top-p 0.95, repetition penalty 1.1) and the same torch thread count,
in one process. Runs alternate (ours, theirs, ours, ...) after one warm-up each, so drift in the
machine's load hits both alike; the figure is the median over runs of new tokens per second,
wall time of the whole call (prefill included; ours also turns tokens into streamed text). The
same figures per CPU second of the process are reported too (`*_cpu_tok_s`): on a busy shared
machine they leave out the time spent waiting for a core.

It also measures memory read bandwidth (summing a 512 MiB tensor, with the same threads,
between the runs, median) and, for each model, the fraction of the bandwidth bound reached:
decoding one token reads every weight once (the position embedding only one row), so tokens/s
can be at most bandwidth / bytes. On a shared machine the load average is printed too: other
processes slow both sides alike (runs alternate), but the absolute figures drop.

Progress goes to stderr; stdout's last line is one JSON object:
{"results": [{"model": "small", "ours_tok_s": .., "transformers_tok_s": .., "ratio": .., ...}]}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from benchmarks.common import add_common_arguments, apply_common_arguments, log
from engine.config import shape
from engine.generation import stream
from engine.hub import to_transformers
from engine.model import GPT
from engine.sampling import SamplingParams
from engine.tokenizer import GPT2Tokenizer

SETTINGS = dict(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1)
MODELS = {"small": "small", "gpt2-124m": "gpt2"}
PROMPT = "The old lighthouse keeper climbed the stairs one last time, and at the top he found"


def build(name: str, seed: int = 0):
    """Our random model and transformers' GPT2LMHeadModel with the very same weights."""
    torch.manual_seed(seed)
    ours = GPT(shape(MODELS[name])).eval()
    theirs = to_transformers(ours, eot_id=50256)
    x = torch.randint(0, ours.config.vocab_size, (1, 16))
    with torch.inference_mode():
        diff = (ours(x)[0] - theirs(x).logits).abs().max().item()
    assert diff <= 1e-4, f"logits differ by {diff}"
    return ours, theirs


def time_ours(model, tok, ids, new_tokens, seed) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process)."""
    params = SamplingParams(**SETTINGS, max_new_tokens=new_tokens, seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    s = stream(model, tok, ids, params)
    for _ in s:
        pass
    n = s.stats.new_tokens
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def time_theirs(model, tok, ids, new_tokens, seed) -> tuple[float, float]:
    x = torch.tensor([ids])
    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, **SETTINGS,
                             max_new_tokens=new_tokens, pad_token_id=tok.eot_id,
                             eos_token_id=tok.eot_id)
    n = out.shape[1] - x.shape[1]
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


class Bandwidth:
    """Read bandwidth: bytes of a large float32 tensor over the time to sum it."""

    def __init__(self, mib: int = 512) -> None:
        self.x = torch.ones(mib * 2**20 // 4)
        self.x.sum()  # touch every page first
        self.samples: list[float] = []
        self.cpu_samples: list[float] = []  # per CPU second, as *_cpu_tok_s

    def sample(self, repeats: int = 3) -> float:
        gb = self.x.numel() * 4 / 1e9
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            self.x.sum()
            self.samples.append(gb / (time.perf_counter() - t0))
            self.cpu_samples.append(gb / max(time.process_time() - c0, 1e-9))
        return statistics.median(self.samples[-repeats:])

    def median(self) -> float:
        return statistics.median(self.samples)


def weight_bytes_per_token(model: GPT) -> int:
    """Bytes of weights one decode step reads: all of them, but one row of wpe."""
    wpe = model.transformer.wpe.weight
    size = next(model.parameters()).element_size()
    return (model.num_params() - wpe.numel() + wpe.size(1)) * size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap, MODELS, default="small,gpt2-124m")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per side; the median is reported (default 5; use at least 5 for figures you publish)")
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args(argv)
    names = apply_common_arguments(ap, args, MODELS)
    if args.runs < 1 or args.new_tokens < 1:
        ap.error("--runs and --new-tokens must be positive")
    import transformers

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, {args.runs} runs x {args.new_tokens} new tokens, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    tok = GPT2Tokenizer()
    ids = tok.encode(PROMPT)
    results = []
    for name in names:
        ours, theirs = build(name)
        time_ours(ours, tok, ids, 8, seed=0)  # warm-up: allocator, kernels, lazy imports
        time_theirs(theirs, tok, ids, 8, seed=0)
        o, t, bw = [], [], Bandwidth()
        for run in range(args.runs):
            o.append(time_ours(ours, tok, ids, args.new_tokens, seed=run))
            t.append(time_theirs(theirs, tok, ids, args.new_tokens, seed=run))
            log(f"{name} run {run + 1}: ours {o[-1][0]:.1f} tok/s, transformers {t[-1][0]:.1f} "
                f"tok/s (per CPU second: {o[-1][1]:.1f} vs {t[-1][1]:.1f}), "
                f"bandwidth {bw.sample():.1f} GB/s, load {os.getloadavg()[0]:.1f}")
        ours_tps, theirs_tps = (statistics.median(r[0] for r in x) for x in (o, t))
        ours_cpu, theirs_cpu = (statistics.median(r[1] for r in x) for x in (o, t))
        del bw.x
        nbytes = weight_bytes_per_token(ours)
        results.append({
            "model": name, "ours_tok_s": round(ours_tps, 2),
            "transformers_tok_s": round(theirs_tps, 2), "ratio": round(ours_tps / theirs_tps, 3),
            # Tokens per CPU second: on a shared machine, time spent waiting for a core is not
            # counted (a fair proxy with --threads 1; with more threads it sums their time).
            "ours_cpu_tok_s": round(ours_cpu, 2), "transformers_cpu_tok_s": round(theirs_cpu, 2),
            "cpu_ratio": round(ours_cpu / theirs_cpu, 3),
            "params": ours.num_params(), "weight_bytes_per_token": nbytes,
            "bandwidth_gb_s": round(bw.median(), 2),
            "bandwidth_fraction": round(ours_tps * nbytes / (bw.median() * 1e9), 3),
            "bandwidth_cpu_gb_s": round(statistics.median(bw.cpu_samples), 2),
            "bandwidth_fraction_cpu": round(
                ours_cpu * nbytes / (statistics.median(bw.cpu_samples) * 1e9), 3),
        })
        log(json.dumps(results[-1]))
        del ours, theirs
    print(json.dumps({"results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
