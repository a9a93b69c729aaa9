"""The checkpoint directory format, the one way models are stored.

    config.json             {"format": "gpt-workbench", "format_version": 1, "model": {GPTConfig}}
    model.safetensors       weights (the tied LM head is stored once, as transformer.wte.weight)
    tokenizer_config.json   {"kind": "gpt2"} or {"kind": "bpe"} (+ tokenizer.json for "bpe")
    README.md               optional model card
    adapter.json            a LoRA adapter instead of model.safetensors: {"base": <model spec>,
    adapter.safetensors     "rank", "alpha", "targets"} and the adapters' tensors (engine.lora);
                            loading one loads the base and merges the adapter into it

Nothing here unpickles: weights are safetensors, everything else JSON. Every problem raises a
CheckpointError naming the file and what is wrong. Writes are atomic (see fileio.py).

A training run directory holds checkpoints under <run>/checkpoints/step-<N>/ (and
<run>/checkpoints/best/); find_checkpoint() resolves a run directory to its latest one.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import GPTConfig
from .fileio import atomic_directory, atomic_write_text, save_safetensors
from .lora import LoRASpec, adapter_state, add_adapters, has_adapters, load_adapter_state, \
    merge_adapters
from .model import GPT
from .tokenizer import BPETokenizer, GPT2Tokenizer, Tokenizer

log = logging.getLogger(__name__)

FORMAT = "gpt-workbench"
FORMAT_VERSION = 1
TIED_KEY = "lm_head.weight"
ADAPTER_FILE, ADAPTER_WEIGHTS = "adapter.json", "adapter.safetensors"


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, or does not match the model it describes."""


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: Tokenizer
    path: Path
    card: str = ""
    # What the model was trained to use at chat time: "python-docs" when its prompts carry
    # documentation passages (engine.assistant grounds its answers); "" for a plain model.
    grounding: str = ""

    @property
    def config(self) -> GPTConfig:
        return self.model.config


def is_checkpoint(path: Path | str) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


_STEP = re.compile(r"^step-(\d+)$")


def list_checkpoints(run_dir: Path | str) -> list[tuple[int, Path]]:
    """(step, path) of the complete step checkpoints in a run directory, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for child in root.iterdir():
            m = _STEP.match(child.name)
            if m and is_checkpoint(child):
                found.append((int(m.group(1)), child))
    return sorted(found)


def find_checkpoint(path: Path | str) -> Path:
    """A checkpoint directory itself, or the latest complete checkpoint of a run directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if is_checkpoint(path):
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1][1]
    if (path / "config.json").is_file():
        read_config(path)  # raises the precise problem (invalid JSON, wrong format, version)
        raise CheckpointError(f"{path / 'config.json'}: not a {FORMAT} checkpoint config")
    raise CheckpointError(f"{path}: not a checkpoint directory (no config.json) and not a "
                          "training run with complete checkpoints")


def save_checkpoint(path: Path | str, model: GPT, tokenizer: Tokenizer, card: str | None = None,
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a checkpoint directory atomically. extra_files: name -> bytes (e.g. trainer state).
    A model with LoRA adapters is saved as its adapters alone: extra_files must then hold
    adapter.json (its base and LoRASpec, engine.lora)."""
    path = Path(path)
    adapters = has_adapters(model)
    if adapters and ADAPTER_FILE not in (extra_files or {}):
        raise ValueError(f"{path}: a model with LoRA adapters needs {ADAPTER_FILE} (its base)")
    with atomic_directory(path) as tmp:
        config = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "model": model.config.to_dict()}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if adapters:
            save_safetensors(adapter_state(model), tmp / ADAPTER_WEIGHTS)
        else:
            state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
                     if k != TIED_KEY}
            save_safetensors(state, tmp / "model.safetensors")
        tokenizer.save(tmp)
        if card:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return path


def read_config(path: Path) -> GPTConfig:
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (is {path} a checkpoint directory?)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a {FORMAT} checkpoint config (a transformers "
                              "folder has model_type in it and is loaded through engine.hub)")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file}: format_version {data.get('format_version')!r} is not "
                              f"supported (this engine reads version {FORMAT_VERSION})")
    try:
        return GPTConfig.from_dict(data.get("model") or {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: invalid model config: {e}") from None


def read_tokenizer(path: Path) -> Tokenizer:
    file = path / "tokenizer_config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        kind = json.loads(file.read_text(encoding="utf-8")).get("kind")
    except (UnicodeDecodeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise CheckpointError(f"{tok_file}: missing (tokenizer_config.json says kind 'bpe')")
        try:
            return BPETokenizer.from_file(tok_file)
        except Exception as e:  # the tokenizers library raises its own Exception type
            raise CheckpointError(f"{tok_file}: cannot be read as a tokenizer ({e})") from None
    raise CheckpointError(f"{file}: unknown tokenizer kind {kind!r} (expected 'gpt2' or 'bpe')")


def read_weights(file: Path, model: GPT) -> None:
    """Load safetensors weights into model, checking every name and shape."""
    state = _read_tensors(file)
    expected = {k: v for k, v in model.state_dict().items() if k != TIED_KEY}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {TIED_KEY})
    if missing:
        raise CheckpointError(f"{file}: missing tensors {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        raise CheckpointError(f"{file}: unexpected tensors {', '.join(unexpected[:5])}"
                              " (does config.json match these weights?)")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{file}: tensor {name} has shape {tuple(state[name].shape)}, config.json "
                f"implies {tuple(tensor.shape)}")
        if not torch.isfinite(state[name]).all():
            raise CheckpointError(f"{file}: tensor {name} contains NaN or infinity")
    state.pop(TIED_KEY, None)
    model.load_state_dict(state, strict=False)  # lm_head.weight is tied to wte


def read_checkpoint_weights(path: Path, model: GPT) -> None:
    """Load a checkpoint directory's weights into model: model.safetensors, or for an adapter
    checkpoint its adapters (model must carry the same adapters, as a LoRA run's does)."""
    if (path / ADAPTER_FILE).is_file():
        if not has_adapters(model):
            raise CheckpointError(f"{path}: holds a LoRA adapter, but this run trains the whole "
                                  "model")
        file = path / ADAPTER_WEIGHTS
        try:
            load_adapter_state(model, _read_tensors(file), str(file))
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        return
    read_weights(path / "model.safetensors", model)


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: cannot be read, truncated or corrupt? ({e})") from None


def _load_adapter(path: Path, config: GPTConfig, device, dtype) -> GPT:
    """The base model named in adapter.json with the adapter merged in (float32 until merged)."""
    from .errors import ModelLoadError
    from .loading import load_model

    file = path / ADAPTER_FILE
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        spec = LoRASpec(info["rank"], info["alpha"], tuple(info["targets"]))
        base_spec = info["base"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{file}: not a valid adapter config ({e})") from None
    try:
        model = load_model(base_spec, device="cpu").model.float()
    except (ModelLoadError, CheckpointError) as e:
        raise CheckpointError(f"{file}: its base model {base_spec!r} cannot be loaded: {e}") \
            from None
    shape = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
    if any(getattr(model.config, k) != getattr(config, k) for k in shape):
        raise CheckpointError(f"{file}: the base model {base_spec!r} does not have the shape "
                              f"in {path / 'config.json'} (was it replaced?)")
    add_adapters(model, spec)
    read_checkpoint_weights(path, model)
    return merge_adapters(model).to(device=device, dtype=dtype).eval()


def load_checkpoint(path: Path | str, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> Checkpoint:
    """Load a checkpoint directory, or a run directory's latest readable checkpoint (a newest
    one that cannot be read, say truncated by a full disk, is skipped with a warning)."""
    path = Path(path)
    steps = [p for _, p in reversed(list_checkpoints(path))] if path.is_dir() and \
        not is_checkpoint(path) else []
    for i, step in enumerate(steps):
        try:
            return _load_directory(step, device, dtype)
        except CheckpointError as e:
            if i == len(steps) - 1:
                raise CheckpointError(f"{path}: none of its {len(steps)} checkpoints can be "
                                      f"read; the oldest: {e}") from None
            log.warning("skipping checkpoint %s: %s", step, e)
    return _load_directory(find_checkpoint(path), device, dtype)


def _load_directory(path: Path, device, dtype) -> Checkpoint:
    config = read_config(path)
    tokenizer = read_tokenizer(path)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{path / 'tokenizer_config.json'}: tokenizer has {tokenizer.vocab_size} tokens but "
            f"config.json says vocab_size {config.vocab_size}")
    if (path / ADAPTER_FILE).is_file():
        model = _load_adapter(path, config, device, dtype)
    else:
        with torch.device("meta"):
            model = GPT(config)
        model = model.to_empty(device="cpu")
        model.lm_head.weight = model.transformer.wte.weight
        read_weights(path / "model.safetensors", model)
        model.to(device=device, dtype=dtype).eval()
    card_file = path / "README.md"
    card = card_file.read_text(encoding="utf-8", errors="replace") if card_file.is_file() else ""
    grounding = read_grounding(path)
    if grounding:
        # A grounded model's answers hold their inline names to the sources (engine.inline_code):
        # index the vocabulary now, with the model's loading, not inside the first answer.
        from .inline_code import prepare
        prepare(tokenizer)
    return Checkpoint(model=model, tokenizer=tokenizer, path=path, card=card,
                      grounding=grounding)


ASSISTANT_FILE = "assistant.json"  # {"grounding": "python-docs"}: how chat should prompt it
GROUNDINGS = ("", "python-docs")


def read_grounding(path: Path) -> str:
    """The checkpoint's grounding ("" when it has no assistant.json)."""
    file = path / ASSISTANT_FILE
    if not file.is_file():
        return ""
    try:
        value = json.loads(file.read_text(encoding="utf-8")).get("grounding", "")
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{file}: not a JSON object ({e})") from None
    if value not in GROUNDINGS:
        raise CheckpointError(f"{file}: grounding must be one of {GROUNDINGS}, got {value!r}")
    return value
