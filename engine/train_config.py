"""What a training run is asked to do: TrainConfig, its checks, and how options become one.

    cfg = resolve_config({"data": "data/story", "out": "runs/story"}, preset="story-cpu")
    cfg.validate()               # ValueError naming the flag and the allowed range
    command_line(cfg)            # "python -m engine train --data ... --preset story-cpu ..."

Field names are the command line's flags (n_layer -> --n-layer); option_args() is the one place
that turns a field and its value into flags, for the reproduce line in a model card and for the
command engine.jobs starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .device import pick_device
from .presets import PRESETS

MAX_BLOCK_SIZE = 8192  # from-scratch context limit (a sanity bound: memory grows with T^2 in attention)

# Fields that may change when a run is resumed; every other field must match the run's.
RESUME_CHANGEABLE = {"max_steps", "eval_every", "eval_batches", "save_every", "keep_last",
                     "log_every", "sample_every", "sample_prompt", "sample_tokens", "device",
                     "dtype", "compile", "cache_dir", "data", "val_data"}


@dataclass
class TrainConfig:
    """Everything a run needs. Field names are the CLI flags (n_layer -> --n-layer)."""

    data: str = ""
    out: str = ""
    val_data: str = ""  # held-out data of the same kind; "" = hold out val_fraction of data
    mode: str = "auto"  # auto | pretrain | sft (auto: sft for instruction data)
    init_from: str = ""  # start from this model (checkpoint, run dir, HF folder or hub id)
    lora_rank: int = 0  # > 0: train LoRA adapters of init_from, not the whole model
    lora_alpha: float = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    lora_targets: str = "c_attn"  # the layers that get adapters (engine.lora.TARGETS)
    # model (ignored with init_from: the model's own shape is used)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 0  # 0 = the init model's context (with init_from), else 256
    dropout: float = 0.0
    tokenizer: str = "gpt2"  # gpt2 | bpe (a byte-level BPE trained on the data)
    vocab_size: int = 8192  # for --tokenizer bpe
    # optimisation
    batch_size: int = 16  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per step of one process (shared: distributed.batch_plan)
    max_steps: int = 1000
    lr: float = 6e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    # evaluation, logging, checkpoints
    eval_every: int = 200
    eval_batches: int = 20
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    sample_every: int = 0  # 0 = at every evaluation
    sample_prompt: str = ""  # "" = taken from the validation data
    sample_tokens: int = 64
    val_fraction: float = 0.1
    max_data_tokens: int = 0  # 0 = all (hf: datasets default to what max_steps needs)
    cache_dir: str = ""  # "" = ~/.cache/gpt-workbench/tokens (or $WORKBENCH_CACHE/tokens)
    # system
    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (autocast; weights stay float32)
    compile: bool = False
    seed: int = 1337
    preset: str = ""  # recorded for the model card

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ValueError, naming the flag, for the first option that is out of range."""
        if not self.data:
            raise ValueError("no training data: pass --data (a file, a folder, or hf:NAME)")
        if not self.out:
            raise ValueError("no output directory: pass --out DIR")
        if self.mode not in ("auto", "pretrain", "sft"):
            raise ValueError(f"mode must be auto, pretrain or sft, got {self.mode!r}")
        if self.tokenizer not in ("gpt2", "bpe"):
            raise ValueError(f"tokenizer must be 'gpt2' or 'bpe', got {self.tokenizer!r}")
        for name in ("n_layer", "n_head", "n_embd", "batch_size", "grad_accum",
                     "max_steps", "eval_every", "eval_batches", "save_every", "keep_last",
                     "log_every", "sample_tokens"):
            _check_int(self, name, 1)
        for name in ("block_size", "warmup_steps", "sample_every", "max_data_tokens", "seed"):
            _check_int(self, name, 0)
        if self.block_size > MAX_BLOCK_SIZE:
            raise ValueError(f"block-size {self.block_size} is larger than this trainer allows "
                             f"({MAX_BLOCK_SIZE})")
        if self.n_embd % self.n_head:
            raise ValueError(f"n-embd ({self.n_embd}) must be divisible by n-head ({self.n_head})")
        if not 258 <= self.vocab_size <= 1_000_000:
            raise ValueError(f"vocab-size must be between 258 and 1000000, got {self.vocab_size}")
        _check_number(self, "lr", 0, 1, lo_open=True)
        for name, lo, hi in (("min_lr_ratio", 0, 1), ("weight_decay", 0, 10), ("beta1", 0, 1),
                             ("beta2", 0, 1), ("grad_clip", 0, 1e6), ("dropout", 0, 0.99),
                             ("val_fraction", 0, 0.5)):
            _check_number(self, name, lo, hi)
        _check_int(self, "lora_rank", 0)
        if self.lora_rank:
            from .lora import LoRASpec

            LoRASpec(self.lora_rank, self.lora_alpha, self.lora_targets)  # its ValueErrors
            if not self.init_from:
                raise ValueError("lora-rank needs --init-from: adapters fine-tune an existing "
                                 "model")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        pick_device(self.device)  # an unknown or unavailable device is an error now, not later


def _check_int(cfg: TrainConfig, name: str, lo: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{flag(name)[2:]} must be an integer >= {lo}, got {v!r}")


def _check_number(cfg: TrainConfig, name: str, lo: float, hi: float, lo_open: bool = False) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or v < lo or v > hi or (lo_open and v == lo):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{flag(name)[2:]} must be a number in {rng}, got {v!r}")


def resolve_config(options: dict, preset: str | None = None, resume: bool = False) -> TrainConfig:
    """Defaults < preset < options. With resume, the run's saved config replaces the defaults and
    the preset, and options may only change RESUME_CHANGEABLE fields."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
    options = {k: _coerce(k, v) for k, v in options.items() if v is not None}
    if resume:
        cfg = TrainConfig(**{**_saved_config(options, known), **options})
    else:
        values: dict = {}
        if preset:
            if preset not in PRESETS:
                raise ValueError(f"unknown training preset {preset!r}; choose one of: {', '.join(PRESETS)}")
            values.update(PRESETS[preset], preset=preset)
        values.update(options)
        cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def _saved_config(options: dict, known: set[str]) -> dict:
    """The train_config.json of the run options["out"], checked against the options: only
    RESUME_CHANGEABLE fields may differ."""
    out = options.get("out")
    if not out:
        raise ValueError("--resume needs --out (the run directory to continue)")
    saved = Path(out) / "train_config.json"
    if not saved.is_file():
        raise ValueError(f"{out}: nothing to resume (no train_config.json); start a new run "
                         "without --resume")
    base = json.loads(saved.read_text(encoding="utf-8"))
    base = {k: v for k, v in base.items() if k in known}
    changed = sorted(k for k, v in options.items()
                     if k not in RESUME_CHANGEABLE and k != "out" and base.get(k) != v)
    if changed:
        raise ValueError("cannot change " + ", ".join(
            f"{flag(k)[2:]} (run has {base.get(k)!r}, got {options[k]!r})" for k in changed)
            + " when resuming; start a new run to change them")
    return base


def _coerce(name: str, value):
    """Integral floats for integer options (a UI number widget gives 300.0 for 300)."""
    if type(getattr(TrainConfig, name, None)) is int and not isinstance(value, bool) \
            and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------
# Options as command-line flags


def flag(name: str) -> str:
    """The flag of a TrainConfig field: n_layer -> --n-layer."""
    return "--" + name.replace("_", "-")


def option_args(name: str, value) -> list[str]:
    """A field and its value as command-line arguments: ["--lr", "0.001"]; a bool is
    ["--compile"] or ["--no-compile"]."""
    if isinstance(value, bool):
        return [flag(name) if value else "--no-" + flag(name)[2:]]
    return [flag(name), str(value)]


def command_line(cfg: TrainConfig) -> str:
    """The CLI invocation that reproduces cfg (flags that differ from the preset/defaults)."""
    base = TrainConfig(**({**PRESETS[cfg.preset], "preset": cfg.preset} if cfg.preset else {}))
    parts = ["python -m engine train", f"--data {cfg.data}", f"--out {cfg.out}"]
    if cfg.preset:
        parts.append(f"--preset {cfg.preset}")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out", "preset", "device", "cache_dir"):
            continue
        v = getattr(cfg, f.name)
        if v != getattr(base, f.name):
            # Quote what a shell would split or drop: a value with spaces, an empty string.
            parts.append(" ".join(json.dumps(a) if " " in a or not a else a
                                  for a in option_args(f.name, v)))
    return " ".join(parts)
