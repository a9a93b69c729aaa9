r"""Evaluate a model on data: print the mean cross-entropy loss, perplexity and bits per byte.

examples:
  python -m engine eval --model story --data data/stories/stories.txt     # its validation split
  python -m engine eval --model story --data data/stories/stories.txt --split all \
      --max-batches 20 --json
  python -m engine eval --model gpt2 --data data/stories/stories.txt --max-batches 20
  python -m engine eval --model story --data data/stories/stories.txt --samples 8
  python -m engine eval --model python-assistant --data data/python/qa_val.jsonl \
      --split all --max-batches 2 --text-metrics 2 --max-new-tokens 32

Text is cut into non-overlapping windows of the model's context; instruction data (JSONL) is
scored on the response tokens only, as in training. The validation split is the one training
holds out with the same --val-fraction. Bits per byte divide the loss by the bytes of text the
scored tokens stand for, so models with different tokenizers compare. --samples N also writes N
seeded samples of 200 tokens (default sampling) and reports the share of their words that occur
in the data and the share of repeated word 4-grams (engine/sample_quality.py).
"""

from __future__ import annotations

import argparse
import json
import math


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="checkpoint, run directory, transformers folder, hub id or bundled name")
    parser.add_argument("--data", required=True,
                        help="text file or folder, instruction JSONL, or hf:NAME[:CONFIG]")
    parser.add_argument("--split", choices=("val", "train", "all"), default="val",
                        help="which part of the data to score (default: val)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="validation share, as in training (default: 0.1)")
    parser.add_argument("--block-size", type=int, default=0,
                        help="window length (default: the model's context)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default: 8)")
    parser.add_argument("--max-batches", type=int, default=0, help="stop after N batches (0 = all)")
    parser.add_argument("--max-data-tokens", type=int, default=0,
                        help="tokenize at most this many tokens (0 = all; hf: defaults to 1M)")
    parser.add_argument("--cache-dir", default="", help="tokenized data cache")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--samples", type=int, default=0,
                        help="also score N seeded samples: real-word share, repeated 4-grams")
    parser.add_argument("--sample-prompt", default="",
                        help='the prompt of the samples (default: "The king")')
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    from ..text_metrics import GREEDY
    from ._flags import add_sampling_arguments

    group = parser.add_argument_group(
        "text metrics", "--text-metrics N: BLEU and ROUGE-L of the model's responses to N "
        "examples of the split (instruction data), generated with these settings (default "
        "greedy, so the figures repeat)")
    group.add_argument("--text-metrics", type=int, default=0, metavar="N",
                       help="score responses to up to N examples (0 = off)")
    add_sampling_arguments(group, GREEDY)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_model
    from ._flags import sampling_params

    if args.text_metrics < 0:
        raise ValueError(f"--text-metrics must be 0 (off) or more, got {args.text_metrics}")
    params = sampling_params(args)  # a bad sampling flag fails before any work

    result = evaluate_model(args.model, args.data, split=args.split, val_fraction=args.val_fraction,
                            block_size=args.block_size, batch_size=args.batch_size,
                            max_batches=args.max_batches, max_data_tokens=args.max_data_tokens,
                            cache_dir=args.cache_dir, device=args.device, samples=args.samples,
                            sample_prompt=args.sample_prompt, text_metrics=args.text_metrics,
                            text_params=params)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
              f"bits/byte {result['bpb']:.4f}  ({result['tokens']:,} tokens, {result['bytes']:,} "
              f"bytes in {result['sequences']} sequences, split {args.split})")
        q = result.get("sample_quality")
        if q:
            print(f"samples {q['samples']} x {q['max_new_tokens']} tokens from {q['prompt']!r}: "
                  f"{q['real_word_share']:.1%} of {q['words']} words occur in the data, "
                  f"{q['repeated_4gram_share']:.1%} of {q['ngrams']} word 4-grams repeat")
        t = result.get("text_metrics")
        if t:
            shown = {k: v for k, v in t["sampling"].items() if k != "stop"}
            print(f"BLEU {t['bleu']:.2f}  ROUGE-L {t['rouge_l']:.2f}  ({t['examples']} "
                  f"responses, split {t['split']}; sampling {shown})")
    return 0 if math.isfinite(result["loss"]) else 1
