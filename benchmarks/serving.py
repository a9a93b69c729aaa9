"""Concurrent generation: aggregate tokens/s of 1 and of N requests through the workbench.

    python -m benchmarks.serving [--runs 3] [--concurrent 8] [--new-tokens 128] [--models small,gpt2-124m]

Each model (random weights, the shapes benchmarks.decode uses) is saved as a checkpoint in a
temporary folder and served by an app.workbench.Workbench, the facade both UIs and the API use,
so requests go through its GenerationService (engine.serving): N story requests are started at
once from N threads, as N visitors would, and read to the end. The figure is the total of new
tokens over the wall time from the first request to the last token. Side by side in one
process, alternating, after a warm-up: one request alone; N requests batched by the scheduler;
and N requests each running its own batch-1 generation.stream() in its own thread (what the
server did before the scheduler). Same sampling settings as benchmarks.decode (temperature 0.8,
top-k 50, top-p 0.95, repetition penalty 1.1), each request its own seed.

Progress goes to stderr; stdout's last line is one JSON object:
{"results": [{"model": "small", "one_tok_s": .., "batched_tok_s": .., "batched_ratio": ..,
"unbatched_ratio": .., and the same per CPU second: "batched_cpu_ratio": .., ...}]}
`concurrent_tok_s()` is the measurement, for other benchmarks to report too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import add_common_arguments, apply_common_arguments, log
from engine.checkpoint import save_checkpoint
from engine.config import shape
from engine.generation import stream
from engine.model import GPT
from engine.precision import CHOICES as PRECISIONS
from engine.sampling import SamplingParams
from engine.serving import ServingLimits
from engine.tokenizer import GPT2Tokenizer

SETTINGS = dict(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1)
MODELS = {"small": "small", "gpt2-124m": "gpt2"}
PROMPT = "The old lighthouse keeper climbed the stairs one last time, and at the top he found"


def concurrent_tok_s(start, n: int, new_tokens: int, seed: int = 0) -> tuple[float, float]:
    """Aggregate new tokens per second of n requests started at once, each from its own thread:
    (per wall-clock second, per CPU second of this process). start(params) begins one generation
    and returns an iterable of text deltas with .stats (a Workbench's story() Reply, or a
    generation.stream)."""
    counts = [0] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)

    def one(i: int) -> None:
        try:
            barrier.wait()
            params = SamplingParams(**SETTINGS, max_new_tokens=new_tokens, seed=seed * 1000 + i)
            reply = start(params)
            for _ in reply:
                pass
            counts[i] = reply.stats.new_tokens
        except BaseException as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        raise errors[0]
    return sum(counts) / elapsed, sum(counts) / cpu


def serve(name: str, folder: Path, concurrent: int, precision: str):
    """A workbench serving a random model of this shape; returns (workbench, spec, model)."""
    from app.workbench import Workbench

    torch.manual_seed(0)
    model = GPT(shape(MODELS[name])).eval()
    tok = GPT2Tokenizer()
    save_checkpoint(folder / "bundled" / name, model, tok)
    wb = Workbench(runs_dir=folder / "runs", bundled_dir=folder / "bundled",
                   limits=ServingLimits(max_active=concurrent, time_limit_s=3600),
                   precision=precision)
    spec = str(folder / "bundled" / name)
    return wb, spec, wb.models.load(spec)


def measure(name: str, folder: Path, args) -> dict:
    # benchmarks.decode passes its own arguments, which have no --precision: the apps' default.
    wb, spec, ckpt = serve(name, folder, args.concurrent, getattr(args, "precision", "auto"))
    through_wb = lambda params: wb.story(PROMPT, spec, params)  # noqa: E731
    unbatched = lambda params: stream(ckpt.model, ckpt.tokenizer, PROMPT, params)  # noqa: E731
    concurrent_tok_s(through_wb, 2, 8)  # warm-up: kernels, allocator, the scheduler's cache
    one, batched, alone = [], [], []
    for run in range(args.runs):
        one.append(concurrent_tok_s(through_wb, 1, args.new_tokens, seed=run))
        batched.append(concurrent_tok_s(through_wb, args.concurrent, args.new_tokens, seed=run))
        alone.append(concurrent_tok_s(unbatched, args.concurrent, args.new_tokens, seed=run))
        log(f"{name} run {run + 1}: 1 request {one[-1][0]:.1f} tok/s, {args.concurrent} batched "
            f"{batched[-1][0]:.1f} tok/s, {args.concurrent} unbatched {alone[-1][0]:.1f} tok/s "
            f"(per CPU second: {one[-1][1]:.1f}, {batched[-1][1]:.1f}, {alone[-1][1]:.1f}), "
            f"load {os.getloadavg()[0]:.1f}")
    result = {"model": name, "precision": wb.precision, "concurrent": args.concurrent}
    # Per CPU second too: on a shared machine the OS gives N busy threads (unbatched) more of
    # the cores than one scheduler thread, which the wall-clock figures reward.
    for cpu, col in (("", 0), ("cpu_", 1)):
        one_m, batched_m, alone_m = (statistics.median(r[col] for r in x)
                                     for x in (one, batched, alone))
        result.update({f"one_{cpu}tok_s": round(one_m, 2),
                       f"batched_{cpu}tok_s": round(batched_m, 2),
                       f"unbatched_{cpu}tok_s": round(alone_m, 2),
                       f"batched_{cpu}ratio": round(batched_m / one_m, 2),
                       f"unbatched_{cpu}ratio": round(alone_m / one_m, 2)})
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap, MODELS, default="small,gpt2-124m")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per case; the median is reported")
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the served models' precision (default auto, what the apps use)")
    args = ap.parse_args(argv)
    names = apply_common_arguments(ap, args, MODELS)
    if min(args.runs, args.concurrent, args.new_tokens) < 1:
        ap.error("--runs, --concurrent and --new-tokens must be positive")
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} runs x "
        f"{args.new_tokens} new tokens, precision {args.precision}, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        for name in names:
            results.append(measure(name, Path(tmp), args))
            log(json.dumps(results[-1]))
    print(json.dumps({"results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
