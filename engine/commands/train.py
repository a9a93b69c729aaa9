r"""Train a model: pretraining on text, or instruction tuning (SFT) on Alpaca/Dolly JSONL.

examples:
  python -m engine train --preset cpu-demo --data data/stories/stories.txt --out runs/demo
  python -m engine train --out runs/demo --resume --max-steps 600    # continue, further
  python -m engine train --preset story-cpu --data data/stories/stories.txt --out runs/story
  python -m engine train --preset python-cpu --data data/python/docs.txt --out runs/python-docs
  python -m engine train --preset python-sft-cpu --data data/python/qa.jsonl       --val-data data/python/qa_val.jsonl --init-from runs/python-docs --out runs/python-sft
  python -m engine train --preset tinystories-gpu --data hf:roneneldan/TinyStories --out runs/ts
  torchrun --standalone --nproc_per_node=2 -m engine train --preset cpu-demo       --data data/stories/stories.txt --out runs/demo-ddp --device cpu
  python -m engine train --preset story-cpu --help    # the options with that preset's values

Flags override the preset; the preset overrides the defaults. A run that stopped before its
first checkpoint is simply started over by the same command; Ctrl-C (or SIGTERM) saves a
checkpoint and exits, and --resume continues exactly. torchrun (next to python: .venv/bin/torchrun)
runs the same command with DistributedDataParallel; a step's batch is shared among the
processes (a note says how). See docs/training.md.
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
    "batch_size": "sequences per micro-batch (under torchrun: at most this many per process)",
    "grad_accum": "micro-batches per optimizer step at one process; under torchrun the step's "
                  "batch-size x grad-accum sequences are shared among the processes when they "
                  "divide equally (a note says how)",
    "lora_rank": "train LoRA adapters of this rank on --init-from instead of the whole model "
                 "(0 = off); checkpoints hold the adapters and name the base",
    "lora_alpha": "LoRA scale: the adapters' update is multiplied by alpha / rank",
    "lora_targets": "layers that get adapters, comma-separated: c_attn, attn.c_proj, c_fc, "
                    "mlp.c_proj, c_proj (both projections)",
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
OWN_HELP = True  # engine.__main__ leaves -h/--help to add_arguments (PresetHelp)


class PresetHelp(argparse.Action):
    """-h/--help: the options with their defaults, or with a preset's values when --preset NAME
    comes before --help."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from ..presets import PRESETS

        preset = getattr(namespace, "preset", None)
        if preset:
            values = PRESETS[preset]
            for action in parser._actions:
                field = getattr(action, "field", None)
                if field in values:
                    action.help = _help_text(field, values[field], f"preset {preset}")
        parser.print_help()
        parser.exit()


def _help_text(field: str, value, source: str = "default") -> str:
    shown = "" if value in ("", None) else f" ({source}: {value})"
    return (HELP.get(field, "") + shown).replace("%", "%%")  # argparse %-formats help


def presets_table() -> str:
    """The presets as a person reads them in --help: what each sets (flags override it)."""
    import json

    from ..presets import PRESETS
    from ..train_config import TrainConfig, option_args

    defaults = TrainConfig()
    lines = ["presets: --preset NAME is the same as these flags (flags given on the command line",
             "win over them; every other option keeps its default):"]
    for name, values in PRESETS.items():
        flags = [" ".join(json.dumps(a) if " " in a else a for a in option_args(k, v))
                 for k, v in values.items() if getattr(defaults, k) != v]
        line = f"  {name}:"
        for f in flags:  # wrapped between flags, never inside one
            if len(line) + 2 + len(f) > 92:
                lines.append(line)
                line = "    "
            line += "  " + f
        lines.append(line)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..presets import PRESETS
    from ..train_config import TrainConfig, flag

    parser.add_argument("-h", "--help", action=PresetHelp,  # OWN_HELP: argparse adds none
                        help="show this help and exit (after --preset NAME: with its values)")
    parser.epilog = presets_table()
    parser.add_argument("--preset", default=argparse.SUPPRESS, choices=list(PRESETS),
                        help="a named recipe (listed below)")
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
        help_text = _help_text(f.name, default)
        if isinstance(default, bool):
            action = parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction,
                                         default=argparse.SUPPRESS, help=help_text)
        else:
            action = parser.add_argument(flag(f.name), type=type(default),
                                         default=argparse.SUPPRESS, metavar=f.name.upper(),
                                         help=help_text)
        action.field = f.name  # PresetHelp shows a preset's value here


def run(args: argparse.Namespace) -> int:
    from ..distributed import is_main_process
    from ..run_dir import check_run_dir
    from ..train import train
    from ..train_config import TrainConfig, resolve_config

    names = {f.name for f in dataclasses.fields(TrainConfig)} - SKIP
    options = {k: getattr(args, k) for k in names if hasattr(args, k)}
    cfg = resolve_config(options, preset=getattr(args, "preset", None), resume=args.resume)
    if is_main_process():  # under torchrun, rank 0 alone owns the run directory
        check_run_dir(cfg, args.resume, args.force)
    summary = train(cfg, resume=args.resume, force=args.force, progress=args.progress)
    if is_main_process():
        val = summary.get("val_loss")
        print(f"{summary['state']} at step {summary['step']}: {summary['tokens']:,} tokens"
              + (f", val loss {val:.4f}" if val is not None else "")
              + f"; checkpoints in {cfg.out}/checkpoints")
    return 0
