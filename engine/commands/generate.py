r"""Stream a continuation of a prompt to stdout.

The model is a checkpoint directory, a training run (its latest checkpoint), a local
transformers GPT-2 folder, a Hugging Face hub id such as gpt2 (needs the network once, then
huggingface_hub's cache), or the name of a bundled model. Sampling applies, in this order:
repetition penalty, temperature, top-k, top-p. Notices (a prompt cut to fit the context window)
and, with --stats, speed figures go to stderr, so stdout holds only the generated text.

examples:
  python -m engine generate --model gpt2 --prompt "The meaning of life is" --seed 1
  python -m engine generate --model story --prompt "The king" --temperature 0.7 \
      --top-k 40 --stop "KING HENRY." --max-new-tokens 200
  python -m engine generate --model runs/demo --prompt "KING HENRY." -n 50   # a training run
"""

from __future__ import annotations

import argparse
import sys

from ._flags import add_device_arguments, add_sampling_arguments, load, sampling_params


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="checkpoint directory, training run directory, local transformers "
                        "folder, hub id (e.g. gpt2) or bundled model name")
    p.add_argument("--prompt", "-p", required=True,
                   help='text to continue; "-" reads it from stdin; "" starts a new document')
    add_sampling_arguments(p)
    add_device_arguments(p)
    p.add_argument("--stats", action="store_true",
                   help="print token counts, speed and the finish reason to stderr at the end")


def run(args: argparse.Namespace) -> int:
    from engine.device import pick_device
    from engine.generation import stream

    # Validate everything before loading anything.
    params = sampling_params(args)
    pick_device(args.device)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    ckpt = load(args)

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
