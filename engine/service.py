"""The facade both front ends (Gradio and Chainlit) use, so neither holds logic the other needs.

    wb = service.get()                          # one per process: one shared ModelCache
    wb.model_choices()                          # [(label, spec), ...] for a model picker
    params = service.sampling_params(temperature=0.7, top_k=40, ...)   # UI values -> SamplingParams
    for delta in wb.story("Once upon a time", spec, params): ...
    wb.explain_next("Once upon a time", spec, params)                  # the sampling explorer

Everything a person types goes through clean_text() (control characters stripped, length
capped) and every number through sampling_params() (LIMITS), so both UIs and their HTTP APIs
reject the same bad input with the same message. A model can only be loaded from the listed
choices (bundled checkpoints, local runs, GPT-2 hub ids), never from an arbitrary path sent by a
client. Errors are ValueError / ModelLoadError / PermissionError with a message a person can act
on; the UIs show it as it is.

Training: the "may this server start training jobs" policy lives here (training_policy()), and
the job control goes through engine.jobs, the same runner the CLI uses.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import models as M
from .errors import ModelLoadError
from .sampling import SamplingParams, explain

# ---------------------------------------------------------------------------------------------
# Input limits, shared by both UIs (slider ranges) and enforced here for API callers.

MAX_INPUT_CHARS = 8000  # a prompt or chat message; the models' windows are 256-1024 tokens
MAX_HISTORY_MESSAGES = 200  # a chat history sent by a client; older turns are trimmed anyway
MAX_EXPLORER_TOP = 30

# name: (minimum, maximum, step, default, one-line explanation)
LIMITS: dict[str, tuple[float, float, float, float | None, str]] = {
    "temperature": (0.0, 2.0, 0.05, 0.8,
                    "Randomness: 0 always picks the most likely token, higher is more adventurous."),
    "top_k": (0, 200, 1, 50, "Sample only from the k most likely tokens (0 = no limit)."),
    "top_p": (0.05, 1.0, 0.01, 0.95,
              "Sample from the smallest set of tokens whose probabilities add up to p (1 = off)."),
    "repetition_penalty": (1.0, 2.0, 0.01, 1.1,
                           "Makes tokens already in the text less likely (1 = off)."),
    "max_new_tokens": (1, 1024, 1, 200, "The most tokens to generate for one answer or story."),
    "seed": (0, 2**31 - 1, 1, None, "Same seed, same text; empty or -1 for a new draw each time."),
}
SAMPLING_DEFAULTS = {name: spec[3] for name, spec in LIMITS.items()}
SAMPLING_FIELDS = tuple(LIMITS)  # the order both UIs show the controls in
SAMPLING_LABELS = {"temperature": "Temperature", "top_k": "Top-k", "top_p": "Top-p",
                   "repetition_penalty": "Repetition penalty", "max_new_tokens": "Max new tokens",
                   "seed": "Seed"}

CHAT_MODES = {"python": "Python assistant", "chat": "Free chat"}
MODES = {**CHAT_MODES, "story": "Story"}

ALLOW_TRAINING_ENV = "WORKBENCH_ALLOW_TRAINING"
ALLOW_LARGE_MODELS_ENV = "WORKBENCH_ALLOW_LARGE_MODELS"
# Hub models an exposed server offers by default: gpt2-large / gpt2-xl are 3 and 6 GB downloads
# and as much memory, which any visitor could make the server fetch and hold.
PUBLIC_HUB_MODELS = ("gpt2", "gpt2-medium")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls except \t and \n


def clean_text(text, what: str = "prompt", max_chars: int = MAX_INPUT_CHARS,
               allow_empty: bool = False) -> str:
    """Text a person typed, made safe to tokenize: newlines normalised, control characters and
    lone surrogates removed, length capped with a clear message. Emoji, right-to-left text and
    joiners are kept as they are."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"the {what} must be text, got {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if any(unicodedata.category(c) == "Cs" for c in text):
        text = "".join(c for c in text if unicodedata.category(c) != "Cs")
    if len(text) > max_chars:
        raise ValueError(f"the {what} is {len(text):,} characters long; the limit is "
                         f"{max_chars:,}. Shorten it and try again.")
    if not allow_empty and not text.strip():
        raise ValueError(f"the {what} is empty: type something first")
    return text


def _as_number(name: str, value, integer: bool):
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def sampling_params(temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                    max_new_tokens=None, seed=None, stop: tuple[str, ...] = ()) -> SamplingParams:
    """SamplingParams from UI or API values (None = the default), range-checked against LIMITS.

    Numbers may arrive as floats from sliders or strings from an API; whole numbers are accepted
    for the integer fields, anything else gets a message naming the field, the value and the range.
    A seed of None, "" or -1 means a fresh random draw.
    """
    raw = dict(temperature=temperature, top_k=top_k, top_p=top_p,
               repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens)
    values: dict = {}
    for name, value in raw.items():
        lo, hi, _step, default, _help = LIMITS[name]
        integer = name in ("top_k", "max_new_tokens")
        value = default if value is None else _as_number(name, value, integer)
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        values[name] = value
    if seed is None or seed == "" or (not isinstance(seed, bool) and seed == -1):
        values["seed"] = None
    else:
        seed = _as_number("seed", seed, True)
        lo, hi = LIMITS["seed"][:2]
        if not lo <= seed <= hi:
            raise ValueError(f"seed must be between {lo} and {hi} (or empty for a random "
                             f"draw), got {seed}")
        values["seed"] = seed
    return SamplingParams(stop=tuple(stop), **values)


# ---------------------------------------------------------------------------------------------
# Who may start training on this server.


def is_exposed(host: str | None, share: bool = False) -> bool:
    """True when the server can be reached from other machines (a share link or a host that is
    not a loopback address)."""
    if share:
        return True
    host = (host or "127.0.0.1").strip().strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name other than localhost: assume it is reachable


def _opted_in(name: str, env) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def large_models_allowed(exposed: bool = False, environ: dict | None = None) -> bool:
    """May visitors load gpt2-large and gpt2-xl? Yes on a local server; on one that others can
    reach (a Space, a share link, a non-local host: the same test as training) only when its
    owner sets WORKBENCH_ALLOW_LARGE_MODELS=1."""
    env = os.environ if environ is None else environ
    return _opted_in(ALLOW_LARGE_MODELS_ENV, env) or not (exposed or env.get("SPACE_ID"))


@dataclass(frozen=True)
class TrainingPolicy:
    allowed: bool
    reason: str  # why not (empty when allowed)


def training_policy(exposed: bool = False, environ: dict | None = None) -> TrainingPolicy:
    """Training starts processes that use the machine for minutes or hours, so a server anyone
    can reach must not offer it unless its owner says so (WORKBENCH_ALLOW_TRAINING=1)."""
    env = os.environ if environ is None else environ
    if _opted_in(ALLOW_TRAINING_ENV, env):
        return TrainingPolicy(True, "")
    if env.get("SPACE_ID"):
        return TrainingPolicy(False, (
            "Training is turned off on this Hugging Face Space, because any visitor could start "
            f"jobs. The Space's owner can turn it on by setting {ALLOW_TRAINING_ENV}=1 in the "
            "Space's settings (variables)."))
    if exposed:
        return TrainingPolicy(False, (
            "Training is turned off because this server is reachable from other machines "
            f"(a share link or a non-local host). Start it with {ALLOW_TRAINING_ENV}=1 to allow "
            "anyone who can open the page to start training jobs."))
    return TrainingPolicy(True, "")


# ---------------------------------------------------------------------------------------------
# Words for both UIs (the same figures read the same in each).


def format_duration(seconds) -> str:
    """'42 s', '1 min 05 s', '1 h 02 min'; '–' when not known."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_parts(st: dict) -> list[str]:
    """A training status (training_status()) as short phrases: ["Step 120/300", "loss 3.124",
    "validation loss 3.301", "5,400 tokens/s", "ETA 42 s"] (or "took 2 min 05 s" once ended).
    Numbers only; a UI adds the run's name and state in its own markup."""
    parts = []
    if st.get("max_steps"):
        parts.append(f"Step {st.get('step') or 0:,}/{st['max_steps']:,}")
    if st.get("loss") is not None:
        parts.append(f"loss {st['loss']:.3f}")
    if st.get("val_loss") is not None:
        parts.append(f"validation loss {st['val_loss']:.3f}")
    if st.get("tokens_per_s"):
        parts.append(f"{st['tokens_per_s']:,.0f} tokens/s")
    if st.get("state") in ("starting", "running", "stopping"):
        parts.append(f"ETA {format_duration(st.get('eta_s'))}")
    elif st.get("elapsed_s"):
        parts.append(f"took {format_duration(st['elapsed_s'])}")
    return parts


def notice_summary(notices) -> list[str]:
    """Each distinct generation notice once, in order, with "(3 times)" when it repeated (a long
    reply re-fills a small context window many times). Plain text; a UI escapes it."""
    counts: dict[str, int] = {}
    for n in notices or ():
        counts[n] = counts.get(n, 0) + 1
    return [n + (f" ({k} times)" if k > 1 else "") for n, k in counts.items()]


# ---------------------------------------------------------------------------------------------
# Token strings for display.


def token_label(tokenizer, token_id: int) -> str:
    """A token as a person can read it: spaces as '␣', newlines as '↵', tabs as '⇥', bytes that
    are only part of a UTF-8 character as <0xNN>."""
    data = tokenizer.token_bytes(token_id)
    if token_id == tokenizer.eot_id:
        return "<|endoftext|>"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in data)
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


# ---------------------------------------------------------------------------------------------


class Workbench:
    """Models, generation, the sampling explorer and training control for one server process."""

    def __init__(self, runs_dir: Path | str | None = None, bundled_dir: Path | str | None = None,
                 max_models: int = 2, device: str | torch.device = "cpu",
                 exposed: bool = False, data_dir: Path | str | None = None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir else M.RUNS_DIR
        self.bundled_dir = Path(bundled_dir) if bundled_dir else M.BUNDLED_DIR
        self.data_dir = Path(data_dir) if data_dir else M.ROOT / "data"  # bundled corpora
        self.cache = M.ModelCache(max_models=max_models, device=device)
        self.exposed = exposed
        self._jobs = None
        self._jobs_lock = threading.Lock()
        self._latest: dict[str, int | None] = {}  # run dir -> newest checkpoint step seen
        self._progress: dict[str, dict] = {}  # run dir -> what was read of its metrics.jsonl

    # -- models ------------------------------------------------------------------------------

    def choices(self) -> list[M.ModelChoice]:
        found = M.available_models(runs_dir=self.runs_dir, bundled_dir=self.bundled_dir)
        if large_models_allowed(self.exposed):
            return found
        return [c for c in found if c.source != "hub" or c.spec in PUBLIC_HUB_MODELS]

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, spec) pairs in picker order: bundled, local runs (newest first), hub ids."""
        return [(c.label, c.spec) for c in self.choices()]

    def default_model(self, mode: str = "python") -> str:
        """The spec a picker starts on for a mode: the bundled model made for it, else the first
        bundled model, else the newest run, else GPT-2 from the hub."""
        choices = self.choices()
        wanted = ("story",) if mode == "story" else ("python", "assistant", "code")
        for c in choices:
            if c.source == "bundled" and any(w in Path(c.spec).name.lower() for w in wanted):
                return c.spec
        return choices[0].spec

    def suggest_model(self, mode: str, current: str | None) -> str:
        """When a person moves between the chat and story tabs: switch between the bundled
        models made for each (they are the defaults), leave any other choice alone."""
        bundled = {c.spec for c in self.choices() if c.source == "bundled"}
        if current in bundled or not current:
            return self.default_model(mode)
        return current

    def resolve(self, spec) -> str:
        """Check that spec is one of the listed models (a client cannot load arbitrary paths)."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("no model chosen: pick one in the model list")
        spec = spec.strip()
        choices = self.choices()
        for c in choices:
            if spec in (c.spec, c.label):
                return c.spec
        names = ", ".join(c.label for c in choices)
        if spec in M.HUB_MODELS:
            raise ValueError(f"{spec} is not offered on this server (a download of several GB "
                             f"that any visitor could start); its owner can allow it with "
                             f"{ALLOW_LARGE_MODELS_ENV}=1. Choose one of: {names}")
        raise ValueError(f"unknown model {spec!r}; choose one of: {names}")

    def load(self, spec: str):
        """The loaded checkpoint for a listed model (cached; loading the same one twice waits)."""
        return self.cache.get(self.resolve(spec))

    def describe(self, spec: str) -> str:
        """One line about a model for the UI: size, context window, tokenizer, where it is from.
        Loads the model (cached)."""
        ckpt = self.load(spec)
        cfg = ckpt.config
        n = ckpt.model.num_params()
        size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
        return (f"{size} parameters · {cfg.n_layer} layers × {cfg.n_embd} dims · "
                f"{cfg.block_size}-token context · {ckpt.tokenizer.kind} tokenizer "
                f"({ckpt.tokenizer.vocab_size:,} tokens)")

    def model_card(self, spec: str) -> str:
        """The model card (README.md of the checkpoint: data, licence, how it was trained), or ""."""
        return self.load(spec).card or ""

    def refresh_run(self, spec: str) -> None:
        """Forget a cached run so its newest checkpoint is loaded next time."""
        self.cache.invalidate(spec)

    # -- generation --------------------------------------------------------------------------

    def story(self, prompt: str, spec: str, params: SamplingParams,
              cancel: threading.Event | Callable[[], bool] | None = None):
        """Stream the continuation of a story opening: an engine.assistant.Reply (iterate for
        text deltas; .stats.tokens_per_s and .stats.notices when done)."""
        from .assistant import respond

        prompt = clean_text(prompt, "story opening")
        ckpt = self.load(spec)
        return respond([{"role": "user", "content": prompt}], "story", ckpt, params, cancel=cancel)

    def chat(self, message: str, history: list, mode: str, spec: str, params: SamplingParams,
             cancel: threading.Event | Callable[[], bool] | None = None):
        """One chat turn through engine.assistant.respond: an engine.assistant.Reply that is
        either a refusal (.refused, .refusal, .reason: the Python assistant declines a message
        that is not about programming, without calling the model) or a stream of text deltas.

        history: the conversation before `message`, [{"role": "user"|"assistant", "content"}]
        (Gradio/OpenAI messages; see clean_history()).
        """
        from .assistant import respond

        if mode not in CHAT_MODES:
            raise ValueError(f"unknown chat mode {mode!r}; choose one of: {', '.join(CHAT_MODES)}")
        message = clean_text(message, "message")
        turns = clean_history(history)
        ckpt = self.load(spec)
        return respond(turns + [{"role": "user", "content": message}], mode, ckpt, params,
                       cancel=cancel)

    # -- the sampling explorer ---------------------------------------------------------------

    def explain_next(self, text: str, spec: str, params: SamplingParams, top: int = 10) -> dict:
        """The top candidates for the token after `text`, with their probabilities after each
        sampling stage (raw, repetition penalty, temperature, top-k, top-p; greedy at
        temperature 0).

        Returns {"tokens": [label, ...], "token_ids": [...], "stages": [{"name", "probs"}],
        "context_tokens": n, "truncated": bool}.
        """
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_EXPLORER_TOP:
            raise ValueError(f"top must be a whole number between 1 and {MAX_EXPLORER_TOP}, got {top!r}")
        text = clean_text(text, "text", allow_empty=True)
        ckpt = self.load(spec)
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

    # -- training ----------------------------------------------------------------------------

    def training_policy(self) -> TrainingPolicy:
        return training_policy(self.exposed)

    @property
    def jobs(self):
        """The engine.jobs.JobManager of this server's runs directory (one job at a time)."""
        with self._jobs_lock:
            if self._jobs is None:
                from .jobs import JobManager

                self._jobs = JobManager(self.runs_dir)
            return self._jobs

    def training_presets(self) -> list[tuple[str, str]]:
        """(label, name) of the training presets, each label saying what the preset trains."""
        from .train import PRESETS, TrainConfig

        out = []
        for name, p in PRESETS.items():
            cfg = TrainConfig(**{k: v for k, v in p.items()})
            if p.get("mode") == "sft":
                shape = "instruction tuning of an existing model"
            else:
                shape = (f"{cfg.n_layer} layers × {cfg.n_embd} dims, {cfg.block_size} context, "
                         f"{'GPT-2' if cfg.tokenizer == 'gpt2' else f'{cfg.vocab_size}-token BPE'}")
            out.append((f"{name}: {shape}, {cfg.max_steps:,} steps", name))
        return out

    def training_data(self) -> list[tuple[str, str]]:
        """(label, path) of the corpora that ship with the repository (data/*/ text and JSONL)."""
        root = self.data_dir
        found = []
        if root.is_dir():
            # Stories first: the quickest to show a falling loss.
            for f in sorted(root.glob("*/*"), key=lambda f: (f.parent.name != "stories", str(f))):
                if f.suffix.lower() in (".txt", ".jsonl") and \
                        not f.name.upper().startswith(("LICENSE", "README", "NOTICE", "SOURCES")):
                    kind = "instructions" if f.suffix.lower() == ".jsonl" else "text"
                    size = f.stat().st_size
                    size = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
                    found.append((f"{f.parent.name}/{f.name} ({kind}, {size})", str(f)))
        return found

    def device_notice(self) -> str:
        """Where training will run, in words (a CPU run gets a notice)."""
        from .device import describe, pick_device

        device = pick_device("auto")
        if device.type == "cpu":
            return ("No GPU found: training runs on the CPU. That is fine for the cpu-demo "
                    "preset (minutes); the larger presets take hours.")
        return f"Training runs on the {describe(device)}."

    def _training_data(self, data: str | None, upload: str | Path | None, hf_name: str | None,
                       upload_root: str | Path | None = None) -> str:
        """Exactly one data source: a bundled corpus, an uploaded file (copied into the runs
        directory, so it outlives Gradio's upload cache), or a Hugging Face dataset name.

        An upload is a path, so a client could name any file the server can read: it is taken
        only from inside upload_root, the folder where the front end's upload widget stores what
        a person uploaded (the trusted caller passes it; a client never chooses it)."""
        for what, value in (("data", data), ("hf_name", hf_name)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{what} must be text, got {type(value).__name__}")
        given = [x for x in (data, upload, hf_name) if x not in (None, "")]
        if len(given) != 1:
            raise ValueError("choose one data source: a bundled corpus, an uploaded file, or a "
                             "Hugging Face dataset name")
        if data:
            paths = {p: p for _, p in self.training_data()}
            paths.update({label: p for label, p in self.training_data()})
            if data not in paths:
                names = ", ".join(Path(p).parent.name + "/" + Path(p).name
                                  for _, p in self.training_data()) or "none found"
                raise ValueError(f"unknown bundled corpus {data!r}; choose one of: {names}")
            return paths[data]
        if hf_name:
            name = hf_name.strip()
            name = name[3:] if name.startswith("hf:") else name
            if not _HF_NAME.fullmatch(name) or ".." in name or Path(name.split(":")[0]).exists():
                raise ValueError(f"{hf_name!r} is not a Hugging Face dataset name; expected "
                                 "NAME or OWNER/NAME, optionally :CONFIG (e.g. roneneldan/TinyStories "
                                 "or wikitext:wikitext-103-raw-v1)")
            return f"hf:{name}"
        if not isinstance(upload, (str, Path)):
            raise ValueError(f"the upload must be a file path, got {type(upload).__name__}")
        src = Path(str(upload))
        if upload_root is None or not _inside(src, upload_root):
            raise ValueError(f"{src.name!r} was not uploaded through this app's upload box; "
                             "upload the file there (a path on the server is not accepted)")
        if not src.is_file():
            raise ValueError(f"the uploaded file {src.name!r} is missing; upload it again")
        if src.suffix.lower() not in UPLOAD_SUFFIXES:
            raise ValueError(f"{src.name}: upload a text file ({', '.join(UPLOAD_SUFFIXES)}); "
                             ".jsonl holds instruction pairs, anything else is plain text")
        size = src.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(f"{src.name} is {size / 1e6:.0f} MB; the limit for uploads is "
                             f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB (train on bigger data from the "
                             "command line)")
        if size == 0:
            raise ValueError(f"{src.name} is empty")
        import hashlib
        import shutil

        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
        dest_dir = self.runs_dir / "uploads"
        dest_dir.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", src.stem)[:40] or "data"
        dest = dest_dir / f"{stem}-{digest}{src.suffix.lower()}"
        if not dest.exists():
            tmp = dest.with_suffix(dest.suffix + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return str(dest)

    def start_training(self, preset: str, data: str | None = None, upload: str | Path | None = None,
                       hf_name: str | None = None, run_name: str | None = None,
                       init_from: str | None = None, upload_root: str | Path | None = None,
                       **options) -> dict:
        """Start a training job (a child process) and return its status.

        upload: a file the front end's upload widget stored under upload_root (both set by the
        app's own handler, never taken from a client's request; see _training_data).

        options: TrainConfig fields a person may set here (TRAIN_OPTIONS: max_steps, lr,
        batch_size, ...), None = the preset's value. Raises PermissionError when this server does
        not allow training (see training_policy) and ValueError for bad input, before any work.
        """
        from .train import PRESETS

        policy = self.training_policy()
        if not policy.allowed:
            raise PermissionError(policy.reason)
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"unknown training preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        unknown = sorted(set(options) - set(TRAIN_OPTIONS))
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; the app sets "
                             f"{', '.join(TRAIN_OPTIONS)}")
        opts = {}
        for name, value in options.items():
            if value is None or value == "":
                continue
            lo, hi, integer = TRAIN_OPTIONS[name]
            value = _as_number(name, value, integer)
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
            opts[name] = value
        name = (run_name or "").strip() or f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not _RUN_NAME.fullmatch(name):
            raise ValueError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        self.jobs.run_path(name)  # refuses the job runner's own file names, before any copying
        if init_from:
            opts["init_from"] = self.resolve(init_from)
        opts["data"] = self._training_data(data, upload, hf_name, upload_root)
        opts["out"] = name
        job = self.jobs.start(opts, preset=preset)
        return self.training_status(job)

    def resume_training(self, run_name: str, max_steps=None) -> dict:
        """Continue a stopped (or finished, with more steps) run from its last checkpoint."""
        policy = self.training_policy()
        if not policy.allowed:
            raise PermissionError(policy.reason)
        if run_name not in self.resumable_runs():
            raise ValueError(f"no run {run_name!r} to resume here; runs with checkpoints: "
                             f"{', '.join(self.resumable_runs()) or 'none'}")
        changes = {}
        if max_steps not in (None, ""):
            lo, hi, _ = TRAIN_OPTIONS["max_steps"]
            steps = _as_number("max_steps", max_steps, True)
            if not lo <= steps <= hi:
                raise ValueError(f"max_steps must be between {lo:g} and {hi:g}, got {steps}")
            changes["max_steps"] = steps
        job = self.jobs.resume(run_name, **changes)
        return self.training_status(job)

    def stop_training(self) -> dict:
        """Ask the running job to save a checkpoint and stop; the status afterwards."""
        policy = self.training_policy()
        if not policy.allowed:
            raise PermissionError(policy.reason)
        self.jobs.stop()
        return self.training_status()

    def resumable_runs(self) -> list[str]:
        """Names of runs in the runs directory that have a checkpoint to continue from."""
        from .checkpoint import list_checkpoints

        if not self.runs_dir.is_dir():
            return []
        return sorted(d.name for d in self.runs_dir.iterdir()
                      if d.is_dir() and (d / "train_config.json").is_file() and list_checkpoints(d))

    def training_status(self, job=None) -> dict:
        """The current (or last) job for a progress view: engine.jobs status fields (state,
        step, max_steps, loss, val_loss, tokens_per_s, eta_s, error, ...) plus "run" (its name),
        "curve" ([{"step", "loss", "split": "train"|"validation"}]), "samples" ([{"step",
        "prompt", "text"}], newest last) and "log" (the last lines of train.log when it failed).
        {"state": "idle"} when no job was ever started here."""
        job = job or self.jobs.current()
        if job is None:
            return {"state": "idle", "run": None, "curve": [], "samples": []}
        train, val, samples, recent = self._read_progress(job)
        status = job.status(recent)
        curve = [{"step": s, "loss": l, "split": "train"} for s, l in thin(train, MAX_CURVE_POINTS)]
        curve += [{"step": s, "loss": l, "split": "validation"} for s, l in val]
        status.update(run=job.run_dir.name, curve=curve, samples=list(samples))
        if status["state"] == "failed":
            status["log"] = job.log_tail(15)
        self._forget_stale(job.run_dir)
        return status

    def _read_progress(self, job) -> tuple[list, list, list, list]:
        """(train points, validation points, last samples, the events Job.status needs) of a
        run's metrics.jsonl, read from where the previous poll stopped (each browser tab polls
        every second). A rewritten file (a resume drops the events after its checkpoint) is read
        again from the start."""
        from collections import deque

        path = job.run_dir / "metrics.jsonl"
        try:
            st = path.stat()
            identity, size = (st.st_ino, st.st_dev), st.st_size
        except OSError:
            identity, size = None, 0
        key = str(job.run_dir)
        with self._jobs_lock:
            seen = self._progress.get(key)
            if seen is None or seen["identity"] != identity or seen["offset"] > size:
                seen = {"identity": identity, "offset": 0, "train": [], "val": [],
                        "samples": deque(maxlen=5), "start": None, "eval": None,
                        "since_start": deque(maxlen=20)}  # Job.status rates over 20 steps
                self._progress[key] = seen
            events, seen["offset"] = job.events(seen["offset"])
            for e in events:
                kind = e.get("type")
                if kind == "start":
                    seen["start"] = e
                    seen["since_start"].clear()
                elif kind == "train":
                    seen["since_start"].append(e)
                elif kind == "eval":
                    seen["eval"] = e
                if kind == "train" and "loss" in e:
                    seen["train"].append((e["step"], e["loss"]))
                elif kind == "eval" and e.get("val_loss") is not None:
                    seen["val"].append((e["step"], e["val_loss"]))
                elif kind == "sample":
                    seen["samples"].append({"step": e.get("step"), "prompt": e.get("prompt", ""),
                                            "text": e.get("text", "")})
            recent = [e for e in (seen["start"], seen["eval"]) if e is not None]
            recent += seen["since_start"]
            return list(seen["train"]), list(seen["val"]), list(seen["samples"]), recent

    def _forget_stale(self, run_dir: Path) -> None:
        """A run that saved a newer checkpoint: drop the cached older one."""
        from .checkpoint import list_checkpoints

        found = list_checkpoints(run_dir)
        latest = found[-1][0] if found else None
        key = str(run_dir)
        if self._latest.get(key) != latest:
            self._latest[key] = latest
            self.cache.invalidate(key)


# TrainConfig fields the UIs let a person set: (minimum, maximum, whole number).
TRAIN_OPTIONS: dict[str, tuple[float, float, bool]] = {
    "max_steps": (1, 1_000_000, True),
    "lr": (1e-6, 1.0, False),
    "batch_size": (1, 1024, True),
    "block_size": (8, 8192, True),
    "eval_every": (1, 1_000_000, True),
    "save_every": (1, 1_000_000, True),
    "log_every": (1, 100_000, True),
    "seed": (0, 2**31 - 1, True),
}
UPLOAD_SUFFIXES = (".txt", ".md", ".jsonl", ".json")
MAX_UPLOAD_BYTES = 200_000_000
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HF_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?")


MAX_CURVE_POINTS = 500  # training-loss points sent to a UI per poll (a long run logs 100,000s)


def thin(points: list, limit: int) -> list:
    """At most `limit` of the points, evenly spread, the first and the last always kept."""
    if len(points) <= limit:
        return list(points)
    if limit < 2:
        return list(points[-limit:]) if limit else []
    last = len(points) - 1
    return [points[round(i * last / (limit - 1))] for i in range(limit)]


def _inside(path: Path, root: str | Path) -> bool:
    """True if path (links resolved) lies inside the folder root."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def clean_history(history, keep_notes: bool = False) -> list[dict]:
    """A chat history from a client, checked: a list of {"role", "content"} with text content.
    Gradio's message dicts may carry extra keys (metadata, options) and content as a list of
    {"type": "text", "text": ...} parts; both are accepted. Notes shown in the UI (messages
    whose metadata has a title, such as a refusal's reason) are not part of the conversation:
    they are dropped, or with keep_notes (a UI's own copy) kept as {"role", "content",
    "metadata": {"title"}}."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise ValueError(f"the chat history must be a list of messages, got {type(history).__name__}")
    turns = []
    for i, msg in enumerate(history[-MAX_HISTORY_MESSAGES:]):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise ValueError(f"chat history message {i} must be a dict with role 'user' or "
                             "'assistant' and text content")
        metadata = msg.get("metadata")
        title = metadata.get("title") if isinstance(metadata, dict) else None
        if title and not keep_notes:
            continue
        content = msg.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content
                              if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ValueError(f"chat history message {i} has no text content")
        turn = {"role": msg["role"],
                "content": clean_text(content, "chat history message", allow_empty=True)}
        if title:
            turn["metadata"] = {"title": clean_text(str(title), "note title", allow_empty=True)}
        turns.append(turn)
    return turns


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
    """Replace the process-wide Workbench (the app's entry point calls this once at start-up)."""
    global _default
    with _default_lock:
        _default = Workbench(**kwargs)
        return _default


__all__ = ["Workbench", "get", "configure", "clean_text", "clean_history", "sampling_params",
           "training_policy", "TrainingPolicy", "is_exposed", "large_models_allowed",
           "token_label", "LIMITS", "SAMPLING_DEFAULTS", "SAMPLING_FIELDS", "SAMPLING_LABELS",
           "format_duration", "progress_parts", "notice_summary", "MODES", "CHAT_MODES",
           "MAX_INPUT_CHARS", "ModelLoadError"]
