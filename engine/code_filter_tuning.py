"""Fine-tuning the code filter's own copy of the sentence model's top layers.

The head's second regression (code_filter_model.DecisionHead) reads the encoder's pooled vectors
after layers 3 and 4 and after the last one. all-MiniLM-L6-v2 was trained to place sentences by
topic, so on its own its last layers do not separate "how do I list the files in a folder" from
"how do I clear out a folder of old photos" as well as they could. Here the top two layers (4
and 5, a copy: the docs retrieval keeps the originals) are trained together with the regression
on the same labelled rows, starting from the regression the plain fit found, so before the
first step it decides as the untuned head does (up to float16 rounding). Layers 0-3 stay shared
and frozen, so their states are computed once. The tuned layers are stored in float16 (about
7 MB, code_filter_model.TUNED_FILE), and every
decision reported in training is made with the rounded weights, and on an int8 encoder with int8
products one text at a time, as in use (the layers train in float32: int8 has no gradients).

Chosen by 5-fold cross-validation of the whole filter on the training rows (round 7, 3,610
rows: untuned head 97.15%; tuned 3 epochs at learning rate 2e-5 97.40%, at 5e-5 97.59%; round 8,
4,089 rows: layers 4-5 97.48%, layers 3-5 97.65%, not taken for 3.5 MB and a layer more per
message; docs/assistant.md, Rounds 7 and 8).
"""

from __future__ import annotations

import random
from typing import Sequence

START = 4  # the first tuned layer; the ones before it are shared with the docs retrieval
EPOCHS = 3
LR = 5e-5  # the layers'; the regression's weights move at ten times this
BATCH = 32


def frozen_states(encoder, texts: Sequence[str], start: int = START) -> dict:
    """text -> its token states after the first `start` layers, (n_tokens, 384): the tuned
    layers' input, which does not change while they train."""
    import torch

    out = {}
    step = 1 if encoder.int8 else 64  # an int8 encoder reads one text at a time, as it does in use
    with torch.no_grad():  # not inference_mode: these states are saved for backward later
        for i in range(0, len(texts), step):
            chunk = texts[i:i + step]
            x, mask = encoder.embed_tokens(chunk)
            for layer in range(start):
                x = encoder.layer(x, mask, encoder.w, layer, encoder.q)
            for j, text in enumerate(chunk):
                out[text] = x[j, :int(mask[j].sum())].clone()
    return out


def _batch(texts: Sequence[str], states: dict):
    import torch

    n = max(len(states[t]) for t in texts)
    x = torch.zeros(len(texts), n, states[texts[0]].shape[-1])
    mask = torch.zeros(len(texts), n, dtype=torch.bool)
    for i, t in enumerate(texts):
        x[i, :len(states[t])] = states[t]
        mask[i, :len(states[t])] = True
    return x, mask


def tuned_outputs(encoder, layers, texts: Sequence[str], states: dict):
    """The tuned layers' pooled output for each text, (len(texts), 384)."""
    import torch

    outs = []
    step = 1 if encoder.int8 else 64
    with torch.no_grad():
        for i in range(0, len(texts), step):
            x, mask = _batch(texts[i:i + step], states)
            for layer in range(layers.start, encoder.n_layer):
                x = encoder.layer(x, mask, layers.w, layer, layers.int8() if encoder.int8 else None)
            outs.append(encoder.pool(x, mask))
    return torch.cat(outs)


def tune(encoder, texts: Sequence[str], features, frozen, y, init: tuple, states: dict | None = None,
         epochs: int = EPOCHS, lr: float = LR, seed: int = 0, start: int = START):
    """Train copies of layers start.. (default START) together with the regression logit = features @ wf +
    [frozen, tuned output] @ we + b, from init = (wf, we, b) (the plain fit, whose we ends with
    the weights of the last layer's vector: the tuned layers start as copies of those layers).
    features (N, F), frozen (N, 384 * k): the other pooled vectors the regression reads; y (N,)
    0/1. Returns (TunedLayers with float16-rounded weights, (wf, we, b) as float64 tensors and a
    float, the training logits with the rounded weights)."""
    import torch
    import torch.nn.functional as F

    from .code_filter_model import TunedLayers

    states = states if states is not None else frozen_states(encoder, list(dict.fromkeys(texts)), start)
    torch.manual_seed(seed)
    layers = {k: torch.nn.Parameter(v.clone()) for k, v in encoder.w.items()
              if k.startswith("encoder.layer.") and int(k.split(".")[2]) >= start}
    wf, we, b = (torch.nn.Parameter(torch.as_tensor(t, dtype=torch.float32).clone()) for t in init)
    features, frozen, y = (torch.as_tensor(t, dtype=torch.float32) for t in (features, frozen, y))
    opt = torch.optim.AdamW([{"params": list(layers.values()), "lr": lr},
                             {"params": [wf, we, b], "lr": lr * 10}], weight_decay=0.0)
    order = list(range(len(texts)))
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in range(0, len(order), BATCH):
            rows = order[i:i + BATCH]
            x, mask = _batch([texts[r] for r in rows], states)
            for layer in range(start, encoder.n_layer):
                x = encoder.layer(x, mask, layers, layer)
            emb = torch.cat([frozen[rows], encoder.pool(x, mask)], 1)
            logit = features[rows] @ wf + emb @ we + b
            loss = F.binary_cross_entropy_with_logits(logit, y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    tuned = TunedLayers({k: v.detach().to(torch.float16).float() for k, v in layers.items()}, start)
    out = tuned_outputs(encoder, tuned, texts, states)
    wf, we, b = wf.detach().double(), we.detach().double(), float(b.detach())
    logits = features.double() @ wf + torch.cat([frozen.double(), out.double()], 1) @ we + b
    return tuned, (wf, we, b), logits
