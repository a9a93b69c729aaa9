"""The object both front ends hold: the model catalogue, generation through the engine's chat
modes, the sampling explorer, and the training desk, for one server process.

    wb = workbench.configure(device="auto", exposed=is_exposed(host))   # once, at start-up
    wb.models.choices()                                  # [(label, spec), ...] for a picker
    params = sampling_params(temperature=0.7, top_k=40)  # app.limits: UI values, checked
    for delta in wb.story("Once upon a time", spec, params): ...
    wb.explain_next("Once upon a time", spec, params)    # the sampling explorer's data
    wb.training.start("cpu-demo", data=...)              # app.training

Every generation (chat, story, and the HTTP APIs that call these methods) runs through one
engine.serving.GenerationService: batched with the other generations of its model, at most
`limits.max_active` at once on the whole server, a queue beyond that (reply.waiting() says how
many are ahead), a time limit per answer, and cancelled when its reader goes away. The limits
come from ServingLimits or the environment (WORKBENCH_MAX_GENERATIONS, WORKBENCH_MAX_QUEUE,
WORKBENCH_TIME_LIMIT_S).

Everything a person types goes through app.limits.clean_text and every number through
app.limits, so both UIs and their HTTP APIs reject the same bad input with the same message.
Errors are USER_ERRORS (ValueError, ModelLoadError, PermissionError, ...) with a message a
person can act on; the UIs show it as it is.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import torch

from engine.assistant import CHAT_MODES, Reply, respond
from engine.device import pick_device
from engine.errors import USER_ERRORS, ModelLoadError
from engine.loading import BUNDLED_DIR, ROOT, RUNS_DIR
from engine.precision import CHOICES as PRECISIONS
from engine.precision import resolve as resolve_precision
from engine.sampling import SamplingParams, explain
from engine.serving import GenerationService, ServerBusy, ServingLimits, limits_from_env

from .catalog import ModelCatalog
from .display import token_label
from .limits import EXPLORER_TOP, MAX_SYSTEM_CHARS, clean_history, clean_text
from .training import TrainingDesk

__all__ = ["Workbench", "get", "configure", "USER_ERRORS", "ModelLoadError", "ServerBusy",
           "ServingLimits", "PRECISIONS"]

Cancel = threading.Event | Callable[[], bool] | None


class Workbench:
    """Models, generation, the sampling explorer and training for one server process.

    device: a torch.device or a name for engine.device.pick_device ("auto", "cpu", "cuda", ...;
    ValueError for an unknown or missing one). precision: engine.precision's auto, fp32, bf16
    or int8 for the models it loads (resolved on the device at start-up, so a bad pair fails
    then). limits: the server-wide generation limits (default: engine.serving.limits_from_env())."""

    def __init__(self, runs_dir: Path | str | None = None, bundled_dir: Path | str | None = None,
                 max_models: int = 2, device: str | torch.device = "cpu",
                 exposed: bool = False, data_dir: Path | str | None = None,
                 limits: ServingLimits | None = None, precision: str = "fp32") -> None:
        runs_dir = Path(runs_dir) if runs_dir else RUNS_DIR
        if isinstance(device, str):
            device = pick_device(device)
        self.precision = resolve_precision(precision, device)
        self.models = ModelCatalog(runs_dir, Path(bundled_dir) if bundled_dir else BUNDLED_DIR,
                                   max_models=max_models, device=device, exposed=exposed,
                                   precision=self.precision)
        self.generations = GenerationService(limits or limits_from_env())
        self.training = TrainingDesk(runs_dir, Path(data_dir) if data_dir else ROOT / "data",
                                     self.models, exposed=exposed)

    def story(self, prompt: str, spec: str, params: SamplingParams, cancel: Cancel = None) -> Reply:
        """Stream the continuation of a story opening: an engine.assistant.Reply (iterate for
        text deltas; .stats.tokens_per_s and .stats.notices when done)."""
        prompt = clean_text(prompt, "story opening")
        ckpt = self.models.load(spec)
        return respond([{"role": "user", "content": prompt}], "story", ckpt, params, cancel=cancel,
                       streamer=self.generations.stream)

    def chat(self, message: str, history: list, mode: str, spec: str, params: SamplingParams,
             cancel: Cancel = None, system: str = "") -> Reply:
        """One chat turn in one of the engine's chat modes: a Reply that is either a refusal
        (.refused, .refusal, .reason: the Python assistant declines a message that is not about
        programming, without calling the model) or a stream of text deltas.

        history: the conversation before `message` (checked with app.limits.clean_history).
        system: text put before the conversation (an API client's system message)."""
        if mode not in CHAT_MODES:
            raise ValueError(f"unknown chat mode {mode!r}; choose one of: {', '.join(CHAT_MODES)}")
        message = clean_text(message, "message")
        turns = clean_history(history)
        ckpt = self.models.load(spec)
        system = clean_text(system, "system prompt", max_chars=MAX_SYSTEM_CHARS, allow_empty=True)
        return respond(turns + [{"role": "user", "content": message}], mode, ckpt, params,
                       cancel=cancel, system=system, streamer=self.generations.stream)

    def explain_next(self, text: str, spec: str, params: SamplingParams, top: int = 10) -> dict:
        """The top candidates for the token after `text`, with their probabilities after each
        sampling stage (raw, repetition penalty, temperature, top-k, top-p; greedy at
        temperature 0).

        Returns {"tokens": [label, ...], "token_ids": [...], "stages": [{"name", "probs"}],
        "context_tokens": n, "truncated": bool}."""
        lo, hi = EXPLORER_TOP.lo, EXPLORER_TOP.hi
        if isinstance(top, bool) or not isinstance(top, int) or not lo <= top <= hi:
            raise ValueError(f"top must be a whole number between {lo} and {hi}, got {top!r}")
        text = clean_text(text, "text", allow_empty=True)
        ckpt = self.models.load(spec)
        model, tok = ckpt.model, ckpt.tokenizer
        ids = tok.encode(text) or [tok.eot_id]  # empty text: the start of a document
        block = model.config.block_size
        truncated = len(ids) > block
        ids = ids[-block:]
        device = next(model.parameters()).device
        with torch.inference_mode():
            logits, _ = model(torch.tensor([ids], device=device), last_only=True)
        window = params.repetition_window
        history = ids[-window:] if window else ids
        result = explain(logits[0, -1], history, params, top=top)
        result["tokens"] = [token_label(tok, i) for i in result["token_ids"]]
        result["context_tokens"] = len(ids)
        result["truncated"] = truncated
        return result


_default: Workbench | None = None
_default_lock = threading.Lock()


def get(**kwargs) -> Workbench:
    """The process-wide Workbench (created on first use; kwargs apply only then)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Workbench(**kwargs)
        return _default


def configure(**kwargs) -> Workbench:
    """Replace the process-wide Workbench (an entry point calls this once at start-up)."""
    global _default
    with _default_lock:
        _default = Workbench(**kwargs)
        return _default
