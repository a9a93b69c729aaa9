"""Bits per byte (engine/evaluate.py): the loss in nats of the evaluated target tokens over ln 2
times the UTF-8 bytes they decode to, the end-of-text token left out; checked by hand."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.__main__ import main
from engine.data import Batches, TokenData
from engine.evaluate import loss_sums, token_byte_counts
from engine.metrics import read_metrics


def test_token_byte_counts_are_the_utf8_lengths_and_zero_for_end_of_text(bpe_tokenizer, gpt2_tokenizer):
    for tok in (bpe_tokenizer, gpt2_tokenizer):
        counts = token_byte_counts(tok)
        assert counts.shape == (tok.vocab_size,) and int(counts[tok.eot_id]) == 0
        ids = tok.encode("The cat sat in the café.")
        assert int(counts[ids].sum()) == len("The cat sat in the café.".encode("utf-8"))


def test_bits_per_byte_matches_a_hand_computation(bpe_tokenizer, tiny_model):
    tok, T = bpe_tokenizer, 16
    text = "Once upon a time there was a little cat. The dog ran to the park with a red ball."
    ids = tok.encode(text) + [tok.eot_id] + tok.encode(" The cat liked the sun all day long, café.")
    windows = (len(ids) - 1) // T
    data = TokenData(train=np.array(ids, dtype=np.int64), val=np.zeros(0, dtype=np.int64),
                     meta={}, path=None)
    sums = loss_sums(tiny_model, Batches(data, T, 0, "train"), windows, 2, torch.device("cpu"),
                     token_byte_counts(tok))

    # By hand: every window's next-token losses; the text the targets decode to, in bytes.
    nats_all, nats_text, targets = 0.0, 0.0, []
    with torch.no_grad():
        for w in range(windows):
            x = torch.tensor([ids[w * T:w * T + T]])
            y = ids[w * T + 1:w * T + T + 1]
            logp = F.log_softmax(tiny_model(x)[0][0].float(), dim=-1)
            for pos, target in enumerate(y):
                nats_all -= float(logp[pos, target])
                if target != tok.eot_id:
                    nats_text -= float(logp[pos, target])
            targets += y
    assert tok.eot_id in targets  # the end-of-text token was scored, and is left out of bpb
    decoded = tok.decode(t for t in targets if t != tok.eot_id)
    assert "\ufffd" not in decoded
    n_bytes = len(decoded.encode("utf-8"))
    assert sums.count == len(targets) and sums.text_bytes == n_bytes
    assert sums.loss == pytest.approx(nats_all / len(targets), rel=1e-5)
    assert sums.bpb == pytest.approx(nats_text / (math.log(2) * n_bytes), rel=1e-5)


def test_training_logs_the_bits_per_byte_that_engine_eval_reports(tmp_path, capsys):
    words = "the fox ran to a river and saw fish in cold water while birds sang over old trees".split()
    rng = random.Random(0)
    (tmp_path / "c.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) + "."
                                              for _ in range(300)), encoding="utf-8")
    common = ["--data", str(tmp_path / "c.txt"), "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", "--out", str(tmp_path / "r"), "--n-layer", "2", "--n-head", "2",
                 "--n-embd", "32", "--block-size", "32", "--tokenizer", "bpe", "--vocab-size", "300",
                 "--batch-size", "4", "--max-steps", "3", "--eval-every", "3", "--eval-batches", "50",
                 "--no-progress", *common]) == 0
    assert "bits/byte" in capsys.readouterr().out
    val = [e for e in read_metrics(tmp_path / "r" / "metrics.jsonl") if e["type"] == "eval"][-1]
    assert main(["eval", "--model", str(tmp_path / "r"), "--batch-size", "4", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpb"] == pytest.approx(val["val_bpb"], abs=1e-4)
    assert result["loss"] / result["bpb"] == pytest.approx(math.log(2) * result["bytes"] / result["tokens"], rel=0.05)
    assert "bits per byte" in (tmp_path / "r" / "checkpoints" / "best" / "README.md").read_text()
    # --samples: the words of the samples against the words of the data
    assert main(["eval", "--model", str(tmp_path / "r"), "--batch-size", "4", "--samples", "2",
                 *common]) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out and "occur in the data" in out and "word 4-grams repeat" in out
