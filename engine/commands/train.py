"""Train a model: pretraining on text, or instruction tuning (SFT) on Alpaca/Dolly JSONL.

Examples:
  python -m engine train --data data/stories/stories.txt --out runs/story --preset story-cpu
  python -m engine train --data hf:roneneldan/TinyStories --out runs/ts --preset tinystories-gpu
  python -m engine train --data data/python/qa.jsonl --val-data data/python/qa_val.jsonl \
      --out runs/python-sft --preset python-sft-cpu --init-from runs/python-docs
  python -m engine train --out runs/story --resume            # continue where it stopped
  torchrun --nproc_per_node=4 -m engine train --data ... --out ...   # DistributedDataParallel

Flags override the preset; the preset overrides the defaults. Ctrl-C (or SIGTERM) saves a
checkpoint and exits; --resume continues exactly. See docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses

HELP = {
    "data": "a text file, a folder of text files, instruction JSONL (Alpaca or Dolly), or "
            "hf:NAME[:CONFIG] for a Hugging Face dataset (streamed)",
    "val_data": "held-out data of the same kind (e.g. qa_val.jsonl); default: hold out "
                "--val-fraction of --data",
    "out": "run directory (checkpoints, metrics.jsonl); must be new unless --resume or --force",
    "mode": "pretrain, sft (loss on responses only), or auto: sft for instruction data",
    "init_from": "start from this model: a checkpoint, a run directory, a transformers folder, "
                 "or a hub id such as gpt2 (its shape and tokenizer are used)",
    "n_layer": "transformer blocks", "n_head": "attention heads", "n_embd": "model width",
    "block_size": "context length in tokens (0: the --init-from model's, else 256)", "dropout": "dropout probability",
    "tokenizer": "gpt2 (GPT-2's 50257 tokens) or bpe (train a byte-level BPE on the data)",
    "vocab_size": "vocabulary size of the trained BPE (--tokenizer bpe)",
    "batch_size": "sequences per micro-batch (per process)",
    "grad_accum": "micro-batches per optimizer step at one process; divided by the number of "
                  "processes under torchrun, so the effective batch stays the same",
    "max_steps": "optimizer steps", "lr": "peak learning rate (AdamW)",
    "min_lr_ratio": "cosine decay ends at lr * this", "warmup_steps": "linear warmup steps",
    "weight_decay": "AdamW weight decay (matrices only)", "beta1": "AdamW beta1",
    "beta2": "AdamW beta2", "grad_clip": "clip the gradient norm to this (0 = off)",
    "eval_every": "evaluate validation loss every N steps",
    "eval_batches": "validation batches per evaluation",
    "save_every": "save a checkpoint every N steps (and at the end)",
    "keep_last": "step checkpoints to keep (best/ is kept as well)",
    "log_every": "write a metrics line every N steps",
    "sample_every": "log a sample generation every N steps (0 = at each evaluation)",
    "sample_prompt": "prompt for sample generations (default: from the validation data)",
    "sample_tokens": "tokens per sample generation",
    "val_fraction": "share of the data held out for validation",
    "max_data_tokens": "tokenize at most this many tokens (0 = all; hf: data defaults to what "
                       "max-steps needs)",
    "cache_dir": "where tokenized data is cached (default ~/.cache/gpt-workbench/tokens)",
    "device": "auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu",
    "dtype": "autocast dtype: auto (bf16 on CUDA, fp16+GradScaler without bf16, fp32 on CPU), "
             "float32, bfloat16, float16",
    "compile": "torch.compile the model", "seed": "random seed (init, data order, dropout)",
}
SKIP = {"preset"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..presets import PRESETS
    from ..train_config import TrainConfig, flag

    parser.add_argument("--preset", default=argparse.SUPPRESS, choices=sorted(PRESETS),
                        help="a named recipe: " + "; ".join(sorted(PRESETS)))
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last complete checkpoint")
    parser.add_argument("--force", action="store_true",
                        help="delete the run already in --out and start over")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default: when attached to a terminal)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in SKIP:
            continue
        default = getattr(defaults, f.name)
        help_text = HELP.get(f.name, "") + (f" (default: {default})" if default not in ("", None) else "")
        if isinstance(default, bool):
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag(f.name), type=type(default), default=argparse.SUPPRESS,
                                metavar=f.name.upper(), help=help_text)


def run(args: argparse.Namespace) -> int:
    from ..run_dir import check_run_dir
    from ..train import train
    from ..train_config import TrainConfig, resolve_config

    names = {f.name for f in dataclasses.fields(TrainConfig)} - SKIP
    options = {k: getattr(args, k) for k in names if hasattr(args, k)}
    cfg = resolve_config(options, preset=getattr(args, "preset", None), resume=args.resume)
    check_run_dir(cfg, args.resume, args.force)
    summary = train(cfg, resume=args.resume, force=args.force, progress=args.progress)
    val = summary.get("val_loss")
    print(f"{summary['state']} at step {summary['step']}: {summary['tokens']:,} tokens"
          + (f", val loss {val:.4f}" if val is not None else "") + f"; checkpoints in {cfg.out}/checkpoints")
    return 0
