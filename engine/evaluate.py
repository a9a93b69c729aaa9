"""Evaluation: validation loss, perplexity and bits per byte, and the samples a run logs.

    evaluate_model("runs/story", "data/story")   # python -m engine eval: any model, any data
    validation_loss(model, batches, ...)         # what the training loop logs as val_loss, val_bpb
    sample_text(model, tokenizer, prompt, ...)   # the text a run logs and puts in its model card

The loss is the mean cross-entropy per target token (response tokens only for instruction data,
as in training): each batch's mean is weighted by its token count, so batches of different
lengths add up to the mean over all tokens.

Bits per byte (bpb) compares models whose tokenizers differ (a per-token loss does not: a bigger
vocabulary packs more text in a token). As in nanochat it is measured on the evaluated tokens
themselves: the summed loss in nats of the target tokens over ln 2 times the UTF-8 bytes those
tokens decode to. The end-of-text token decodes to no text, so it is left out of both sums.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data as D
from .device import pick_device
from .distributed import Dist
from .tokenizer import Tokenizer


def perplexity(loss: float) -> float:
    """exp(loss), capped at exp(50) so an untrained model's figure stays a finite number."""
    return math.exp(min(loss, 50))


@dataclass
class LossSums:
    """Sums over evaluated target tokens; add the sums of several processes for the total."""
    total: float = 0.0  # nats, all target tokens
    count: float = 0.0  # target tokens
    text_nats: float = 0.0  # nats of the target tokens that decode to text (not end-of-text)
    text_bytes: float = 0.0  # UTF-8 bytes those tokens decode to

    @property
    def loss(self) -> float:
        return self.total / self.count

    @property
    def bpb(self) -> float:
        """Bits per byte: nats / (ln 2 * bytes)."""
        return self.text_nats / (math.log(2) * self.text_bytes) if self.text_bytes else float("nan")


@functools.lru_cache(maxsize=8)
def token_byte_counts(tokenizer: Tokenizer) -> torch.Tensor:
    """The UTF-8 length of each token id's text (int64, by id); 0 for the end-of-text token."""
    counts = [len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)]
    counts[tokenizer.eot_id] = 0
    return torch.tensor(counts, dtype=torch.int64)


def loss_sums(model: torch.nn.Module, batches: D.Batches, n: int, batch_size: int,
              device: torch.device, byte_counts: torch.Tensor, autocast=None, rank: int = 0,
              world: int = 1) -> LossSums:
    """Loss sums over the first n items of `batches`, in their fixed order. Process `rank` of
    `world` takes every world-th batch; add the sums of all processes for the total.
    model(x) -> (logits, _), as GPT.forward; the caller sets eval/train mode. byte_counts:
    token_byte_counts(tokenizer) of the data's tokenizer."""
    s = LossSums()
    byte_counts = byte_counts.to(device)
    with torch.no_grad():
        for start in range(rank * batch_size, n, batch_size * world):
            x, y = batches.take(start, min(batch_size, n - start), shuffle=False)
            x, y = x.to(device), y.to(device)
            with autocast or contextlib.nullcontext():
                logits, _ = model(x)
            targets = y.reshape(-1)
            token_nats = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets,
                                         ignore_index=-100, reduction="none")  # 0 where ignored
            s.total += float(token_nats.sum())
            s.count += int((targets != -100).sum())
            nbytes = torch.where(targets == -100, 0, byte_counts[targets.clamp(min=0)])
            s.text_nats += float((token_nats * (nbytes > 0)).sum())
            s.text_bytes += int(nbytes.sum())
    return s


def validation_loss(model: torch.nn.Module, batches: D.Batches, max_items: int, batch_size: int,
                    dist: Dist, byte_counts: torch.Tensor, autocast=None) -> LossSums | None:
    """Loss sums over the first max_items validation items, added up over the processes (.loss,
    .bpb); None when there is nothing to evaluate. The model is put back in training mode."""
    n = min(len(batches), max_items)
    if n == 0:
        return None
    model.eval()
    try:
        s = loss_sums(model, batches, n, batch_size, dist.device, byte_counts, autocast,
                      dist.rank, dist.world)
    finally:
        model.train()
    total = LossSums(*dist.all_sum([s.total, s.count, s.text_nats, s.text_bytes]))
    return total if total.count else None


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
                   max_data_tokens: int = 0, cache_dir: str = "", device: str = "auto",
                   samples: int = 0, sample_prompt: str = "", text_metrics: int = 0,
                   text_params=None) -> dict:
    """Mean cross-entropy (response tokens only for instruction data), perplexity and bits per
    byte of a model (any spec engine.loading.load_model takes) on data (any --data of training).
    The "val" split is the one training holds out with the same val_fraction. samples > 0 adds
    engine.sample_quality's figures ("sample_quality") for that many seeded samples, scored
    against the words of the whole data. text_metrics > 0 adds engine.text_metrics' BLEU and
    ROUGE-L ("text_metrics") of responses to that many examples, sampled with text_params, from
    the same loaded model. Bad arguments raise ValueError before any model is loaded."""
    from .loading import load_model
    from . import sample_quality as SQ

    _check_eval_args(split, batch_size, block_size, max_batches, max_data_tokens, val_fraction)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples must be an integer >= 0, got {samples!r}")
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
    s = loss_sums(model, batches, n, batch_size, dev, token_byte_counts(tokenizer))
    result = {"model": model_spec, "data": data_spec, "split": split, "loss": s.loss,
            "perplexity": perplexity(s.loss), "bpb": s.bpb, "tokens": int(s.count),
            "bytes": int(s.text_bytes), "sequences": n}
    if samples:
        vocab = SQ.corpus_words(D.tokenizer_corpus(source))
        quality = SQ.sample_quality(model, tokenizer, vocab, samples, sample_prompt or SQ.DEFAULT_PROMPT)
        result["sample_quality"] = quality.to_dict()
    if text_metrics:
        from .text_metrics import response_scores

        result["text_metrics"] = response_scores(
            ckpt, data_spec, split=split, val_fraction=val_fraction, max_examples=text_metrics,
            params=text_params, block_size=block_size)
    return result


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
