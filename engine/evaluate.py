"""Evaluation: validation loss and perplexity, and the sample generations a run logs.

    evaluate_model("runs/story", "data/story")   # python -m engine eval: any model, any data
    validation_loss(model, batches, ...)         # what the training loop logs as val_loss
    sample_text(model, tokenizer, prompt, ...)   # the text a run logs and puts in its model card

The loss is the mean cross-entropy per target token (response tokens only for instruction data,
as in training): each batch's mean is weighted by its token count, so batches of different
lengths add up to the mean over all tokens.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from . import data as D
from .device import pick_device
from .distributed import Dist
from .tokenizer import Tokenizer


def perplexity(loss: float) -> float:
    """exp(loss), capped at exp(50) so an untrained model's figure stays a finite number."""
    return math.exp(min(loss, 50))


def loss_sums(model: torch.nn.Module, batches: D.Batches, n: int, batch_size: int,
              device: torch.device, autocast=None, rank: int = 0, world: int = 1) -> tuple[float, float]:
    """(sum of token losses, number of target tokens) over the first n items of `batches`, in
    their fixed order. Process `rank` of `world` takes every world-th batch; sum the pairs of all
    processes for the total. model(x, y) -> (_, mean loss); the caller sets eval/train mode."""
    total = count = 0.0
    with torch.no_grad():
        for start in range(rank * batch_size, n, batch_size * world):
            x, y = batches.take(start, min(batch_size, n - start), shuffle=False)
            x, y = x.to(device), y.to(device)
            with autocast or contextlib.nullcontext():
                _, loss = model(x, y)
            k = int((y != -100).sum())
            total, count = total + float(loss) * k, count + k
    return total, count


def validation_loss(model: torch.nn.Module, batches: D.Batches, max_items: int, batch_size: int,
                    dist: Dist, autocast=None) -> float | None:
    """Mean loss over the first max_items validation items, shared among the processes; None
    when there is nothing to evaluate. The model is put back in training mode."""
    n = min(len(batches), max_items)
    if n == 0:
        return None
    model.eval()
    try:
        total, count = loss_sums(model, batches, n, batch_size, dist.device, autocast,
                                 dist.rank, dist.world)
    finally:
        model.train()
    total, count = dist.all_sum([total, count])
    return total / count if count else None


def sample_text(model, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, seed: int) -> str:
    """A sample continuation of prompt (temperature 0.8, top-k 50, seeded: the same model gives
    the same text). The model is put back in training mode."""
    from .generation import generate
    from .sampling import SamplingParams

    params = SamplingParams(temperature=0.8, top_k=50, max_new_tokens=max_new_tokens, seed=seed)
    try:
        return generate(model, tokenizer, prompt, params)
    finally:
        model.train()


def default_prompt(data, tokenizer: Tokenizer, all_val: bool) -> str:
    """A prompt for sample generations: the first validation example's prompt (SFT), or the
    opening words of a validation document (pretraining). all_val: data is the --val-data."""
    if isinstance(data, D.ExampleData):
        rows = data.train if all_val or not len(data.val) else data.val
        offset, _, plen = (int(v) for v in rows[0])
        return tokenizer.decode(int(t) for t in data.tokens[offset:offset + plen])
    tokens = data.train if all_val or len(data.val) <= 16 else data.val
    head = [int(t) for t in tokens[:4096]]
    start = head.index(tokenizer.eot_id) + 1 if tokenizer.eot_id in head[:-8] else 0
    text = tokenizer.decode(head[start:start + 8])
    return text.strip() or "The"


# ---------------------------------------------------------------------------------------------
# Any model on any data (python -m engine eval)


def evaluate_model(model_spec: str, data_spec: str, split: str = "val", val_fraction: float = 0.1,
                   block_size: int = 0, batch_size: int = 8, max_batches: int = 0,
                   max_data_tokens: int = 0, cache_dir: str = "", device: str = "auto") -> dict:
    """Mean cross-entropy (response tokens only for instruction data) and perplexity of a model
    (any spec engine.loading.load_model takes) on data (any --data of training). The "val" split
    is the one training holds out with the same val_fraction. Bad arguments raise ValueError
    before any model is loaded."""
    from .loading import load_model

    _check_eval_args(split, batch_size, block_size, max_batches, max_data_tokens, val_fraction)
    source = D.open_source(data_spec)
    dev = pick_device(device)
    ckpt = load_model(model_spec, device=dev)
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    block = block_size or model.config.block_size
    if block > model.config.block_size:
        raise ValueError(f"block-size {block} is larger than the model's context window "
                         f"({model.config.block_size})")
    max_tokens = max_data_tokens or (1_000_000 if source.is_hf else None)
    data = D.prepare(source, tokenizer, Path(cache_dir) if cache_dir else D.DEFAULT_CACHE,
                     0.0 if split == "all" else val_fraction, max_tokens, block)
    batches = D.Batches(data, block, 0, "val" if split == "val" else "train")
    n = len(batches)
    if max_batches:
        n = min(n, max_batches * batch_size)
    if n == 0:
        raise ValueError(f"{data_spec}: the {split} split holds no complete {block}-token sequence; "
                         "use --split all or a smaller --block-size")
    total, count = loss_sums(model, batches, n, batch_size, dev)
    loss = total / count
    return {"model": model_spec, "data": data_spec, "split": split, "loss": loss,
            "perplexity": perplexity(loss), "tokens": int(count), "sequences": n}


def _check_eval_args(split, batch_size, block_size, max_batches, max_data_tokens, val_fraction):
    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be val, train or all, got {split!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch-size must be an integer >= 1, got {batch_size!r}")
    for name, v in (("block-size", block_size), ("max-batches", max_batches),
                    ("max-data-tokens", max_data_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val-fraction must be in (0, 1), got {val_fraction}")
