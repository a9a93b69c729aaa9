r"""Evaluate a model on data: print the mean cross-entropy loss and the perplexity.

examples:
  python -m engine eval --model story --data data/stories/stories.txt     # its validation split
  python -m engine eval --model story --data data/stories/stories.txt --split all \
      --max-batches 20 --json
  python -m engine eval --model gpt2 --data data/stories/stories.txt --max-batches 20

Text is cut into non-overlapping windows of the model's context; instruction data (JSONL) is
scored on the response tokens only, as in training. The validation split is the one training
holds out with the same --val-fraction.
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_model

    result = evaluate_model(args.model, args.data, split=args.split, val_fraction=args.val_fraction,
                            block_size=args.block_size, batch_size=args.batch_size,
                            max_batches=args.max_batches, max_data_tokens=args.max_data_tokens,
                            cache_dir=args.cache_dir, device=args.device)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
              f"({result['tokens']:,} tokens in {result['sequences']} sequences, split {args.split})")
    return 0 if math.isfinite(result["loss"]) else 1
