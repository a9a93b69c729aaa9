"""Checkpoint directories: round trip, run directories, and errors that name the file."""

from __future__ import annotations

import json

import pytest
import torch

from engine.checkpoint import (CheckpointError, find_checkpoint, list_checkpoints, load_checkpoint,
                               save_checkpoint)
from engine.errors import ModelLoadError
from engine.loading import load_model
from conftest import make_model


@pytest.fixture
def saved(tmp_path, bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size)
    path = save_checkpoint(tmp_path / "ckpt", model, bpe_tokenizer, card="# Tiny\nA test model.")
    return path, model


def test_round_trip(saved, bpe_tokenizer):
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    ckpt = load_checkpoint(path)
    idx = torch.randint(0, bpe_tokenizer.vocab_size, (1, 12))
    torch.testing.assert_close(ckpt.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    assert ckpt.model.lm_head.weight is ckpt.model.transformer.wte.weight
    assert ckpt.tokenizer.encode("the cat") == bpe_tokenizer.encode("the cat")
    assert ckpt.card.startswith("# Tiny") and ckpt.config == model.config
    assert load_model(str(path)).config == model.config  # the resolver takes the same path


def test_gpt2_tokenizer_checkpoint_and_dtype(tmp_path, gpt2_tokenizer, tiny_gpt2_model):
    save_checkpoint(tmp_path / "g", tiny_gpt2_model, gpt2_tokenizer)
    ckpt = load_checkpoint(tmp_path / "g", dtype=torch.bfloat16)
    assert ckpt.tokenizer.kind == "gpt2" and ckpt.model.transformer.wte.weight.dtype == torch.bfloat16


def test_run_directory_resolves_to_latest(tmp_path, bpe_tokenizer):
    run = tmp_path / "run"
    for step in (10, 200, 30):
        save_checkpoint(run / "checkpoints" / f"step-{step}", make_model(bpe_tokenizer.vocab_size, seed=step),
                        bpe_tokenizer)
    (run / "checkpoints" / "step-999").mkdir()  # incomplete (a crash mid-save): ignored
    assert [s for s, _ in list_checkpoints(run)] == [10, 30, 200]
    assert find_checkpoint(run).name == "step-200"
    assert load_checkpoint(run).path.name == "step-200"


def test_save_replaces_atomically(saved, bpe_tokenizer):
    path, _ = saved
    other = make_model(bpe_tokenizer.vocab_size, seed=1)
    save_checkpoint(path, other, bpe_tokenizer)
    assert not (path / "README.md").exists()  # the old directory was replaced, not merged
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    x = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(load_checkpoint(path).model(x)[0], other(x)[0])


def expect(path, file, words):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path / file) in msg, msg
    for w in words:
        assert w in msg, msg


def test_missing_files_are_named(saved):
    path, _ = saved
    (path / "model.safetensors").unlink()
    expect(path, "model.safetensors", ["missing"])
    (path / "tokenizer.json").unlink()
    expect(path, "tokenizer.json", ["missing"])
    (path / "tokenizer_config.json").unlink()
    expect(path, "tokenizer_config.json", ["missing"])
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_checkpoint(path / "nope")


def test_truncated_weights_are_named(saved):
    path, _ = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    expect(path, "model.safetensors", ["truncated or corrupt"])
    (path / "model.safetensors").write_bytes(b"")
    expect(path, "model.safetensors", ["cannot be read"])


def test_config_that_does_not_match_the_weights(saved):
    path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["n_embd"] = 64
    (path / "config.json").write_text(json.dumps(cfg))
    expect(path, "model.safetensors", ["shape", "config.json implies"])
    cfg["model"]["n_embd"], cfg["model"]["n_layer"] = 32, 3
    (path / "config.json").write_text(json.dumps(cfg))
    expect(path, "model.safetensors", ["missing tensors transformer.h.2"])
    cfg["model"]["n_layer"], cfg["model"]["vocab_size"] = 2, 100
    (path / "config.json").write_text(json.dumps(cfg))
    expect(path, "tokenizer_config.json", ["tokenizer has 320 tokens", "vocab_size 100"])


def test_bad_config_files_are_named(saved):
    path, _ = saved
    (path / "config.json").write_text('{"format": "gpt-workbench", "format_version": 1, "model": {"n_embd": "x"}}')
    expect(path, "config.json", ["invalid model config"])
    (path / "config.json").write_text('{"format": "gpt-workbench", "format_version": 7, "model": {}}')
    expect(path, "config.json", ["format_version 7 is not supported"])
    (path / "config.json").write_text('{"format": "gpt-workbench", "format_vers')
    expect(path, "config.json", ["not valid JSON"])
    (path / "config.json").write_text('{"n_embd": 32}')
    expect(path, "config.json", ["not a gpt-workbench checkpoint config"])
    (path / "tokenizer_config.json").write_text('{"kind": "sentencepiece"}')
    (path / "config.json").write_text('{"format": "gpt-workbench", "format_version": 1, "model": {}}')
    expect(path, "tokenizer_config.json", ["unknown tokenizer kind 'sentencepiece'"])


def test_nan_weights_are_refused(tmp_path, bpe_tokenizer):
    model = make_model(bpe_tokenizer.vocab_size)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan", model, bpe_tokenizer)
    expect(tmp_path / "nan", "model.safetensors", ["transformer.h.1.mlp.c_fc.weight", "NaN"])


def test_resolver_messages(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file; a model is a directory"):
        load_model(str(tmp_path / "file.txt"))
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model("./does/not/exist")
    with pytest.raises(ModelLoadError, match="no model given"):
        load_model("  ")


def test_saved_files_follow_the_umask_not_private(tmp_path, tiny_model, bpe_tokenizer):
    """mkdtemp/mkstemp/safetensors create private files; a checkpoint must be readable like any
    other directory the user makes (a UI running as another user reads it)."""
    import stat

    from engine.checkpoint import save_checkpoint
    from engine.fileio import current_umask

    path = save_checkpoint(tmp_path / "ck", tiny_model, bpe_tokenizer, card="# card")
    expected_dir = 0o777 & ~current_umask()
    expected_file = 0o666 & ~current_umask()
    assert stat.S_IMODE(path.stat().st_mode) == expected_dir
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == expected_file, f.name
