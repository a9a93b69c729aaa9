"""LoRA (Hu et al., 2021): fine-tune a model by training a low-rank update of some of its Linear
layers, the rest frozen.

    spec = LoRASpec(rank=8, alpha=16, targets=("c_attn",))
    n = add_adapters(model, spec)        # wraps the targeted Linears; only their A, B train
    adapter_state(model)                 # {name: tensor}: what an adapter checkpoint stores
    merge_adapters(model)                # W += (alpha / rank) * B @ A, adapters removed

A targeted layer computes base(x) + (alpha / rank) * x A^T B^T with A (rank x in) drawn as
nn.Linear draws its weights and B (out x rank) zero, so training starts from the base model's
function exactly. Merged, the model is the plain GPT again: the same shapes, the same speed,
exported and served like any other.

Our own small module rather than `peft`: peft wraps a transformers PreTrainedModel, which our
GPT is not, and this is the whole of what we need (about a hundred lines, tested against the
merged weights). The checkpoint format for adapters is engine.checkpoint's (adapter.json,
adapter.safetensors and a reference to the base model).

Targets name Linear layers of the blocks by the end of their path: "c_attn" (attention q, k, v),
"attn.c_proj" (attention output), "c_fc" (MLP up), "mlp.c_proj" (MLP down); "c_proj" is both
projections. The LM head is tied to the embedding and is never a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

TARGETS = ("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj", "c_proj")
MAX_RANK = 1024


@dataclass(frozen=True)
class LoRASpec:
    rank: int
    alpha: float
    targets: tuple[str, ...] = ("c_attn",)

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", parse_targets(self.targets))
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or \
                not 1 <= self.rank <= MAX_RANK:
            raise ValueError(f"lora-rank must be a whole number from 1 to {MAX_RANK}, "
                             f"got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or \
                not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"lora-alpha must be a number above 0, got {self.alpha!r}")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ValueError(f"lora-targets must name some of {', '.join(TARGETS)}, got "
                             f"{', '.join(self.targets) or 'nothing'}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}


def parse_targets(text: str) -> tuple[str, ...]:
    """"c_attn, c_fc" -> ("c_attn", "c_fc")."""
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        weight = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device,
                                               dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device,
                                               dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's own weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The base Linear with the update folded into its weight."""
        with torch.no_grad():
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            self.base.weight += delta.to(self.base.weight.dtype)
        return self.base


def _targeted(model: nn.Module, targets: tuple[str, ...]) -> list[tuple[nn.Module, str, str]]:
    """(parent module, attribute, full name) of each Linear inside the blocks that a target
    names."""
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not name.startswith("transformer.h."):
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            parent_name, _, attr = name.rpartition(".")
            found.append((model.get_submodule(parent_name), attr, name))
    return found


def add_adapters(model: nn.Module, spec: LoRASpec) -> int:
    """Freeze every parameter of model and wrap the targeted Linears in LoRALinear (in place).
    Returns the number of trainable parameters."""
    if has_adapters(model):
        raise ValueError("this model already has LoRA adapters")
    layers = _targeted(model, spec.targets)
    if not layers:
        raise ValueError(f"lora-targets {', '.join(spec.targets)} match no layer of this model")
    for p in model.parameters():
        p.requires_grad_(False)
    for parent, attr, _ in layers:
        setattr(parent, attr, LoRALinear(getattr(parent, attr), spec.rank, spec.alpha))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors by name ("transformer.h.0.attn.c_attn.lora_a", ...), on the CPU."""
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters()
            if name.endswith((".lora_a", ".lora_b"))}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy saved adapter tensors into a model with the same adapters; ValueError naming `where`
    for a missing, extra or misshapen tensor."""
    expected = adapter_state(model)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{where}: adapter tensors do not match the adapter config "
                         f"(missing: {', '.join(missing[:3]) or '-'}; "
                         f"unexpected: {', '.join(extra[:3]) or '-'})")
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, the "
                             f"adapter config implies {tuple(expected[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{where}: tensor {name} contains NaN or infinity")
        with torch.no_grad():
            params[name].copy_(tensor)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain Linear back (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, module.merged())
    return model


# -- for engine.train -------------------------------------------------------------------------


def start_run(model: nn.Module, cfg) -> None:
    """A LoRA run (cfg.lora_rank > 0): add the adapters and say how much of the model trains."""
    from .distributed import is_main_process

    spec = LoRASpec(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    total = sum(p.numel() for p in model.parameters())
    trainable = add_adapters(model, spec)
    if is_main_process():
        print(f"LoRA rank {spec.rank} on {', '.join(spec.targets)}: {trainable:,} trainable "
              f"parameters of {total + trainable:,} "
              f"({100 * trainable / (total + trainable):.2f}%)",
              flush=True)


def adapter_files(cfg) -> dict[str, bytes]:
    """{"adapter.json": ...} for the checkpoints of a LoRA run, {} for any other. The base is
    the run's --init-from: a local folder by its absolute path (the checkpoint still loads from
    another working directory), a bundled name or hub id as it is."""
    if not cfg.lora_rank:
        return {}
    import json
    from pathlib import Path

    local = Path(cfg.init_from).expanduser()
    base = str(local.resolve()) if local.exists() else cfg.init_from
    spec = LoRASpec(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    return {"adapter.json": json.dumps({"base": base, **spec.to_dict()}, indent=2).encode()}
