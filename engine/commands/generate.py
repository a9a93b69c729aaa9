r"""Stream a continuation of a prompt to stdout.

The model is a checkpoint directory, a training run (its latest checkpoint), a local
transformers GPT-2 folder, a Hugging Face hub id such as gpt2 (needs the network once, then
huggingface_hub's cache), or the name of a bundled model. Sampling applies, in this order:
repetition penalty, temperature, top-k, top-p. Notices (a prompt cut to fit the context window)
and, with --stats, speed figures go to stderr, so stdout holds only the generated text.

examples:
  python -m engine generate --model gpt2 --prompt "The meaning of life is" --seed 1
  python -m engine generate --model runs/story --prompt "Once upon a time" \
      --temperature 0.7 --top-k 40 --stop "The end." --max-new-tokens 200
"""

from __future__ import annotations

import argparse
import sys



def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.sampling import SamplingParams

    d = SamplingParams()
    p.add_argument("--model", "-m", required=True,
                   help="checkpoint directory, training run directory, local transformers "
                        "folder, hub id (e.g. gpt2) or bundled model name")
    p.add_argument("--prompt", "-p", required=True,
                   help='text to continue; "-" reads it from stdin; "" starts a new document')
    p.add_argument("--temperature", "-t", type=float, default=d.temperature,
                   help=f"softmax temperature; 0 = greedy (always the most likely token) "
                        f"(default {d.temperature})")
    p.add_argument("--top-k", type=int, default=d.top_k,
                   help=f"keep only the k most likely tokens; 0 = off (default {d.top_k})")
    p.add_argument("--top-p", type=float, default=d.top_p,
                   help=f"nucleus sampling: keep the smallest set of tokens whose probability "
                        f"reaches p, in (0, 1]; 1 = off (default {d.top_p})")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty,
                   help=f"CTRL penalty for tokens already in the context (> 1 discourages "
                        f"repeats); 1 = off (default {d.repetition_penalty})")
    p.add_argument("--repetition-window", type=int, default=d.repetition_window,
                   help=f"how many recent tokens the repetition penalty looks at; 0 = all "
                        f"(default {d.repetition_window})")
    p.add_argument("--max-new-tokens", "-n", type=int, default=d.max_new_tokens,
                   help=f"stop after this many new tokens (default {d.max_new_tokens})")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed: the same seed, model and settings give the same text "
                        "(default: a fresh random seed)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop before this text (not printed); repeat the flag for several")
    p.add_argument("--device", default="auto",
                   help="where to run: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, "
                        "cuda:N or mps (default auto)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weight precision; bfloat16/float16 halve memory, mostly useful on a "
                        "GPU (default float32)")
    p.add_argument("--stats", action="store_true",
                   help="print token counts, speed and the finish reason to stderr at the end")


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.device import pick_device
    from engine.generation import stream
    from engine.loading import load_model
    from engine.sampling import SamplingParams

    # Validate everything before loading anything.
    params = SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, repetition_window=args.repetition_window,
        max_new_tokens=args.max_new_tokens, seed=args.seed, stop=tuple(args.stop),
    )
    device = pick_device(args.device)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    ckpt = load_model(args.model, device=device, dtype=getattr(torch, args.dtype))

    text = stream(ckpt.model, ckpt.tokenizer, prompt, params)
    out = sys.stdout
    for delta in text:
        out.write(delta)
        out.flush()
    out.write("\n")
    out.flush()
    for notice in text.stats.notices:
        print(f"note: {notice}", file=sys.stderr)
    if args.stats:
        s = text.stats
        print(f"{s.prompt_tokens} prompt tokens, {s.new_tokens} new tokens, "
              f"prefill {s.prefill_s * 1000:.0f} ms, {s.tokens_per_s:.1f} tokens/s, "
              f"finished: {s.finish_reason}", file=sys.stderr)
    return 0
