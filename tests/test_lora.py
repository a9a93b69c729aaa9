"""engine.lora and LoRA runs: adapters that start as the identity and merge exactly, runs whose
checkpoints hold only the adapters and name their base, loading base + adapter wherever a model
is accepted, resume, and export with the adapter merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_model
from engine import hub
from engine.checkpoint import CheckpointError, list_checkpoints
from engine.loading import load_model
from engine.lora import LoRASpec, adapter_state, add_adapters, merge_adapters
from engine.metrics import read_metrics
from engine.train import train
from engine.train_config import resolve_config
from test_train import tiny


def test_adapters_start_as_the_base_and_merge_exactly(bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size)
    x = torch.randint(0, bpe_tokenizer.vocab_size, (2, 16))
    with torch.no_grad():
        before = model(x)[0]
    total = sum(p.numel() for p in model.parameters())
    trainable = add_adapters(model, LoRASpec(4, 8, ("c_attn", "c_proj")))
    # Two layers x (c_attn 32->96, attn.c_proj 32->32, mlp.c_proj 128->32), rank 4.
    assert trainable == 2 * 4 * ((32 + 96) + (32 + 32) + (128 + 32)) < total / 10
    assert [n for n, p in model.named_parameters() if p.requires_grad] == list(adapter_state(model))
    with torch.no_grad():
        assert torch.equal(model(x)[0], before)  # B starts at zero
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(0, 0.1)
        tuned = model(x)[0]
    assert not torch.allclose(tuned, before, atol=1e-3)
    merge_adapters(model)
    assert not adapter_state(model) and "attn.c_attn.weight" in "".join(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(x)[0], tuned, atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    (dict(rank=0, alpha=8), "lora-rank must be a whole number"),
    (dict(rank=4, alpha=0), "lora-alpha must be a number above 0"),
    (dict(rank=4, alpha=8, targets="c_attn,lm_head"), "lora-targets must name some of"),
])
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        LoRASpec(**spec)


def test_lora_needs_a_base_model(tmp_path):
    with pytest.raises(ValueError, match="lora-rank needs --init-from"):
        tiny(tmp_path, lora_rank=4).validate()


def test_a_lora_run_saves_adapters_that_load_merge_resume_and_export(tmp_path):
    train(tiny(tmp_path, out=str(tmp_path / "base"), max_steps=2), progress=False)
    base = load_model(str(tmp_path / "base"))
    cfg = tiny(tmp_path, out=str(tmp_path / "lora"), init_from=str(tmp_path / "base"),
               lora_rank=4, lora_alpha=8.0, lora_targets="c_attn,c_fc", lr=3e-2, max_steps=4,
               save_every=2)
    train(cfg, progress=False)
    step = list_checkpoints(tmp_path / "lora")[-1][1]
    assert not (step / "model.safetensors").exists()
    info = json.loads((step / "adapter.json").read_text())
    assert info == {"base": str((tmp_path / "base").resolve()), "rank": 4, "alpha": 8.0,
                    "targets": ["c_attn", "c_fc"]}
    full = (list_checkpoints(tmp_path / "base")[-1][1] / "model.safetensors").stat().st_size
    assert (step / "adapter.safetensors").stat().st_size < full / 4
    assert (tmp_path / "lora" / "checkpoints" / "best" / "adapter.json").is_file()

    # Loading the run gives the base with the adapters merged: the targeted weights moved,
    # every other weight is the base's.
    tuned = load_model(str(tmp_path / "lora"))
    ours, theirs = tuned.model.state_dict(), base.model.state_dict()
    assert set(ours) == set(theirs)
    changed = {k for k in ours if not torch.equal(ours[k], theirs[k])}
    assert changed and all(k.endswith(("c_attn.weight", "c_fc.weight")) for k in changed)

    # Resume continues the adapters (the optimizer holds their state only).
    train(tiny(tmp_path, out=str(tmp_path / "lora"), init_from=str(tmp_path / "base"),
               lora_rank=4, lora_alpha=8.0, lora_targets="c_attn,c_fc", lr=3e-2, max_steps=6,
               save_every=2), resume=True, progress=False)
    steps = [e["step"] for e in read_metrics(tmp_path / "lora" / "metrics.jsonl")
             if e["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]

    # Export writes the merged model: transformers computes what the engine does.
    from transformers import GPT2LMHeadModel

    tuned = load_model(str(tmp_path / "lora"))
    out = hub.export_transformers(tuned, tmp_path / "export")
    x = torch.randint(0, tuned.tokenizer.vocab_size, (1, 20))
    with torch.no_grad():
        theirs = GPT2LMHeadModel.from_pretrained(out).eval()(x).logits
        assert torch.allclose(tuned.model(x)[0], theirs, atol=1e-4)


def test_an_adapter_whose_base_is_gone_says_so(tmp_path):
    train(tiny(tmp_path, out=str(tmp_path / "base"), max_steps=2), progress=False)
    train(tiny(tmp_path, out=str(tmp_path / "lora"), init_from=str(tmp_path / "base"),
               lora_rank=2, max_steps=2), progress=False)
    (tmp_path / "base").rename(tmp_path / "moved")
    with pytest.raises(CheckpointError, match="adapter.json: its base model .* cannot be loaded"):
        load_model(str(tmp_path / "lora"))
    # A full fine-tuning run cannot resume from an adapter checkpoint (or the reverse).
    with pytest.raises(ValueError, match="cannot change lora-rank"):
        resolve_config({"out": str(tmp_path / "lora"), "lora_rank": 0}, resume=True)
