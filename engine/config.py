"""Model configuration: one small dataclass and the named model shapes (gpt2 ... gpt2-xl, small ones).

Training recipes (learning rates, steps, batch sizes) are another thing: engine.presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

GPT2_VOCAB_SIZE = 50257


@dataclass
class GPTConfig:
    """Shape of a GPT-2 style model. Everything else about the model is derived from these."""

    vocab_size: int = GPT2_VOCAB_SIZE
    block_size: int = 1024  # context window in tokens
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm layers
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)


# Named shapes. The GPT-2 ones match OpenAI's released models; the small ones are for training
# from scratch on a laptop ("small" is the classic TinyStories shape: 4 layers, 4 heads, 256 dims).
MODEL_SHAPES: dict[str, dict] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024),
    "small": dict(n_layer=4, n_head=4, n_embd=256, block_size=512),
    "mini": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64),
}
SHAPE_ALIASES = {"gpt2-124m": "gpt2", "gpt2-355m": "gpt2-medium", "gpt2-774m": "gpt2-large",
                 "gpt2-1.5b": "gpt2-xl"}


def shape(name: str, **overrides) -> GPTConfig:
    """Return the config for a named model shape, with any field overridden (e.g. vocab_size)."""
    key = SHAPE_ALIASES.get(name, name)
    if key not in MODEL_SHAPES:
        choices = ", ".join(sorted(MODEL_SHAPES) + sorted(SHAPE_ALIASES))
        raise ValueError(f"unknown model shape {name!r}; choose one of: {choices}")
    return GPTConfig(**{**MODEL_SHAPES[key], **overrides})
