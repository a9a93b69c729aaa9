"""Finding, loading and caching models, for the CLI and both UIs.

A model spec is one of:
- a checkpoint directory of ours, or a training run directory (its latest checkpoint);
- a local transformers folder (config.json + model.safetensors / pytorch_model.bin);
- a Hugging Face hub id such as "gpt2" (needs the network, or huggingface_hub's cache);
- the name of a bundled model in checkpoints/ (e.g. "story").
"""

from __future__ import annotations

import difflib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import Checkpoint, CheckpointError, is_checkpoint, list_checkpoints, load_checkpoint
from .errors import ModelLoadError
from . import precision as precision_

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DIR = Path(os.environ.get("WORKBENCH_CHECKPOINTS", ROOT / "checkpoints"))
RUNS_DIR = Path(os.environ.get("WORKBENCH_RUNS", ROOT / "runs"))
HUB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


@dataclass(frozen=True)
class ModelChoice:
    label: str  # what a person sees in a picker
    spec: str  # what load_model takes
    source: str  # "bundled" | "run" | "hub"


def load_model(spec: str, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, precision: str = "fp32") -> Checkpoint:
    """Resolve a model spec (see the module docstring) and load it. precision (engine.precision:
    auto, fp32, bf16, int8) converts the loaded model for inference; fp32, the default, is the
    exact model that training and the parity tests use. A precision other than fp32 takes no
    dtype."""
    precision_.check(precision)
    ckpt = _load(spec, device, dtype)
    if precision != "fp32":
        if dtype not in (None, torch.float32):
            raise ValueError(f"pass either dtype ({dtype}) or precision ({precision!r}), not both")
        precision_.apply(ckpt.model, precision)
    return ckpt


def _load(spec: str, device: str | torch.device, dtype: torch.dtype | None) -> Checkpoint:
    from . import hub

    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("no model given: pass a checkpoint directory, a transformers "
                             "folder, a hub id such as 'gpt2', or a bundled model name")
    spec = spec.strip()
    path = Path(spec).expanduser()
    bundled = BUNDLED_DIR / spec
    if not path.exists() and "/" not in spec and is_checkpoint(bundled):
        path = bundled
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: is a file; a model is a directory "
                                 "(checkpoint, training run, or transformers folder)")
        if hub.is_transformers_folder(path):
            return hub.load_transformers_folder(path, device=device, dtype=dtype)
        return load_checkpoint(path, device=device, dtype=dtype)
    if _looks_local(spec):
        raise ModelLoadError(f"{spec}: no such directory{_did_you_mean(path)}")
    try:
        return hub.load_from_hub(spec, device=device, dtype=dtype)
    except ModelLoadError as e:
        near = difflib.get_close_matches(spec, _bundled_names(), n=1)
        if near and "/" not in spec:
            raise ModelLoadError(f"{e}; did you mean the bundled model {near[0]!r}?") from None
        raise


def _looks_local(spec: str) -> bool:
    """A path, not a hub id: it starts like one, has more than one separator, or its folder
    part exists here ("runs/stroy" when ./runs exists). Hub ids are "name" or "org/name"."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1:
        return True
    return "/" in spec and Path(spec).expanduser().parent.is_dir()


def _did_you_mean(path: Path) -> str:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        names = [p.name for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    except OSError:
        names = []
    if path.parent == Path("."):
        names += _bundled_names()
    near = difflib.get_close_matches(path.name, names, n=1)
    return f"; did you mean {str(parent / near[0]) if str(parent) != '.' else near[0]}?" if near else ""


def _bundled_names() -> list[str]:
    try:
        return sorted(d.name for d in BUNDLED_DIR.iterdir() if is_checkpoint(d))
    except OSError:
        return []


def _mtime(path: Path) -> float:
    """For sorting runs newest first; a dangling symlink or a vanished entry sorts last."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def available_models(runs_dir: Path | None = None, bundled_dir: Path | None = None) -> list[ModelChoice]:
    """Bundled checkpoints, then finished (or checkpointed) local runs, then GPT-2 hub ids."""
    choices: list[ModelChoice] = []
    bundled_dir = bundled_dir or BUNDLED_DIR
    if bundled_dir.is_dir():
        for d in sorted(bundled_dir.iterdir()):
            if is_checkpoint(d):
                choices.append(ModelChoice(f"{d.name} (bundled)", d.name if bundled_dir == BUNDLED_DIR else str(d), "bundled"))
    runs_dir = runs_dir or RUNS_DIR
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir(), key=_mtime, reverse=True):
            if d.is_dir() and list_checkpoints(d):
                choices.append(ModelChoice(f"{d.name} (run)", str(d), "run"))
    choices += [ModelChoice(f"{name} (hub)", name, "hub") for name in HUB_MODELS]
    return choices


class ModelCache:
    """Loaded models by spec, least recently used evicted first; safe to share between threads.

    Loading the same spec from two threads at once loads it once (the second waits).
    """

    def __init__(self, max_models: int = 2, device: str | torch.device = "cpu",
                 precision: str = "fp32") -> None:
        self.max_models = max_models
        self.device = device
        self.precision = precision_.check(precision)
        self._models: OrderedDict[str, Checkpoint] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, spec: str) -> Checkpoint:
        with self._lock:
            if spec in self._models:
                self._models.move_to_end(spec)
                return self._models[spec]
            spec_lock = self._loading.setdefault(spec, threading.Lock())
        with spec_lock:
            with self._lock:
                if spec in self._models:
                    return self._models[spec]
            ckpt = load_model(spec, device=self.device, precision=self.precision)
            with self._lock:
                self._models[spec] = ckpt
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
                self._loading.pop(spec, None)
            return ckpt

    def invalidate(self, spec: str | None = None) -> None:
        """Forget one model (e.g. a run that saved a newer checkpoint) or all of them."""
        with self._lock:
            if spec is None:
                self._models.clear()
            else:
                self._models.pop(spec, None)


__all__ = ["ModelChoice", "ModelCache", "load_model", "available_models", "CheckpointError",
           "ModelLoadError"]
