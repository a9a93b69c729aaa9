"""Training speed: our GPT against a loop over transformers' GPT2LMHeadModel, same everything.

    python -m benchmarks.train [--models small,story] [--runs 5] [--steps 3] [--dtype float32]

Both sides get the same config, the same initial weights (ours converted with engine.hub and the
losses checked equal before timing), the same batch of token ids, the same optimizer (AdamW with
weight decay on matrices only, built the same way as engine.train.make_optimizer) and the same
step: forward with the loss, backward, gradient clipping to 1.0, optimizer step, zero_grad. One
process, the same torch thread count; runs alternate (ours, theirs, ours, ...) after a warm-up
step each, so drift in the machine's load hits both alike. The figure is the median over runs
of training tokens per second, and the ratio is the median of the per-run ratios (each pair of
runs is adjacent in time, so load that changes between pairs cancels out); `ratio_cpu_time`
is the same on process CPU time, less sensitive to other programs sharing the machine.

"Ours" is what engine.train trains on a CPU: the GPT's layers with the chunked linear +
cross-entropy loss (engine.chunked_loss.ChunkedLossGPT), which never materialises the full logits.

Model FLOPs utilisation: the peak is measured in the same run (the best of repeated 2048^3
float32 matrix multiplies, or bfloat16 with --dtype bfloat16); a training token costs
6 * (block parameters + the tied head) + 12 * layers * context * width FLOPs (the PaLM count).

Progress goes to stderr; stdout's last line is one JSON object:
{"results": [{"model": "small", "ours_tok_s": .., "transformers_tok_s": .., "ratio": .., ...}]}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import torch

from benchmarks.common import add_common_arguments, apply_common_arguments, log
from engine.config import GPTConfig, shape
from engine.hub import to_transformers
from engine.model import GPT
from engine.chunked_loss import training_module
from engine.train import make_optimizer
from engine.train_config import TrainConfig

# name -> (model shape, batch size, context used for training)
MODELS = {
    "small": (shape("small"), 8, 256),  # 4 layers, 4 heads, 256 dims, GPT-2 vocabulary
    "story": (GPTConfig(vocab_size=4096, block_size=256, n_layer=4, n_head=4, n_embd=256), 16, 256),
}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n matrix multiply (the machine's practical peak)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def flops_per_token(cfg: GPTConfig, model: GPT, T: int) -> float:
    blocks = sum(p.numel() for n, p in model.named_parameters() if n.startswith("transformer.h."))
    head = cfg.vocab_size * cfg.n_embd
    return 6 * (blocks + head) + 12 * cfg.n_layer * T * cfg.n_embd


def step_fn(model, optimizer, x, y, hf: bool, autocast):
    def step() -> float:
        with autocast():
            if hf:
                # transformers shifts the labels itself: feeding the T+1 window as both input
                # and labels trains on the same T predictions as ours does with (x, y).
                loss = model(input_ids=x, labels=y).loss
            else:
                _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


def bench_model(name: str, runs: int, steps: int, dtype: str) -> dict:
    cfg, batch, T = MODELS[name]
    torch.manual_seed(0)
    ours = GPT(cfg).train()
    theirs = to_transformers(ours, eot_id=ours.config.vocab_size - 1).train()
    tcfg = TrainConfig(data="-", out="-", lr=1e-4, weight_decay=0.1)
    opt_ours = make_optimizer(ours, tcfg, torch.device("cpu"))
    opt_theirs = make_optimizer(theirs, tcfg, torch.device("cpu"))
    window = torch.randint(0, cfg.vocab_size, (batch, T + 1), generator=torch.Generator().manual_seed(1))
    amp = {"float32": None, "bfloat16": torch.bfloat16}[dtype]
    autocast = (lambda: torch.autocast("cpu", dtype=amp)) if amp else contextlib.nullcontext
    # ours: the module our trainer trains on a CPU (the GPT's layers + the chunked loss)
    step_ours = step_fn(training_module(ours, torch.device("cpu")), opt_ours, window[:, :-1].contiguous(), window[:, 1:].contiguous(), False, autocast)
    # T+1 tokens in, T predictions scored (the last position's logits are computed and unused)
    step_theirs = step_fn(theirs, opt_theirs, window[:, :T].contiguous(), window[:, :T].contiguous(), True, autocast)

    # Same function before any timing: the same loss on the same weights. (HF scores T-1
    # predictions from a T-token input; compare on that.)
    with torch.no_grad():
        x = window[:, :T]
        lo = torch.nn.functional.cross_entropy(ours(x)[0][:, :-1].reshape(-1, cfg.vocab_size),
                                               x[:, 1:].reshape(-1))
        lt = theirs(input_ids=x, labels=x).loss
    assert torch.allclose(lo, lt, atol=1e-4), (float(lo), float(lt))

    step_ours(), step_theirs()  # warm-up
    tok = batch * T * steps
    wall = {"ours": [], "transformers": []}
    cpu = {"ours": [], "transformers": []}
    for r in range(runs):
        for side, fn in (("ours", step_ours), ("transformers", step_theirs)):
            t, c = time.perf_counter(), time.process_time()
            for _ in range(steps):
                fn()
            wall[side].append(tok / (time.perf_counter() - t))
            cpu[side].append(tok / (time.process_time() - c))
        log(f"{name} run {r + 1}/{runs}: ours {wall['ours'][-1]:,.0f} tok/s, transformers "
            f"{wall['transformers'][-1]:,.0f} tok/s (ratio {wall['ours'][-1] / wall['transformers'][-1]:.2f})")
    med = statistics.median
    # The ratio is the median of the per-run ratios: each pair of runs is adjacent in time, so
    # a change in the machine's load between pairs cancels out.
    ratio = med(o / t for o, t in zip(wall["ours"], wall["transformers"]))
    cpu_ratio = med(o / t for o, t in zip(cpu["ours"], cpu["transformers"]))
    return {"model": name, "ours_tok_s": round(med(wall["ours"]), 1),
            "transformers_tok_s": round(med(wall["transformers"]), 1), "ratio": round(ratio, 3),
            "ratio_cpu_time": round(cpu_ratio, 3), "batch": batch, "context": T,
            "params": ours.num_params(), "flops_per_token": flops_per_token(cfg, ours, T)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.splitlines()[0])
    add_common_arguments(p, MODELS, default="small,story")
    p.add_argument("--runs", type=int, default=5, help="timed runs per side (alternating)")
    p.add_argument("--steps", type=int, default=3, help="training steps per run")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="float32, or bfloat16 autocast for both sides")
    args = p.parse_args(argv)
    names = apply_common_arguments(p, args, MODELS)
    if args.runs < 1 or args.steps < 1:
        p.error("--runs and --steps must be at least 1")
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    peak = matmul_peak(dt)
    log(f"matmul peak ({args.dtype}, {torch.get_num_threads()} threads): {peak / 1e9:,.1f} GFLOP/s")
    results = []
    for name in names:
        r = bench_model(name, args.runs, args.steps, args.dtype)
        r["ours_mfu"] = round(r["ours_tok_s"] * r["flops_per_token"] / peak, 4)
        r["transformers_mfu"] = round(r["transformers_tok_s"] * r["flops_per_token"] / peak, 4)
        log(f"{name}: ours {r['ours_tok_s']:,.0f} tok/s (MFU {r['ours_mfu']:.1%}), transformers "
            f"{r['transformers_tok_s']:,.0f} tok/s (MFU {r['transformers_mfu']:.1%}), ratio {r['ratio']:.2f}")
        results.append(r)
    print(json.dumps({"results": results, "dtype": args.dtype, "threads": torch.get_num_threads(),
                      "matmul_peak_gflops": round(peak / 1e9, 1), "runs": args.runs,
                      "steps_per_run": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
