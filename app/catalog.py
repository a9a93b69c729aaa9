"""The models a UI offers, and the only ones it loads.

    models = ModelCatalog(runs_dir, bundled_dir, device="cpu", exposed=False)
    models.choices()            # [(label, spec), ...] for a picker: bundled, runs, hub ids
    models.default("story")     # the spec a picker starts on for a mode
    ckpt = models.load(spec)    # a listed model, loaded once and cached

A spec from a client must be one of the listed choices (bundled checkpoints, local training
runs, GPT-2 hub ids), never an arbitrary path; gpt2-large / gpt2-xl are listed on an exposed
server only when its owner allows them (app.policy).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from engine.errors import USER_ERRORS
from engine.loading import HUB_MODELS, ModelCache, ModelChoice, available_models

from .display import bundled_label, free_chat_note
from .policy import ALLOW_LARGE_MODELS_ENV, PUBLIC_HUB_MODELS, large_models_allowed


class ModelCatalog:
    """Listed models and a cache of the loaded ones (least recently used evicted first)."""

    def __init__(self, runs_dir: Path, bundled_dir: Path, max_models: int = 2,
                 device: str | torch.device = "cpu", exposed: bool = False,
                 precision: str = "fp32") -> None:
        self.runs_dir = Path(runs_dir)
        self.bundled_dir = Path(bundled_dir)
        self.exposed = exposed
        self.cache = ModelCache(max_models=max_models, device=device, precision=precision)

    def entries(self) -> list[ModelChoice]:
        """What this server offers, in picker order: bundled, local runs (newest first), hub."""
        found = [replace(c, label=bundled_label(Path(c.spec).name)) if c.source == "bundled"
                 else c for c in available_models(runs_dir=self.runs_dir,
                                                  bundled_dir=self.bundled_dir)]
        if large_models_allowed(self.exposed):
            return found
        return [c for c in found if c.source != "hub" or c.spec in PUBLIC_HUB_MODELS]

    def choices(self) -> list[tuple[str, str]]:
        """(label, spec) pairs in picker order."""
        return [(c.label, c.spec) for c in self.entries()]

    def label(self, spec: str) -> str:
        """The picker's label of a spec (the spec itself when it is not listed)."""
        return next((c.label for c in self.entries() if c.spec == spec), spec)

    def default(self, mode: str = "python") -> str:
        """The spec a picker starts on for a mode: the bundled model made for it, else the first
        bundled model, else the newest run, else GPT-2 from the hub."""
        entries = self.entries()
        wanted = ("story",) if mode == "story" else ("python", "assistant", "code")
        for c in entries:
            if c.source == "bundled" and any(w in Path(c.spec).name.lower() for w in wanted):
                return c.spec
        return entries[0].spec

    def suggest(self, mode: str, current: str | None) -> str:
        """When a person moves between the chat and story tabs: switch between the bundled
        models made for each (they are the defaults), leave any other choice alone."""
        bundled = {c.spec for c in self.entries() if c.source == "bundled"}
        if current in bundled or not current:
            return self.default(mode)
        return current

    def resolve(self, spec) -> str:
        """The spec of a listed model, given its spec or label; ValueError for anything else
        (a client cannot load arbitrary paths)."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("no model chosen: pick one in the model list")
        spec = spec.strip()
        entries = self.entries()
        for c in entries:
            if spec in (c.spec, c.label):
                return c.spec
        names = ", ".join(c.label for c in entries)
        if spec in HUB_MODELS:
            raise ValueError(f"{spec} is not offered on this server (a download of several GB "
                             f"that any visitor could start); its owner can allow it with "
                             f"{ALLOW_LARGE_MODELS_ENV}=1. Choose one of: {names}")
        raise ValueError(f"unknown model {spec!r}; choose one of: {names}")

    def load(self, spec: str):
        """The loaded checkpoint of a listed model (cached; loading the same one twice waits)."""
        return self.cache.get(self.resolve(spec))

    def forget(self, spec: str) -> None:
        """Drop a cached model, so the next load reads it again (a run saved a newer one)."""
        self.cache.invalidate(spec)

    def free_chat_note(self, spec: str) -> str:
        """For free chat: "" unless `spec` is a model trained to answer from the Python docs
        (the bundled python-assistant); then what it will sound like and a better pick, if the
        list has one (app.display.free_chat_note). Loads the model (cached); "" if it cannot."""
        try:
            grounded = getattr(self.load(spec), "grounding", "") == "python-docs"
        except USER_ERRORS:
            return ""
        if not grounded:
            return ""
        better = next((c.label for c in self.entries() if c.source == "hub"), None)
        return free_chat_note(self.label(spec), better)

    def describe(self, spec: str) -> str:
        """One line about a model: size, context window, tokenizer. Loads it (cached)."""
        ckpt = self.load(spec)
        cfg = ckpt.config
        n = ckpt.model.num_params()
        size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
        return (f"{size} parameters · {cfg.n_layer} layers × {cfg.n_embd} dims · "
                f"{cfg.block_size}-token context · {ckpt.tokenizer.kind} tokenizer "
                f"({ckpt.tokenizer.vocab_size:,} tokens)")

    def card(self, spec: str) -> str:
        """The model card (the checkpoint's README.md: data, licence, recipe), or ""."""
        return self.load(spec).card or ""
