"""The GPT-2 model: named shapes, parameter count, init, loss, causality."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.config import GPTConfig, shape
from engine.model import GPT
from conftest import make_model


def test_model_shapes_and_gpt2_parameter_count():
    small = shape("small")
    assert (small.n_layer, small.n_head, small.n_embd, small.block_size) == (4, 4, 256, 512)
    with torch.device("meta"):  # no memory: only shapes matter here
        gpt2 = GPT(shape("gpt2-124m"))
    # The figure transformers reports for GPT2LMHeadModel("gpt2") (tied head counted once).
    assert gpt2.num_params() == 124_439_808
    assert gpt2.num_params(non_embedding=True) == 124_439_808 - 1024 * 768
    with pytest.raises(ValueError, match="unknown model shape 'gpt5'"):
        shape("gpt5")


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer must be a positive integer, got 0"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="unknown config keys: colour"):
        GPTConfig.from_dict({"colour": 1})


def test_tied_head_and_gpt2_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=6, n_head=4, n_embd=256))
    assert model.lm_head.weight is model.transformer.wte.weight
    resid = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h]
                      + [b.mlp.c_proj.weight.flatten() for b in model.transformer.h])
    other = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert resid.std().item() == pytest.approx(0.02 / math.sqrt(2 * 6), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(b.attn.c_attn.bias.abs().sum() == 0 for b in model.transformer.h)


def test_forward_shapes_loss_and_last_only():
    model = make_model(100)
    idx = torch.randint(0, 100, (2, 10))
    logits, loss = model(idx)
    assert logits.shape == (2, 10, 100) and loss is None
    last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, 100)
    torch.testing.assert_close(last[:, 0], logits[:, -1])
    targets = torch.randint(0, 100, (2, 10))
    targets[0, :4] = -100  # ignored positions
    _, loss = model(idx, targets)
    keep = targets.view(-1) != -100
    expected = F.cross_entropy(logits.view(-1, 100)[keep], targets.view(-1)[keep])
    torch.testing.assert_close(loss, expected)


def test_causal_future_tokens_do_not_change_the_past():
    model = make_model(100)
    a = torch.randint(0, 100, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 100
    la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :8], lb[:, :8])
    assert not torch.allclose(la[:, 8:], lb[:, 8:])


def test_too_long_input_is_a_clear_error():
    model = make_model(100)  # block_size 64
    with pytest.raises(ValueError, match="sequence of 65 tokens exceeds the context window of 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_bias_free_model_and_training_step():
    model = make_model(100, bias=False).train()
    assert model.transformer.h[0].attn.c_attn.bias is None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, 100, (4, 16))
    losses = []
    for _ in range(5):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # memorises the batch: gradients flow through every part


def test_dropout_only_in_training():
    model = make_model(100, dropout=0.5)
    idx = torch.randint(0, 100, (1, 8))
    torch.testing.assert_close(model(idx)[0], model(idx)[0])  # eval: deterministic
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])
