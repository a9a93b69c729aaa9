"""engine.precision: bf16 and int8 inference close to float32, the choice of precision, the flag,
and the quality gate on the bundled models."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from engine import precision as P
from engine.generation import stream
from engine.loading import ModelCache, load_model
from engine.sampling import SamplingParams
from conftest import make_model
from engine.loading import ROOT


def _logits(model, idx):
    with torch.inference_mode():
        return model(idx)[0].float()


def _trained_like(vocab: int = 257):
    """A tiny model with weights at a trained model's scale (random init's 0.02 makes every
    logit nearly 0, where any rounding looks small)."""
    model = make_model(vocab)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("precision, kernel, tol", [
    ("bf16", None, 0.03), ("int8", "fbgemm", 0.05), ("int8", "int8pack", 0.05)])
def test_reduced_precision_logits_close_to_fp32(precision, kernel, tol, monkeypatch):
    if kernel == "int8pack":  # the fallback for CPUs without FBGEMM (ARM), forced here
        monkeypatch.setattr(P, "fbgemm_available", lambda: False)
    elif kernel == "fbgemm":
        assert P.fbgemm_available()  # x86 CPUs, where the project's figures are measured
    fp32 = _trained_like()
    idx = torch.randint(0, 257, (2, 40), generator=torch.Generator().manual_seed(1))
    ref = _logits(fp32, idx)
    low = P.apply(copy.deepcopy(fp32), precision)
    assert P.precision_of(low) == precision and not low.training
    if precision == "int8":
        assert isinstance(low.lm_head, P.Int8Linear) and low.lm_head.kernel == kernel
        assert low.transformer.wte.weight.dtype == torch.float32  # embeddings stay exact
    out = _logits(low, idx)
    err = (out - ref).abs().max() / ref.abs().max()
    assert err < tol, f"{precision}: max error {err:.4f} of the largest logit"
    assert err > 0  # it really computed in another format
    # Same most-likely token nearly everywhere.
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean()
    assert agree > 0.9, agree


def test_int8_decodes_with_the_cache_and_same_seed_same_text(bpe_tokenizer):
    model = P.apply(_trained_like(bpe_tokenizer.vocab_size), "int8")
    params = SamplingParams(temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=24, seed=5)
    a = stream(model, bpe_tokenizer, "Once upon a time", params)
    text = a.text()
    assert a.stats.new_tokens > 0 and text == stream(model, bpe_tokenizer, "Once upon a time", params).text()
    stop = text[3:6]
    if stop.strip():
        s = stream(model, bpe_tokenizer, "Once upon a time", params.replace(stop=(stop,)))
        assert stop not in s.text() and s.stats.finish_reason == "stop"


def test_check_and_resolve():
    with pytest.raises(ValueError, match=r"precision must be one of auto, fp32, bf16, int8, got 'int4'"):
        P.check("int4")
    assert P.resolve("auto", "cpu") == "int8"
    assert P.resolve("auto", "mps") == "fp32"
    assert P.resolve("fp32", "cpu") == "fp32" and P.resolve("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="'int8' runs on the CPU only, not on cuda"):
        P.resolve("int8", "cuda")


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve("auto", "cuda") == "fp32"


def test_apply_needs_float32_weights():
    model = P.apply(make_model(64), "bf16")
    with pytest.raises(ValueError, match="starts from float32 weights, got torch.bfloat16"):
        P.apply(model, "int8")


def test_loading_takes_a_precision_and_checks_it_first():
    with pytest.raises(ValueError, match="got 'int9'"):
        load_model("no-such-model-anywhere", precision="int9")  # before any lookup
    assert P.precision_of(load_model("story").model) == "fp32"  # the default stays exact
    ckpt = ModelCache(device="cpu", precision="auto").get("story")
    assert P.precision_of(ckpt.model) == "int8"
    with pytest.raises(ValueError, match="not both"):
        load_model("story", dtype=torch.bfloat16, precision="int8")


def test_cli_flag_validation():
    r = subprocess.run([sys.executable, "-m", "engine", "generate", "--model", "story", "--prompt",
                        "x", "--precision", "int4"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "argument --precision: invalid choice: 'int4'" in r.stderr, r.stderr
    assert "'auto', 'fp32', 'bf16', 'int8'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("spec, data", [("story", "data/stories/stories.txt"),
                                        ("python-assistant", "data/python/docs.txt")])
def test_auto_passes_the_quality_gate_on_the_bundled_models(spec, data, tmp_path):
    # The benchmark measures 32 held-out windows of the whole corpus; here the held-out part of
    # the corpus's last 200k characters, 3 windows, to stay quick (tokenizing the whole corpus
    # takes most of 20 s). A broken quantizer moves perplexity by far more than 0.5%.
    text = (ROOT / data).read_text(encoding="utf-8")[-200_000:]
    (tmp_path / "tail.txt").write_text(text, encoding="utf-8")
    r = P.quality_gate(spec, str(tmp_path / "tail.txt"), P.resolve("auto", "cpu"), max_sequences=3,
                       cache_dir=str(tmp_path / "cache"))
    assert r["passed"], r
    assert r["ppl"] != r["fp32_ppl"]
