"""Decode speed: our generation (default precision and float32) against CTranslate2 (float32 and
int8) and transformers' generate(), on the same weights, in one process.

    python -m benchmarks.decode [--runs 5] [--new-tokens 128] [--models small,gpt2-124m]
                                [--sides ours,ours_fp32,ct2_float32,ct2_int8,transformers]
                                [--gate-sequences 32] [--concurrent 8]

Every side gets the same random weights: ours, converted with engine.hub to transformers (logits
checked equal before timing), and that export converted by CTranslate2's own converter (the way
a user would switch to it). Batch 1, the same prompt, the same sampling settings (temperature
0.8, top-k 50, top-p 0.95, repetition penalty 1.1) and the same thread count. "ours" runs at the
precision `auto` picks on the CPU (engine.precision), "ours_fp32" is the exact float32 path.
Runs interleave the sides (ours, CTranslate2, ... in a rotating order) after one warm-up each, so
drift in the machine's load hits all of them alike; each figure is the median over runs of new
tokens per wall second of the whole call (prefill included; ours also turns tokens into
streamed text), and the same per CPU second of the process (`*_cpu_tok_s`), which leaves out
time spent waiting for a core on a shared machine. Every side gets the same thread count; ours
decodes each token on fewer where engine.generation.DECODE_THREADS says so (reported as
`ours_decode_step_threads`).

Also measured:
- memory read bandwidth (summing a 512 MiB float32 tensor, median) with one thread and with
  every CPU's thread; `bandwidth_fraction` is the fp32 path's tokens/s times its weight bytes per
  token over the all-threads bandwidth (decoding one token reads every weight once);
- the quality gate: perplexity of each bundled model on its held-out text at the default
  precision against float32 (engine.precision.quality_gate; must stay within 0.5%);
- with --concurrent N (and benchmarks/serving.py present): the aggregate tokens/s of 1 and of N
  concurrent requests through the service, from benchmarks.serving.measure.

Progress goes to stderr; stdout's last line is one JSON object:
{"results": [{"model": "small", "ours_tok_s": .., "ours_fp32_tok_s": .., "ct2_float32_tok_s": ..,
"ct2_int8_tok_s": .., "ours_vs_ct2_int8": .., ...}], "bandwidth": {..}, "quality_gate": [..],
"concurrent": [..] (only with --concurrent), "load_average": [..]}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_common_arguments, apply_common_arguments, log
from engine import precision as P
from engine.checkpoint import Checkpoint
from engine.config import shape
from engine.generation import DECODE_THREADS, stream
from engine.hub import export_transformers, to_transformers
from engine.loading import ROOT
from engine.model import GPT
from engine.sampling import SamplingParams
from engine.tokenizer import GPT2Tokenizer

SETTINGS = dict(temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.1)
# "tiny" (2 layers, 32 dims, GPT-2's vocabulary) is for the benchmark's own test.
MODELS = {"small": "small", "gpt2-124m": "gpt2", "tiny": "tiny"}
SIDES = ("ours", "ours_fp32", "ct2_float32", "ct2_int8", "transformers")
PROMPT = "The old lighthouse keeper climbed the stairs one last time, and at the top he found"
# Each bundled model and the text it was trained on; the gate reads that text's held-out part.
GATE_DATA = {"story": "data/stories/stories.txt", "python-assistant": "data/python/docs.txt"}


def build(name: str, folder: Path, threads: int, seed: int = 0) -> dict:
    """Every side's decoder for one random model, all on the very same weights: a function
    (new_tokens, seed) -> (tokens per wall second, tokens per CPU second) per side."""
    import copy

    import ctranslate2

    torch.manual_seed(seed)
    fp32 = GPT(shape(MODELS[name])).eval()
    theirs = to_transformers(fp32, eot_id=50256)
    x = torch.randint(0, fp32.config.vocab_size, (1, 16))
    with torch.inference_mode():
        diff = (fp32(x)[0] - theirs(x).logits).abs().max().item()
    assert diff <= 1e-4, f"logits differ by {diff}"
    tok = GPT2Tokenizer()
    ids = tok.encode(PROMPT)
    export = export_transformers(Checkpoint(model=fp32, tokenizer=tok, path=folder), folder / name)
    ct2_dir = ctranslate2.converters.TransformersConverter(str(export)).convert(
        str(folder / f"{name}-ct2"), force=True)
    hf = tok.to_hf()
    start_tokens = [hf.id_to_token(i) for i in ids]
    default = P.apply(copy.deepcopy(fp32), "auto")
    sides = {"ours": lambda n, seed: time_ours(default, tok, ids, n, seed),
             "ours_fp32": lambda n, seed: time_ours(fp32, tok, ids, n, seed),
             "transformers": lambda n, seed: time_theirs(theirs, tok, ids, n, seed)}
    for compute in ("float32", "int8"):
        gen = ctranslate2.Generator(ct2_dir, device="cpu", compute_type=compute,
                                    intra_threads=threads, inter_threads=1)
        sides[f"ct2_{compute}"] = (lambda g: lambda n, seed: time_ct2(g, start_tokens, n, seed))(gen)
    return {"sides": sides, "fp32": fp32, "default_precision": P.precision_of(default)}


def timed(run) -> tuple[float, float]:
    """run() -> new tokens; returns (tokens per wall second, tokens per CPU second)."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = run()
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def time_ours(model, tok, ids, new_tokens, seed) -> tuple[float, float]:
    params = SamplingParams(**SETTINGS, max_new_tokens=new_tokens, seed=seed)

    def run() -> int:
        s = stream(model, tok, ids, params)
        for _ in s:
            pass
        return s.stats.new_tokens
    return timed(run)


def time_theirs(model, tok, ids, new_tokens, seed) -> tuple[float, float]:
    x = torch.tensor([ids])

    def run() -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, **SETTINGS,
                                 max_new_tokens=new_tokens, pad_token_id=tok.eot_id,
                                 eos_token_id=tok.eot_id)
        return out.shape[1] - x.shape[1]
    return timed(run)


def time_ct2(generator, start_tokens, new_tokens, seed) -> tuple[float, float]:
    import ctranslate2

    def run() -> int:
        ctranslate2.set_random_seed(seed)
        out = generator.generate_batch(
            [start_tokens], max_length=new_tokens, include_prompt_in_result=False,
            sampling_temperature=SETTINGS["temperature"], sampling_topk=SETTINGS["top_k"],
            sampling_topp=SETTINGS["top_p"], repetition_penalty=SETTINGS["repetition_penalty"])
        return len(out[0].sequences_ids[0])
    return timed(run)


class Bandwidth:
    """Read bandwidth: bytes of a large float32 tensor over the time to sum it, with one thread
    and with all of the machine's (the decode threads are put back after each sample)."""

    def __init__(self, mib: int = 512) -> None:
        self.x = torch.ones(mib * 2**20 // 4)
        self.x.sum()  # touch every page first
        self.samples: dict[int, list[float]] = {1: [], os.cpu_count() or 1: []}

    def sample(self, repeats: int = 3) -> None:
        gb = self.x.numel() * 4 / 1e9
        threads = torch.get_num_threads()
        try:
            for n, samples in self.samples.items():
                torch.set_num_threads(n)
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    self.x.sum()
                    samples.append(gb / (time.perf_counter() - t0))
        finally:
            torch.set_num_threads(threads)

    def median(self, threads: int) -> float:
        return statistics.median(self.samples[threads])


def weight_bytes_per_token(model: GPT) -> int:
    """Bytes of weights one float32 decode step reads: all of them, but one row of wpe."""
    wpe = model.transformer.wpe.weight
    return (model.num_params() - wpe.numel() + wpe.size(1)) * 4


def measure(name: str, sides: list[str], args, folder: Path, bw: Bandwidth) -> dict:
    built = build(name, folder, torch.get_num_threads())
    run = {s: built["sides"][s] for s in sides}
    for f in run.values():
        f(8, 0)  # warm-up: allocator, kernels, lazy imports
    got: dict[str, list[tuple[float, float]]] = {s: [] for s in sides}
    for r in range(args.runs):
        order = sides[r % len(sides):] + sides[:r % len(sides)]  # rotate who goes first
        for s in order:
            got[s].append(run[s](args.new_tokens, r))
        bw.sample()
        log(f"{name} run {r + 1}: " + ", ".join(f"{s} {got[s][-1][0]:.1f}" for s in sides)
            + f" tok/s; load {os.getloadavg()[0]:.1f}")
    result = {"model": name, "params": built["fp32"].num_params(),
              "default_precision": built["default_precision"]}
    for s in sides:
        result[f"{s}_tok_s"] = round(statistics.median(x[0] for x in got[s]), 2)
        result[f"{s}_cpu_tok_s"] = round(statistics.median(x[1] for x in got[s]), 2)
    for other in ("ct2_float32", "ct2_int8", "transformers", "ours_fp32"):
        if "ours" in sides and other in sides:
            for cpu in ("", "cpu_"):
                result[f"ours_vs_{other}{'_cpu' if cpu else ''}"] = round(
                    result[f"ours_{cpu}tok_s"] / result[f"{other}_{cpu}tok_s"], 3)
    if "ours_fp32" in sides:
        nbytes = weight_bytes_per_token(built["fp32"])
        result["fp32_weight_bytes_per_token"] = nbytes
        result["fp32_bandwidth_fraction"] = round(
            result["ours_fp32_tok_s"] * nbytes / (bw.median(max(bw.samples)) * 1e9), 3)
    return result


def quality_gates(sequences: int) -> list[dict]:
    """engine.precision's gate for every bundled model at the precision auto picks on the CPU."""
    precision = P.resolve("auto", "cpu")
    out = []
    for spec, data in GATE_DATA.items():
        r = P.quality_gate(spec, str(ROOT / data), precision, max_sequences=sequences)
        out.append({"model": spec, "data": data, "precision": precision,
                    "fp32_ppl": round(r["fp32_ppl"], 4), "ppl": round(r["ppl"], 4),
                    "change": round(r["change"], 5), "passed": r["passed"]})
        log(f"quality gate {spec} ({precision}): perplexity {r['fp32_ppl']:.3f} -> {r['ppl']:.3f} "
            f"({100 * r['change']:+.3f}%), {'passed' if r['passed'] else 'FAILED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(ap, MODELS, default="small,gpt2-124m")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per side; the median is reported (default 5; use at least 5 for figures you publish)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, from: {', '.join(SIDES)}")
    ap.add_argument("--gate-sequences", type=int, default=32,
                    help="held-out windows per bundled model for the quality gate; 0 skips it (default 32)")
    ap.add_argument("--concurrent", type=int, default=0,
                    help="also measure 1 vs N concurrent requests through the service "
                         "(benchmarks.serving); 0 = off (default 0)")
    ap.add_argument("--bandwidth-mib", type=int, default=512, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = apply_common_arguments(ap, args, MODELS)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or any(s not in SIDES for s in sides):
        ap.error(f"--sides: choose from {', '.join(SIDES)}, got {args.sides!r}")
    if args.runs < 1 or args.new_tokens < 1 or args.gate_sequences < 0 or args.concurrent < 0:
        ap.error("--runs and --new-tokens must be positive, --gate-sequences and --concurrent >= 0")
    import ctranslate2
    import transformers

    log(f"torch {torch.__version__}, ctranslate2 {ctranslate2.__version__}, transformers "
        f"{transformers.__version__}, {torch.get_num_threads()} threads, {args.runs} runs x "
        f"{args.new_tokens} new tokens, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    loads = [os.getloadavg()[0]]
    bw = Bandwidth(args.bandwidth_mib)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        for name in names:
            results.append(measure(name, sides, args, Path(tmp), bw))
            loads.append(os.getloadavg()[0])
            log(json.dumps(results[-1]))
        concurrent = concurrent_figures(names, args, Path(tmp)) if args.concurrent else None
    out = {"results": results, "bandwidth": {
        "one_thread_gb_s": round(bw.median(1), 2),
        "all_threads_gb_s": round(bw.median(max(bw.samples)), 2), "all_threads": max(bw.samples),
        "decode_threads": torch.get_num_threads(), "ours_decode_step_threads": ours_step_threads()}}
    if args.gate_sequences:
        out["quality_gate"] = quality_gates(args.gate_sequences)
    if concurrent is not None:
        out["concurrent"] = concurrent
    out["load_average"] = loads + [os.getloadavg()[0]]
    print(json.dumps(out), flush=True)
    return 0


def ours_step_threads() -> int:
    """Threads our batch-1 decode steps run on (engine.generation.DECODE_THREADS; prefill and
    CTranslate2 get decode_threads)."""
    threads = torch.get_num_threads()
    return threads if DECODE_THREADS is None else min(threads, DECODE_THREADS)


def concurrent_figures(names: list[str], args, folder: Path) -> list[dict]:
    """1 vs N concurrent requests through the service (H-batching's benchmarks.serving)."""
    from benchmarks import serving

    return [serving.measure(name, folder / "serving", args) for name in names]


if __name__ == "__main__":
    sys.exit(main())
