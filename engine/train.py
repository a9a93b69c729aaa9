"""The training loop: pretraining and instruction tuning (SFT), evaluation, checkpoints, resume, DDP.

    cfg = resolve_config({"data": "data/story", "out": "runs/story"}, preset="story-cpu")
    check_run_dir(cfg, resume=False, force=False)   # clear errors before any compute
    train(cfg)

Run directory (`cfg.out`):
    train_config.json         the resolved TrainConfig (resume reads it back)
    tokenizer/                the run's tokenizer (GPT-2's, a trained BPE, or the init model's)
    metrics.jsonl             one JSON object per line (schema in docs/training.md)
    checkpoints/step-<N>/     model checkpoints (engine.checkpoint format) + trainer_state.json
                              + optimizer.pt; the last `keep_last` are kept
    checkpoints/best/         the checkpoint with the lowest validation loss so far
    stop                      created by a UI (engine.jobs) to ask the run to stop

Exact resume: the optimizer state, the step (which fixes the learning rate and the data
position, see data.Batches), the gradient scaler and the RNG state are saved with every step
checkpoint; a resumed run computes the same updates it would have computed uninterrupted.

Under torchrun, each process takes its share of every step's sequences; gradient accumulation is
grad_accum / world_size so the effective batch (batch_size * grad_accum sequences) does not change
with the number of processes. Rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import data as D
from .checkpoint import CheckpointError, list_checkpoints, read_weights, save_checkpoint
from .config import GPTConfig
from .device import pick_device
from .fileio import atomic_write_json, atomic_write_text
from .model import GPT
from .tokenizer import BPETokenizer, GPT2Tokenizer, Tokenizer

MAX_BLOCK_SIZE = 8192  # from-scratch context limit (a sanity bound: memory grows with T^2 in attention)
RUN_FILES = ("train_config.json", "metrics.jsonl", "checkpoints", "tokenizer", "stop")
JOB_FILES = {"job.json", "train.log", "stop"}  # written by engine.jobs around a run


@dataclass
class TrainConfig:
    """Everything a run needs. Field names are the CLI flags (n_layer -> --n-layer)."""

    data: str = ""
    out: str = ""
    val_data: str = ""  # held-out data of the same kind; "" = hold out val_fraction of data
    mode: str = "auto"  # auto | pretrain | sft (auto: sft for instruction data)
    init_from: str = ""  # start from this model (checkpoint, run dir, HF folder or hub id)
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
    grad_accum: int = 1  # micro-batches per step at world size 1 (divided by the world size)
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

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * (self.block_size or 256)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        def pos_int(name, lo=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")

        def num(name, lo, hi, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < lo or v > hi or (lo_open and v == lo):
                rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
                raise ValueError(f"{name.replace('_', '-')} must be a number in {rng}, got {v!r}")

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
            pos_int(name)
        for name in ("block_size", "warmup_steps", "sample_every", "max_data_tokens", "seed"):
            pos_int(name, 0)
        if self.block_size > MAX_BLOCK_SIZE:
            raise ValueError(f"block-size {self.block_size} is larger than this trainer allows "
                             f"({MAX_BLOCK_SIZE})")
        if self.n_embd % self.n_head:
            raise ValueError(f"n-embd ({self.n_embd}) must be divisible by n-head ({self.n_head})")
        if not 258 <= self.vocab_size <= 1_000_000:
            raise ValueError(f"vocab-size must be between 258 and 1000000, got {self.vocab_size}")
        num("lr", 0, 1, lo_open=True)
        num("min_lr_ratio", 0, 1)
        num("weight_decay", 0, 10)
        num("beta1", 0, 1)
        num("beta2", 0, 1)
        num("grad_clip", 0, 1e6)
        num("dropout", 0, 0.99)
        num("val_fraction", 0, 0.5)
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        pick_device(self.device)  # an unknown or unavailable device is an error now, not later


# Named recipes. A preset is a set of TrainConfig fields; flags given on the command line win.
PRESETS: dict[str, dict] = {
    # The classic TinyStories run (Eldan & Li's small models): GPT-2 tokenizer, 4x256, 512 context.
    "tinystories-gpu": dict(
        n_layer=4, n_head=4, n_embd=256, block_size=512, tokenizer="gpt2", batch_size=52,
        grad_accum=1, lr=5e-4, min_lr_ratio=0.1, warmup_steps=1000, max_steps=30000,
        weight_decay=0.1, eval_every=1000, eval_batches=50, save_every=2000, log_every=50,
        compile=True, sample_prompt="Once upon a time"),
    # A few minutes on a laptop CPU: a tiny model on a small BPE, enough to see the loss fall.
    "cpu-demo": dict(
        n_layer=2, n_head=2, n_embd=128, block_size=128, tokenizer="bpe", vocab_size=2048,
        batch_size=16, grad_accum=1, lr=2e-3, warmup_steps=30, max_steps=300, eval_every=100,
        eval_batches=10, save_every=100, log_every=10, sample_tokens=48),
    # The bundled story model: 4.3M parameters (17 MB), 8.2M tokens (~5 passes over the 1.7M
    # token Shakespeare/Milton corpus): ~40 min on 2 otherwise idle CPU cores (~3.5k tokens/s).
    "story-cpu": dict(
        n_layer=4, n_head=4, n_embd=256, block_size=256, tokenizer="bpe", vocab_size=4096,
        batch_size=16, grad_accum=1, lr=1e-3, min_lr_ratio=0.1, warmup_steps=100,
        max_steps=2000, weight_decay=0.1, dropout=0.1, eval_every=200, eval_batches=20,
        save_every=200, keep_last=2, log_every=10, sample_tokens=80),
    # The bundled Python assistant, stage 1 (~28 min): pretraining on the Python documentation
    # (0.9M tokens with a 4096 BPE; 6.1M tokens seen), same shape as the story model.
    "python-cpu": dict(
        n_layer=4, n_head=4, n_embd=256, block_size=256, tokenizer="bpe", vocab_size=4096,
        batch_size=16, grad_accum=1, lr=1e-3, min_lr_ratio=0.1, warmup_steps=100,
        max_steps=1500, weight_decay=0.1, dropout=0.1, eval_every=150, eval_batches=20,
        save_every=150, keep_last=2, log_every=10, sample_tokens=80),
    # Stage 2 (~12 min): instruction tuning on the Q/A pairs, loss on answers only; use with
    # --init-from <the python-cpu run> (its shape and tokenizer carry over).
    "python-sft-cpu": dict(
        mode="sft", batch_size=16, grad_accum=1, lr=5e-4, min_lr_ratio=0.1, warmup_steps=50,
        max_steps=600, weight_decay=0.05, dropout=0.1, eval_every=100, eval_batches=20,
        save_every=100, keep_last=2, log_every=10, sample_tokens=96),
}

# Fields that may change when a run is resumed; every other field must match the run's.
RESUME_CHANGEABLE = {"max_steps", "eval_every", "eval_batches", "save_every", "keep_last",
                     "log_every", "sample_every", "sample_prompt", "sample_tokens", "device",
                     "dtype", "compile", "cache_dir", "data", "val_data"}


def resolve_config(options: dict, preset: str | None = None, resume: bool = False) -> TrainConfig:
    """Defaults < preset < options. With resume, the run's saved config replaces the defaults and
    the preset, and options may only change RESUME_CHANGEABLE fields."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
    options = {k: _coerce(k, v) for k, v in options.items() if v is not None}
    if resume:
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
                f"{k.replace('_', '-')} (run has {base.get(k)!r}, got {options[k]!r})" for k in changed)
                + " when resuming; start a new run to change them")
        cfg = TrainConfig(**{**base, **options})
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


def _coerce(name: str, value):
    """Integral floats for integer options (a UI number widget gives 300.0 for 300)."""
    if type(getattr(TrainConfig, name, None)) is int and not isinstance(value, bool) \
            and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------
# The run directory


def run_state(out: Path) -> str:
    """'empty' (absent or empty), 'run' (holds a training run) or 'other' (other files)."""
    if not out.exists():
        return "empty"
    if not out.is_dir():
        return "other"
    names = {p.name for p in out.iterdir()} - JOB_FILES
    if not names:
        return "empty"
    return "run" if names & {"train_config.json", "checkpoints", "metrics.jsonl"} else "other"


def check_run_dir(cfg: TrainConfig, resume: bool, force: bool) -> None:
    """Refuse to overwrite anything without --resume or --force (before any compute)."""
    if resume and force:
        raise ValueError("--resume and --force contradict each other: resume continues the run, "
                         "force deletes it")
    out = Path(cfg.out)
    state = run_state(out)
    if state == "other":
        what = "is a file" if out.is_file() else "holds files that are not a training run"
        raise ValueError(f"{out}: {what}; choose another --out (nothing was changed)")
    if state == "run" and not resume and not force:
        ckpts = list_checkpoints(out)
        last = f", last checkpoint at step {ckpts[-1][0]}" if ckpts else ""
        raise ValueError(f"{out}: already holds a training run{last}; pass --resume to continue "
                         "it or --force to delete it and start over")


def clear_run(out: Path) -> None:
    """--force: delete a previous run's files (only the files a run writes)."""
    for name in RUN_FILES:  # not job.json / train.log: the job runner starting this run owns them
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# ---------------------------------------------------------------------------------------------
# Pieces of the loop


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits = h @ W^T against targets (-100 ignored), computed a chunk of
    rows at a time, with the gradients worked out in the forward pass (the loss is the last node
    of the graph). The (tokens x vocabulary) logits and their gradient are never materialised
    whole: on a CPU, writing, reading and zero-filling those arrays (400 MB per step for GPT-2's
    vocabulary at batch 8 x 256) costs as much as a third of the step. Same FLOPs as F.linear +
    F.cross_entropy."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int):
        n = targets.ne(-100).sum().clamp(min=1)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight)
        total = h.new_zeros((), dtype=torch.float32)
        for s in range(0, h.size(0), chunk):
            hc, tc = h[s:s + chunk], targets[s:s + chunk]
            valid = tc.ne(-100)
            tgt = tc.clamp(min=0)
            logits = (hc @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, tgt[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(len(tgt), device=h.device), tgt] -= 1.0
            probs *= valid[:, None]
            g = probs.to(h.dtype)
            grad_h[s:s + chunk] = g @ weight
            grad_w.addmm_(g.t(), hc)
        ctx.save_for_backward(grad_h, grad_w, n)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, n = ctx.saved_tensors
        scale = grad_out / n
        return grad_h * scale, grad_w * scale, None, None


def training_module(model: GPT, device: torch.device) -> torch.nn.Module:
    """What the loop calls as module(x, y) -> (_, loss): the chunked loss on CPUs, else the GPT."""
    return ChunkedLossGPT(model) if device.type == "cpu" else model


class ChunkedLossGPT(torch.nn.Module):
    """Training view of a GPT for CPUs: the model's own layers, then _LinearCrossEntropy instead
    of full logits + cross_entropy. forward(idx, targets) -> (None, loss), like GPT's with
    targets. (GPUs use GPT.forward: fused kernels and autocast serve them better.)"""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        vocab = model.config.vocab_size
        self.chunk = max(64, (1 << 23) // vocab)  # ~32 MB of float32 logits per chunk

    def forward(self, idx: torch.Tensor, targets: torch.Tensor):
        t = self.model.transformer
        pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        x = t.drop(t.wte(idx) + t.wpe(pos))
        for block in t.h:
            x = block(x)
        x = t.ln_f(x)
        h = x.reshape(-1, x.size(-1))
        return None, _LinearCrossEntropy.apply(h, self.model.lm_head.weight, targets.reshape(-1), self.chunk)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # Weight decay on matrices only (Linear and embedding weights); biases and LayerNorm gains
    # are not decayed (decaying them only hurts). The tied head is one parameter, counted once.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters in one pass; on a CPU it is an order of magnitude
    # faster than the default multi-tensor ("foreach") loop, which matters for small models.
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # an older torch without fused on this device
            pass
    return torch.optim.AdamW(groups, **kwargs)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA when supported, else fp16 (with a GradScaler); none on CPU
    unless asked (CPU bf16 autocast is slower than fp32 on most CPUs)."""
    if cfg.dtype == "float32":
        return None
    if cfg.dtype == "bfloat16":
        return torch.bfloat16
    if cfg.dtype == "float16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


class Dist:
    """torch.distributed when launched by torchrun (RANK/WORLD_SIZE set), else one process."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
            if cuda:
                torch.cuda.set_device(self.local_rank)
                self.device = torch.device("cuda", self.local_rank)
            else:
                self.device = torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if cuda else "gloo")
        else:
            self.device = pick_device(device_name)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class Metrics:
    """Appends JSON lines to <run>/metrics.jsonl (rank 0 only). One line per event, flushed, so a
    reader (the UIs) sees each event as soon as it happens; a torn last line after a crash is
    skipped by readers and dropped on resume."""

    def __init__(self, path: Path, enabled: bool, on_event: Callable[[dict], None] | None) -> None:
        self.path, self.enabled, self.on_event = path, enabled, on_event
        self.t0 = time.time()

    def log(self, event: dict) -> None:
        event = {**event, "time": round(time.time(), 3)}
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")
        if self.on_event:
            self.on_event(event)


def read_metrics(path: Path | str) -> list[dict]:
    """The events of a metrics.jsonl file, skipping a torn or unreadable line."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    out.append(event)
    except FileNotFoundError:
        pass
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume: keep the events up to the checkpoint's step (the rest will be redone)."""
    if path.exists():
        keep = [e for e in read_metrics(path) if e.get("step", 0) <= step and e.get("type") != "end"]
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in keep))


# ---------------------------------------------------------------------------------------------
# The trainer


class StopRequested:
    """SIGINT/SIGTERM or a <run>/stop file: finish the current step, save, exit cleanly."""

    def __init__(self, stop_file: Path) -> None:
        self.stop_file = stop_file
        self.flag = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a test calling train() in a thread)
                pass
        return self

    def _handle(self, signum, frame):
        if self.flag:  # a second signal: stop now, without saving
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def requested(self) -> bool:
        return self.flag or self.stop_file.exists()


def _bytes_of(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load_tokenizer(cfg: TrainConfig, source: D.Source, run: Path, dist: Dist,
                    init_tokenizer: Tokenizer | None) -> Tokenizer:
    tok_dir = run / "tokenizer"
    existing = (tok_dir / "tokenizer_config.json").is_file()
    dist.barrier()  # every process has looked before rank 0 writes one
    if init_tokenizer is not None:
        tok = init_tokenizer
    elif existing:  # resume: the run's own tokenizer
        from .checkpoint import read_tokenizer
        return read_tokenizer(tok_dir)
    elif cfg.tokenizer == "gpt2":
        tok = GPT2Tokenizer()
    else:
        if dist.main:
            print(f"training a byte-level BPE tokenizer ({cfg.vocab_size} tokens) on {cfg.data} ...",
                  file=sys.stderr)
            tok = BPETokenizer.train(D.tokenizer_corpus(source), cfg.vocab_size)
            tok_dir.mkdir(parents=True, exist_ok=True)
            tok.save(tok_dir)
        dist.barrier()  # the other processes read the tokenizer rank 0 trained
        if dist.main:
            return tok
        from .checkpoint import read_tokenizer
        return read_tokenizer(tok_dir)
    if dist.main:
        tok_dir.mkdir(parents=True, exist_ok=True)
        tok.save(tok_dir)
    dist.barrier()
    return tok


def _model_card(cfg: TrainConfig, model: GPT, summary: dict, sample: str) -> str:
    c = model.config
    lines = [
        f"# {Path(cfg.out).name}", "",
        f"A GPT-2 style model ({model.num_params() / 1e6:.2f}M parameters: {c.n_layer} layers, "
        f"{c.n_head} heads, {c.n_embd} dims, {c.block_size}-token context, vocabulary "
        f"{c.vocab_size}) trained with gpt-workbench.", "",
        "## Training", "",
        f"- data: `{cfg.data}` ({summary.get('mode')})",
        f"- started from: `{cfg.init_from}`" if cfg.init_from else "- started from: random init",
        f"- preset: `{cfg.preset}`" if cfg.preset else "- preset: none",
        f"- steps: {summary['step']} of {cfg.max_steps}; tokens seen: {summary['tokens']:,}",
        f"- batch: {cfg.batch_size} x {cfg.grad_accum} sequences of up to {c.block_size} tokens; "
        f"AdamW lr {cfg.lr:g}, warmup {cfg.warmup_steps}, cosine to {cfg.lr * cfg.min_lr_ratio:g}",
    ]
    if summary.get("val_loss") is not None:
        lines.append(f"- validation loss: {summary['val_loss']:.4f} "
                     f"(perplexity {math.exp(min(summary['val_loss'], 50)):.2f})")
    lines += ["", "Reproduce:", "", "```", summary["command"], "```"]
    if sample:
        lines += ["", "## Sample", "", "```", sample.strip(), "```"]
    return "\n".join(lines) + "\n"


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
            flag = "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                parts.append(flag if v else f"--no-{flag[2:]}")
            else:
                parts.append(f"{flag} {json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}")
    return " ".join(parts)


def train(cfg: TrainConfig, resume: bool = False, force: bool = False,
          on_event: Callable[[dict], None] | None = None, progress: bool | None = None) -> dict:
    """Run (or continue) a training run. Returns the final summary (also the last metrics line).

    on_event receives every metrics event (rank 0), for in-process callers. progress: show tqdm
    (default: when stderr is a terminal); otherwise a line per log step goes to stdout.
    """
    cfg.validate()
    run = Path(cfg.out)
    dist = Dist(cfg.device)
    try:
        return _train(cfg, run, dist, resume, force, on_event, progress)
    finally:
        dist.close()


def _train(cfg, run, dist, resume, force, on_event, progress) -> dict:
    if dist.main:
        check_run_dir(cfg, resume, force)
        if force:
            clear_run(run)
        run.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (run / "stop").unlink()  # a stale stop request must not end the new run at once
    dist.barrier()
    device = dist.device
    if cfg.grad_accum % dist.world:
        raise ValueError(f"grad-accum ({cfg.grad_accum}) must be a multiple of the number of "
                         f"processes ({dist.world}) to keep the effective batch the same")

    # ---- data (validated before any model is built)
    source = D.open_source(cfg.data)
    mode = cfg.mode if cfg.mode != "auto" else ("sft" if source.kind == "instruct" else "pretrain")
    if mode == "sft" and source.kind != "instruct":
        raise ValueError(f"{cfg.data}: --mode sft needs instruction data (Alpaca or Dolly JSONL)")
    if mode == "pretrain" and source.kind == "instruct":
        raise ValueError(f"{cfg.data}: instruction data trains with --mode sft (or auto)")
    val_source = D.open_source(cfg.val_data) if cfg.val_data else None
    if val_source is not None and val_source.kind != source.kind:
        raise ValueError(f"{cfg.val_data}: validation data is {val_source.kind} but the training "
                         f"data is {source.kind}; they must be of the same kind")
    for src in (source, val_source):
        if src is not None and not src.is_hf:
            # A full pass over local files: bad UTF-8 or a bad JSONL line fails now, not later.
            for _ in (D.iter_examples(src) if src.kind == "instruct" else D.iter_documents(src)):
                pass

    init_model, init_tok = None, None
    if cfg.init_from:
        from .models import load_model

        ckpt = load_model(cfg.init_from, device="cpu")
        init_model, init_tok = ckpt.model.float(), ckpt.tokenizer
        if cfg.block_size > init_model.config.block_size:
            raise ValueError(f"block-size {cfg.block_size} is larger than the context window of "
                             f"{cfg.init_from} ({init_model.config.block_size})")

    if dist.main and not resume:
        atomic_write_json(run / "train_config.json", cfg.to_dict())
    tokenizer = _load_tokenizer(cfg, source, run, dist, init_tok)
    if init_model is not None:
        model_cfg = init_model.config
    else:
        model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size or 256,
                              n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                              dropout=cfg.dropout)
    block = cfg.block_size or model_cfg.block_size

    max_tokens = cfg.max_data_tokens or None
    if source.is_hf and max_tokens is None:  # stream only what the run needs (+ validation)
        max_tokens = max(1_000_000, int(cfg.max_steps * cfg.tokens_per_step * 1.2))
    cache = Path(cfg.cache_dir) if cfg.cache_dir else D.DEFAULT_CACHE
    val_fraction = 0.0 if val_source is not None else cfg.val_fraction

    def tokenize(src, fraction, limit, show):
        bar = _bar(progress, desc="tokenizing", unit="tok") if show else None
        out = D.prepare(src, tokenizer, cache, fraction, limit, block,
                        progress=bar.update if bar else None)
        if bar:
            bar.close()
        return out

    for rank_turn in (True, False):  # rank 0 fills the cache first; the others then read it
        if dist.main == rank_turn:
            data = tokenize(source, val_fraction, max_tokens, dist.main)
            val_data = tokenize(val_source, 0.0, max_tokens, dist.main) if val_source else None
        dist.barrier()
    train_batches = D.Batches(data, block, cfg.seed, "train")
    val_batches = (D.Batches(val_data, block, cfg.seed, "train") if val_data is not None
                   else D.Batches(data, block, cfg.seed, "val"))
    if len(train_batches) == 0:
        raise ValueError(f"{cfg.data}: too little training data ({len(data.train)} tokens) for "
                         f"one {block}-token sequence; add data or lower --block-size")

    # ---- model, optimizer, state
    torch.manual_seed(cfg.seed)
    model = init_model if init_model is not None else GPT(model_cfg)
    if init_model is not None and cfg.dropout:
        for m in model.modules():  # dropout is not part of a model's weights: apply the run's
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.dropout
            if hasattr(m, "dropout") and isinstance(m.dropout, float):
                m.dropout = cfg.dropout
    model.to(device)
    optimizer = make_optimizer(model, cfg, device)
    adt = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=adt == torch.float16)
    step, best_val, tokens_seen, elapsed_before = 0, float("inf"), 0, 0.0
    resumed_from = None
    torch.manual_seed(cfg.seed + 1 + dist.rank)  # dropout stream, distinct per process

    if resume:
        for ckpt_step, path in reversed(list_checkpoints(run)):
            try:
                state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
                read_weights(path / "model.safetensors", model)
                blob = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
            except (OSError, ValueError, CheckpointError, RuntimeError) as e:
                print(f"warning: skipping checkpoint {path}: {e}", file=sys.stderr)
                continue
            optimizer.load_state_dict(blob["optimizer"])
            if blob.get("scaler"):
                scaler.load_state_dict(blob["scaler"])
            if dist.main:
                torch.set_rng_state(blob["rng_cpu"])
                if device.type == "cuda" and blob.get("rng_cuda") is not None:
                    torch.cuda.set_rng_state(blob["rng_cuda"], device)
            else:
                torch.manual_seed(cfg.seed + 1 + dist.rank + 1000 * state["step"])
            step, best_val = state["step"], state.get("best_val") or float("inf")
            tokens_seen, elapsed_before = state.get("tokens", 0), state.get("elapsed_s", 0.0)
            resumed_from = str(path)
            break
        if dist.main:
            _truncate_metrics(run / "metrics.jsonl", step)

    raw_model = model
    model = training_module(model, device)
    if cfg.compile:
        model = torch.compile(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    accum = cfg.grad_accum // dist.world
    seqs_per_step = cfg.batch_size * cfg.grad_accum
    autocast = (torch.autocast(device.type, dtype=adt) if adt is not None else contextlib.nullcontext())

    metrics = Metrics(run / "metrics.jsonl", dist.main, on_event)
    sample_prompt = cfg.sample_prompt or _default_prompt(val_data or data, tokenizer, val_data is not None)
    summary = {"mode": mode, "step": step, "tokens": tokens_seen, "val_loss": None,
               "command": command_line(cfg)}
    metrics.log({"type": "start", "step": step, "max_steps": cfg.max_steps, "mode": mode,
                 "resumed_from": resumed_from, "world_size": dist.world, "device": str(device),
                 "params": raw_model.num_params(), "train_tokens": int(_ntokens(data, "train")),
                 "val_tokens": int(_ntokens(val_data, "train") if val_data is not None else _ntokens(data, "val")),
                 "tokens_per_step": seqs_per_step * block,
                 "config": cfg.to_dict()})

    def evaluate() -> float | None:
        n = min(len(val_batches), cfg.eval_batches * cfg.batch_size)
        if n == 0:
            return None
        raw_model.eval()
        total = count = 0.0
        with torch.no_grad():
            for start in range(dist.rank * cfg.batch_size, n, cfg.batch_size * dist.world):
                x, y = val_batches.take(start, min(cfg.batch_size, n - start), shuffle=False)
                x, y = x.to(device), y.to(device)
                with autocast:
                    _, loss = raw_model(x, y)
                k = int((y != -100).sum())
                total, count = total + float(loss) * k, count + k
        raw_model.train()
        total, count = dist.all_sum([total, count])
        return total / count if count else None

    def sample() -> str:
        from .generation import generate
        from .sampling import SamplingParams

        params = SamplingParams(temperature=0.8, top_k=50, max_new_tokens=cfg.sample_tokens,
                                seed=cfg.seed)
        try:
            text = generate(raw_model, tokenizer, sample_prompt, params)
        finally:
            raw_model.train()
        return text

    def save(kind: str = "step") -> Path:
        sample_text = last_sample[0]
        card = _model_card(cfg, raw_model, {**summary, "step": step, "tokens": tokens_seen}, sample_text)
        if kind == "best":
            path = save_checkpoint(run / "checkpoints" / "best", raw_model, tokenizer, card,
                                   {"trainer_state.json": json.dumps({"step": step, "val_loss": best_val}).encode()})
            return path
        state = {"step": step, "best_val": best_val if math.isfinite(best_val) else None,
                 "tokens": tokens_seen, "elapsed_s": elapsed_before + time.time() - t_start,
                 "data_position": step * seqs_per_step, "world_size": dist.world, "mode": mode}
        blob = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        path = save_checkpoint(run / "checkpoints" / f"step-{step}", raw_model, tokenizer, card,
                               {"trainer_state.json": json.dumps(state, indent=2).encode(),
                                "optimizer.pt": _bytes_of(blob)})
        for _, old in list_checkpoints(run)[:-cfg.keep_last]:
            # Rename first: a half-deleted directory must never look like a checkpoint.
            trash = old.parent / f".{old.name}.deleting"
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
        metrics.log({"type": "checkpoint", "step": step, "path": str(path)})
        return path

    last_sample = [""]
    last_saved = step if resumed_from else -1
    t_start = time.time()
    bar = _bar(progress and dist.main, total=cfg.max_steps, initial=step, desc="training", unit="step") \
        if dist.main else None
    state = "finished"
    window_t, window_tokens = time.time(), 0
    model.train()
    with StopRequested(run / "stop") as stop:
        while step < cfg.max_steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            base = step * seqs_per_step
            loss_sum = torch.zeros((), device=device)  # summed on the device: one sync per step
            ntok = 0
            for micro in range(accum):
                start = base + (micro * dist.world + dist.rank) * cfg.batch_size
                x, y = train_batches.take(start, cfg.batch_size)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = not dist.enabled or micro == accum - 1
                with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                    _, loss = model(x, y)
                    loss = loss / accum
                scaler.scale(loss).backward()
                loss_sum += loss.detach().float()
                ntok += x.numel()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_sum, ntok_all, stop_any = dist.all_sum([float(loss_sum), ntok, float(stop.requested())])
            loss_val = loss_sum / dist.world
            tokens_seen += int(ntok_all)
            window_tokens += int(ntok_all)
            if not math.isfinite(loss_val):
                raise FloatingPointError(f"loss became {loss_val} at step {step}; lower --lr "
                                         "or raise --warmup-steps")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.2e}", refresh=False)
            if step % cfg.log_every == 0 or step == cfg.max_steps or stop_any:
                now = time.time()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                event = {"type": "train", "step": step, "max_steps": cfg.max_steps,
                         "loss": round(loss_val, 5), "lr": lr, "tokens_per_s": round(tps, 1),
                         "tokens": tokens_seen, "elapsed_s": round(elapsed_before + now - t_start, 2)}
                metrics.log(event)
                if bar is None and dist.main:
                    print(f"step {step}/{cfg.max_steps}  loss {loss_val:.4f}  lr {lr:.2e}  "
                          f"{tps:,.0f} tok/s", flush=True)
            final = step == cfg.max_steps
            if step % cfg.eval_every == 0 or final:
                val = evaluate()
                if val is not None:
                    summary["val_loss"] = val
                    metrics.log({"type": "eval", "step": step, "val_loss": round(val, 5),
                                 "val_ppl": round(math.exp(min(val, 50)), 3)})
                    if bar is not None:
                        bar.write(f"step {step}: val loss {val:.4f}")
                if dist.main and (cfg.sample_every == 0 or step % cfg.sample_every == 0 or final):
                    last_sample[0] = sample()
                    metrics.log({"type": "sample", "step": step, "prompt": sample_prompt,
                                 "text": last_sample[0]})
                if val is not None and val < best_val:
                    best_val = val
                    if dist.main:
                        save("best")
            elif cfg.sample_every and step % cfg.sample_every == 0 and dist.main:
                last_sample[0] = sample()
                metrics.log({"type": "sample", "step": step, "prompt": sample_prompt, "text": last_sample[0]})
            stopping = stop_any > 0 and not final
            if step % cfg.save_every == 0 or final or stopping:
                summary.update(step=step, tokens=tokens_seen)
                if dist.main:
                    save()
                last_saved = step
                dist.barrier()
            if stopping:
                state = "stopped"
                break
    if bar is not None:
        bar.close()
    summary.update(step=step, tokens=tokens_seen, state=state,
                   best_val_loss=best_val if math.isfinite(best_val) else None,
                   elapsed_s=round(elapsed_before + time.time() - t_start, 2))
    if dist.main and last_saved != step:
        save()
    metrics.log({"type": "end", **summary})
    if dist.main:
        with contextlib.suppress(FileNotFoundError):
            (run / "stop").unlink()
    return summary


def _ntokens(data, split: str) -> int:
    if isinstance(data, D.ExampleData):
        rows = data.train if split == "train" else data.val
        return int(rows[:, 1].sum()) if len(rows) else 0
    return len(data.train if split == "train" else data.val)


def _default_prompt(data, tokenizer: Tokenizer, all_val: bool) -> str:
    """A prompt for sample generations: the first validation example's prompt (SFT), or the
    opening words of a validation document (pretraining). all_val: data is the --val-data."""
    if isinstance(data, D.ExampleData):
        rows = data.train if all_val or not len(data.val) else data.val
        offset, _, plen = (int(v) for v in rows[0])
        return tokenizer.decode(int(t) for t in data.tokens[offset:offset + plen])
    tokens = data.train if all_val or len(data.val) <= 16 else data.val
    head = [int(t) for t in tokens[:4096]]
    start = head.index(tokenizer.eot_id) + 1 if tokenizer.eot_id in head[:-8] else 0
    text = tokenizer.decode(head[start:start + 8])
    return text.strip() or "The"


def _bar(enabled: bool | None, **kwargs):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Evaluation of any model (python -m engine eval)


def evaluate_model(model_spec: str, data_spec: str, split: str = "val", val_fraction: float = 0.1,
                   block_size: int = 0, batch_size: int = 8, max_batches: int = 0,
                   max_data_tokens: int = 0, cache_dir: str = "", device: str = "auto") -> dict:
    """Mean cross-entropy (response tokens only for instruction data) and perplexity."""
    from .models import load_model

    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be val, train or all, got {split!r}")
    for name, v in (("batch-size", batch_size),):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name, v in (("block-size", block_size), ("max-batches", max_batches),
                    ("max-data-tokens", max_data_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val-fraction must be in (0, 1), got {val_fraction}")
    source = D.open_source(data_spec)
    dev = pick_device(device)
    ckpt = load_model(model_spec, device=dev)
    model, tokenizer = ckpt.model.eval(), ckpt.tokenizer
    block = block_size or model.config.block_size
    if block > model.config.block_size:
        raise ValueError(f"block-size {block} is larger than the model's context window "
                         f"({model.config.block_size})")
    max_tokens = max_data_tokens or (1_000_000 if source.is_hf else None)
    data = D.prepare(source, tokenizer, Path(cache_dir) if cache_dir else D.DEFAULT_CACHE,
                     0.0 if split == "all" else val_fraction, max_tokens, block)
    batches = D.Batches(data, block, 0, "val" if split == "val" else "train")
    n = len(batches)
    if max_batches:
        n = min(n, max_batches * batch_size)
    if n == 0:
        raise ValueError(f"{data_spec}: the {split} split holds no complete {block}-token sequence; "
                         "use --split all or a smaller --block-size")
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x, y = batches.take(start, min(batch_size, n - start), shuffle=False)
            _, loss = model(x.to(dev), y.to(dev))
            k = int((y != -100).sum())
            total, count = total + float(loss) * k, count + k
    loss = total / count
    return {"model": model_spec, "data": data_spec, "split": split, "loss": loss,
            "perplexity": math.exp(min(loss, 50)), "tokens": int(count), "sequences": n}
