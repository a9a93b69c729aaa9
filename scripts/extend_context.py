"""Give a checkpoint a longer context window: the learned position table grows, the rest is kept.

    .venv/bin/python scripts/extend_context.py SRC OUT --block-size 768

Rows 0..old-1 of the position embeddings are copied; the new rows start as GPT-2 initialises
them (normal, std 0.02) and are learned by the fine-tuning that follows (the python-assistant
recipe in scripts/train_bundled.sh). Every other weight and the tokenizer are copied unchanged.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.checkpoint import save_checkpoint  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.model import GPT  # noqa: E402


def extend(src: str, out: Path, block_size: int, seed: int = 1337) -> GPT:
    ck = load_model(src)
    old = ck.model.config
    if block_size <= old.block_size:
        raise SystemExit(f"--block-size {block_size} must be larger than {src}'s {old.block_size}")
    torch.manual_seed(seed)
    model = GPT(replace(old, block_size=block_size))
    state = ck.model.state_dict()
    wpe = model.transformer.wpe.weight.detach().clone()
    torch.nn.init.normal_(wpe, mean=0.0, std=0.02)
    wpe[: old.block_size] = state["transformer.wpe.weight"]
    state["transformer.wpe.weight"] = wpe
    model.load_state_dict(state)
    card = (f"{src} with its context window extended from {old.block_size} to {block_size} "
            "tokens (new position embeddings untrained); an intermediate of the "
            "python-assistant recipe.\n")
    save_checkpoint(out, model, ck.tokenizer, card=card)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out", type=Path)
    ap.add_argument("--block-size", type=int, required=True)
    args = ap.parse_args(argv)
    extend(args.src, args.out, args.block_size)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
