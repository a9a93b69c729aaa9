"""Hugging Face interop on tiny random models built here: no test touches the network."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from engine import hub
from engine.checkpoint import Checkpoint
from engine.errors import ModelLoadError
from engine.generation import stream
from engine.loading import load_model
from engine.sampling import SamplingParams
from conftest import make_model

HF_TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64)


def hf_model(vocab_size: int = 50257, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, **HF_TINY)).eval()
    with torch.no_grad():  # random biases and LayerNorm weights too, so every tensor is checked
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    model = hf_model()
    model.save_pretrained(path)
    return path, model


def max_diff(ours, theirs, idx) -> float:
    with torch.inference_mode():
        return (ours(idx)[0] - theirs(idx).logits).abs().max().item()


def test_logits_match_transformers(hf_folder):
    path, theirs = hf_folder
    assert (path / "model.safetensors").is_file() and not (path / "tokenizer.json").exists()
    assert hub.is_transformers_folder(path)
    ckpt = load_model(str(path))  # through the resolver, as the CLI and UIs do
    assert ckpt.tokenizer.kind == "gpt2"  # GPT-2 BPE assumed for a 50257-token vocabulary
    idx = torch.randint(0, 50257, (2, 40))
    assert max_diff(ckpt.model, theirs, idx) <= 1e-4


def test_greedy_text_matches_transformers(hf_folder):
    path, theirs = hf_folder
    ckpt = hub.load_transformers_folder(path)
    prompt = ckpt.tokenizer.encode("The quick brown fox")
    s = stream(ckpt.model, ckpt.tokenizer, prompt,
               SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=20))
    text = s.text()
    with torch.inference_mode():
        out = theirs.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20,
                              pad_token_id=50256)
    expected = [t for t in out[0, len(prompt):].tolist() if t != 50256]
    assert s.token_ids == expected and text == ckpt.tokenizer.decode(expected)


def test_pytorch_bin_and_gpt2model_names(tmp_path, hf_folder):
    _, theirs = hf_folder
    folder = tmp_path / "bin"
    folder.mkdir()
    theirs.config.to_json_file(folder / "config.json")
    # GPT2Model-style names (no "transformer." prefix) and the old attention-mask buffers.
    state = {k.removeprefix("transformer."): v for k, v in theirs.state_dict().items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    torch.save(state, folder / "pytorch_model.bin")
    ckpt = hub.load_transformers_folder(folder)
    assert max_diff(ckpt.model, theirs, torch.randint(0, 50257, (1, 16))) <= 1e-4


class Boom:
    def __reduce__(self):  # unpickling this would run code
        return (open, ("/tmp/engine-test-should-not-exist", "w"))


def test_pickled_objects_are_refused(tmp_path, hf_folder):
    _, theirs = hf_folder
    folder = tmp_path / "evil"
    folder.mkdir()
    theirs.config.to_json_file(folder / "config.json")
    torch.save({"x": Boom()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin: refused"):
        hub.load_transformers_folder(folder)
    import os
    assert not os.path.exists("/tmp/engine-test-should-not-exist")


def test_folder_errors_are_clear(tmp_path, hf_folder):
    path, theirs = hf_folder
    small = tmp_path / "small-vocab"
    hf_model(vocab_size=300).save_pretrained(small)
    with pytest.raises(ModelLoadError, match="no tokenizer files .* 300 tokens, not GPT-2's 50257"):
        hub.load_transformers_folder(small)

    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="model_type 'llama' is not supported"):
        load_model(str(other))

    wrong = tmp_path / "wrong-shape"
    wrong.mkdir()
    cfg = json.loads((path / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    (wrong / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match=r"model.safetensors: tensor .* has shape"):
        hub.load_transformers_folder(wrong)
    (wrong / "config.json").write_text(json.dumps(cfg))
    data = (path / "model.safetensors").read_bytes()
    (wrong / "model.safetensors").write_bytes(data[:len(data) // 3])
    with pytest.raises(ModelLoadError, match="model.safetensors: cannot be read"):
        hub.load_transformers_folder(wrong)
    (wrong / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        hub.load_transformers_folder(wrong)


@pytest.mark.parametrize("kind", ["bpe", "gpt2"])
def test_export_round_trip(tmp_path, kind, bpe_tokenizer, gpt2_tokenizer):
    tok = bpe_tokenizer if kind == "bpe" else gpt2_tokenizer
    # A bias-free model: the export writes zero biases, which compute the same function.
    ours = make_model(tok.vocab_size, seed=4, bias=(kind == "gpt2"))
    out = hub.export_transformers(Checkpoint(ours, tok, tmp_path, card="# card"), tmp_path / "out")
    theirs = GPT2LMHeadModel.from_pretrained(out).eval()
    assert max_diff(ours, theirs, torch.randint(0, tok.vocab_size, (1, 30))) <= 1e-4
    hf_tok = AutoTokenizer.from_pretrained(out)
    for text in ("Once upon a time, café 世界", "def add(a, b):\n    return a + b"):
        assert hf_tok(text)["input_ids"] == tok.encode(text)
        assert hf_tok.decode(tok.encode(text)) == text
    assert hf_tok.eos_token_id == tok.eot_id
    back = load_model(str(out))  # and back into the engine
    assert back.tokenizer.kind == kind and back.card == "# card"
    assert max_diff(back.model, theirs, torch.randint(0, tok.vocab_size, (1, 30))) <= 1e-4
    if kind == "gpt2":
        assert hf_tok("Hello world")["input_ids"] == [15496, 995]
        assert (out / "vocab.json").is_file() and (out / "merges.txt").is_file()
    # An earlier export is replaced as a whole: the new weights, and nothing left of the old.
    other = make_model(tok.vocab_size, seed=5, bias=(kind == "gpt2"))
    (out / "stale.txt").write_text("from the earlier export")
    hub.export_transformers(Checkpoint(other, tok, tmp_path, card="# other"), out)
    again = GPT2LMHeadModel.from_pretrained(out).eval()
    idx = torch.randint(0, tok.vocab_size, (1, 30))
    assert max_diff(other, again, idx) <= 1e-4 and max_diff(ours, again, idx) > 1e-2
    assert not (out / "stale.txt").exists() and (out / "README.md").read_text() == "# other"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        hub.export_transformers(back, tmp_path / "busy")


CONVERSATIONS = [
    [{"role": "user", "content": "How do I reverse a list?"}],
    [{"role": "system", "content": " Answer briefly. "},
     {"role": "user", "content": "What is a dict?"},
     {"role": "assistant", "content": "A mapping.\n"},
     {"role": "user", "content": "  And a set?"}, {"role": "user", "content": "Quickly."}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},  # no answer
     {"role": "user", "content": "café 世界 'quotes' \\ {{ braces }}"},
     {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}],
]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_exported_chat_template_renders_our_prompts(tmp_path, bpe_tokenizer, conversation):
    """transformers' apply_chat_template on the exported folder gives exactly the prompt the
    engine builds (engine.assistant.build_prompt over engine.templates), so vLLM and llama.cpp
    prompt the model as it was tuned."""
    from engine.assistant import build_prompt

    out = hub.export_transformers(Checkpoint(make_model(bpe_tokenizer.vocab_size), bpe_tokenizer,
                                             tmp_path), tmp_path / "out")
    hf_tok = AutoTokenizer.from_pretrained(out)
    system = "\n\n".join(m["content"] for m in conversation if m["role"] == "system")
    turns = [m for m in conversation if m["role"] != "system"]
    ours, _ = build_prompt(turns, bpe_tokenizer, 10**6, 1, system=system)
    assert hf_tok.apply_chat_template(conversation, tokenize=False,
                                      add_generation_prompt=True) == ours
    # Without the generation prompt the response header is left for the caller.
    bare = hf_tok.apply_chat_template(conversation, tokenize=False)
    assert bare + "### Response:\n" == ours


def test_hub_id_offline_gives_a_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never the network
    with pytest.raises(ModelLoadError) as err:
        hub.load_from_hub("gpt2", cache_dir=tmp_path)
    msg = str(err.value)
    assert "cannot fetch the Hugging Face Hub model 'gpt2'" in msg and "local cache" in msg
    with pytest.raises(ModelLoadError, match="not a local directory, a bundled model, or a valid hub id"):
        hub.load_from_hub("not a valid id!", cache_dir=tmp_path)


def test_hub_id_uses_the_cache(tmp_path, monkeypatch, hf_folder):
    """A model already in huggingface_hub's cache loads offline (laid out as the hub would)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path, theirs = hf_folder
    commit = "0" * 40
    repo = tmp_path / "models--someone--tiny-gpt2"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in ("config.json", "model.safetensors"):
        (snap / f).write_bytes((path / f).read_bytes())
    ckpt = hub.load_from_hub("someone/tiny-gpt2", cache_dir=tmp_path)
    assert max_diff(ckpt.model, theirs, torch.randint(0, 50257, (1, 8))) <= 1e-4


def test_to_transformers_holds_the_same_function(tiny_gpt2_model):
    """The in-memory conversion the benchmarks compare against: same logits, tied head."""
    import torch

    from engine.hub import to_transformers

    hf = to_transformers(tiny_gpt2_model, eot_id=50256)
    assert not hf.training  # follows the source model's mode (eval here)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    x = torch.randint(0, 50257, (2, 12))
    with torch.inference_mode():
        diff = (tiny_gpt2_model(x)[0] - hf(x).logits).abs().max().item()
    assert diff <= 1e-4
