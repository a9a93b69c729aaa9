"""Export a model as a transformers GPT-2 folder.

Writes config.json, model.safetensors (float32), generation_config.json and the tokenizer
(tokenizer.json, plus vocab.json and merges.txt for GPT-2's vocabulary) into --out, so that
transformers' GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained load it with the
same logits, and serving engines that read transformers folders (vLLM, TGI) can serve it.

examples:
  python -m engine export --model story --out exported/story
  python -m engine export --model runs/demo/checkpoints/best --out exported/demo   # a run's best
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="checkpoint directory, training run directory, local transformers "
                        "folder, hub id (e.g. gpt2) or bundled model name")
    p.add_argument("--out", "-o", required=True,
                   help="directory to write; must be new, empty, or an earlier export "
                        "(which is replaced atomically)")


def run(args: argparse.Namespace) -> int:
    from engine.hub import export_transformers
    from engine.loading import load_model

    ckpt = load_model(args.model, device="cpu")
    out = export_transformers(ckpt, args.out)
    n = ckpt.model.num_params()
    print(f"wrote {out} ({n:,} parameters, tokenizer: {ckpt.tokenizer.kind}); load it "
          f"with GPT2LMHeadModel.from_pretrained({str(out)!r})", file=sys.stderr)
    return 0
