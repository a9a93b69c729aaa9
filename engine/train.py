"""The training loop: pretraining and instruction tuning (SFT), with exact resume and DDP.

    from engine.train_config import resolve_config
    from engine.run_dir import check_run_dir
    from engine.train import train

    cfg = resolve_config({"data": "data/story", "out": "runs/story"}, preset="story-cpu")
    check_run_dir(cfg, resume=False, force=False)   # clear errors before any compute
    summary = train(cfg)                            # {"state": "finished", "step": ..., ...}

The run, top to bottom (see train() / _run()): the run directory, the data, the tokenizer, the
model, the optimizer, the restore of a checkpoint, then the loop: a step, a metrics line, an
evaluation with a sample, a checkpoint. What the loop changes lives in one State; what it uses
and does not change lives in one Run. Next to this module: the options (train_config, presets),
the run directory (run_dir), evaluation (evaluate), metrics.jsonl (metrics), processes
(distributed) and the CPU loss (chunked_loss).

Exact resume: the optimizer state, the step (which fixes the learning rate), the data position
(items consumed, see data.Batches), the gradient scaler and the RNG state are saved with every step
checkpoint (JSON and torch tensors, nothing pickled); a resumed run computes the same updates it
would have computed uninterrupted.

Under torchrun, each process takes its share of every step's sequences (distributed.batch_plan:
the batch_size * grad_accum sequences of one process are shared when they can be, with any
preset; otherwise each process keeps them and a note says the step grew). Rank 0 alone writes
files.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import data as D
from . import lora
from .checkpoint import (Checkpoint, CheckpointError, list_checkpoints, read_checkpoint_weights,
                         save_checkpoint)
from .chunked_loss import training_module
from .config import GPTConfig
from .distributed import BatchPlan, Dist, batch_plan
from .evaluate import default_prompt, perplexity, sample_text, token_byte_counts, validation_loss
from .fileio import atomic_write_json
from .metrics import MetricsLog, truncate_metrics
from .model import GPT
from .loop_control import StopRequested, Throughput
from .run_dir import RunLock, prepare_run_dir
from .tokenizer import BPETokenizer, GPT2Tokenizer, Tokenizer
from .train_config import TrainConfig, command_line


@dataclass
class State:
    """What the loop changes. Saved with every step checkpoint (trainer_state.json); with the
    weights, the optimizer, the gradient scaler and the RNG it is all an exact resume needs."""

    step: int = 0  # optimizer steps done; also fixes the learning rate
    position: int = 0  # training items consumed, all processes (the data position)
    tokens: int = 0  # tokens trained on, all processes
    best_val: float = math.inf  # the lowest validation loss (checkpoints/best)
    val_loss: float | None = None  # the latest validation loss of this session
    val_bpb: float | None = None  # its bits per byte
    sample: str = ""  # the latest sample generation, for the model card
    elapsed_before: float = 0.0  # seconds spent by earlier sessions of this run
    started: float = 0.0  # time.time() when this session's loop began
    resumed_from: str | None = None  # the checkpoint this session started from
    last_saved: int = -1  # the step of the last step checkpoint

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started


@dataclass
class TrainData:
    train: D.Batches
    val: D.Batches
    block: int  # sequence length
    train_tokens: int
    val_tokens: int
    sample_prompt: str


@dataclass
class Run:
    """What the loop uses and does not change."""

    cfg: TrainConfig
    dir: Path
    dist: Dist
    plan: BatchPlan  # how a step's sequences are shared among the processes
    mode: str  # "pretrain" | "sft"
    tokenizer: Tokenizer
    data: TrainData
    model: GPT  # the weights: checkpoints, evaluation and samples use it directly
    module: torch.nn.Module  # what a step calls: the model behind the chunked loss, compile, DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: contextlib.AbstractContextManager
    metrics: MetricsLog


def train(cfg: TrainConfig, resume: bool = False, force: bool = False,
          on_event: Callable[[dict], None] | None = None, progress: bool | None = None) -> dict:
    """Run (or continue) a training run. Returns the final summary (also the last metrics line).

    on_event receives every metrics event (rank 0), for in-process callers. progress: show tqdm
    (default: when stderr is a terminal); otherwise a line per log step goes to stdout.
    """
    cfg.validate()
    dist = Dist(cfg.device)
    lock: RunLock | None = None
    run: Run | None = None
    stage = "setup"
    try:
        if dist.main:  # rank 0 owns the run directory until the run ends
            lock = prepare_run_dir(cfg, resume, force)
        dist.barrier()
        run, state = _setup(cfg, dist, resume, on_event, progress)
        stage = "loop"
        summary = _loop(run, state, progress)
        stage = "done"
        return summary
    finally:
        if lock is not None:  # a run that failed before training leaves no empty folder
            lock.release(failed=stage == "setup")
        run = None  # DDP holds the process group: let go of it before the group is destroyed
        dist.close(clean=stage == "done")


def _setup(cfg: TrainConfig, dist: Dist, resume: bool,
           on_event: Callable[[dict], None] | None, progress: bool | None) -> tuple[Run, State]:
    """Everything before the first step, in the order that reports bad input soonest: (the run
    directory, see train()), the data sources (a full read of local files), the init model,
    then tokenizing."""
    run_dir = Path(cfg.out)
    plan = batch_plan(cfg.batch_size, cfg.grad_accum, dist.world)
    if dist.main and plan.note:
        print(f"note: {plan.note}", file=sys.stderr, flush=True)
    source, val_source, mode = open_sources(cfg)
    init = load_init_model(cfg)
    if dist.main and not resume:
        atomic_write_json(run_dir / "train_config.json", cfg.to_dict())
    tokenizer = load_tokenizer(cfg, source, run_dir, dist, init.tokenizer if init else None)
    model_cfg = init.model.config if init else GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=cfg.block_size or 256, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)
    data = load_data(cfg, source, val_source, tokenizer, cfg.block_size or model_cfg.block_size,
                     plan.sequences, dist, progress)

    model = build_model(cfg, model_cfg, init, dist.device)
    optimizer = make_optimizer(model, cfg, dist.device)
    adt = amp_dtype(cfg, dist.device)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=adt == torch.float16)
    state = State()
    torch.manual_seed(cfg.seed + 1 + dist.rank)  # dropout stream, distinct per process
    if resume:
        skipped = restore(run_dir, model, optimizer, scaler, state, dist, cfg.seed,
                          plan.sequences)
        if dist.main:
            truncate_metrics(run_dir / "metrics.jsonl", state.step)
            print(resume_message(cfg, state, skipped), file=sys.stderr, flush=True)
    run = Run(cfg=cfg, dir=run_dir, dist=dist, plan=plan, mode=mode, tokenizer=tokenizer, data=data,
              model=model, module=training_view(model, cfg, dist), optimizer=optimizer,
              scaler=scaler, metrics=MetricsLog(run_dir / "metrics.jsonl", dist.main, on_event),
              autocast=(torch.autocast(dist.device.type, dtype=adt) if adt is not None
                        else contextlib.nullcontext()))
    return run, state


# ---------------------------------------------------------------------------------------------
# Data


def open_sources(cfg: TrainConfig) -> tuple[D.Source, D.Source | None, str]:
    """(training source, validation source or None, mode), checked before any model is built:
    the mode fits the data, both sources are of one kind, local files read through."""
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
    return source, val_source, mode


def load_data(cfg: TrainConfig, source: D.Source, val_source: D.Source | None,
              tokenizer: Tokenizer, block: int, sequences_per_step: int, dist: Dist,
              progress: bool | None) -> TrainData:
    """Tokenize (into the cache, once) and open the data; batches in their seeded order."""
    max_tokens = cfg.max_data_tokens or None
    if source.is_hf and max_tokens is None:  # stream only what the run needs (+ validation)
        max_tokens = max(1_000_000, int(cfg.max_steps * sequences_per_step * block * 1.2))
    cache = Path(cfg.cache_dir) if cfg.cache_dir else D.DEFAULT_CACHE
    val_fraction = 0.0 if val_source is not None else cfg.val_fraction

    def tokenize(src: D.Source, fraction: float):
        bar = _bar(progress, desc="tokenizing", unit="tok") if dist.main else None
        # `is not None`: a tqdm bar without a total has no truth value (bool() raises)
        out = D.prepare(src, tokenizer, cache, fraction, max_tokens, block,
                        progress=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        return out

    for rank_turn in (True, False):  # rank 0 fills the cache first; the others then read it
        if dist.main == rank_turn:
            data = tokenize(source, val_fraction)
            val_data = tokenize(val_source, 0.0) if val_source else None
        dist.barrier()
    train_batches = D.Batches(data, block, cfg.seed, "train")
    if len(train_batches) == 0:
        raise ValueError(f"{cfg.data}: too little training data ({len(data.train)} tokens) for "
                         f"one {block}-token sequence; add data or lower --block-size")
    if val_data is not None:  # --val-data: all of it is validation
        val_batches, val_tokens = D.Batches(val_data, block, cfg.seed, "train"), val_data.num_tokens("train")
    else:
        val_batches, val_tokens = D.Batches(data, block, cfg.seed, "val"), data.num_tokens("val")
    prompt = cfg.sample_prompt or default_prompt(val_data or data, tokenizer, val_data is not None)
    return TrainData(train=train_batches, val=val_batches, block=block,
                     train_tokens=data.num_tokens("train"), val_tokens=val_tokens,
                     sample_prompt=prompt)


def load_tokenizer(cfg: TrainConfig, source: D.Source, run: Path, dist: Dist,
                   init_tokenizer: Tokenizer | None) -> Tokenizer:
    """The init model's tokenizer, the run's own (resume), GPT-2's, or a BPE trained on the data
    (rank 0 trains it; the others read it). Saved in <run>/tokenizer/ by rank 0."""
    from .checkpoint import read_tokenizer

    tok_dir = run / "tokenizer"
    existing = (tok_dir / "tokenizer_config.json").is_file()
    dist.barrier()  # every process has looked before rank 0 writes one
    if init_tokenizer is not None:
        tok = init_tokenizer
    elif existing:  # resume: the run's own tokenizer
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
        return tok if dist.main else read_tokenizer(tok_dir)
    if dist.main:
        tok_dir.mkdir(parents=True, exist_ok=True)
        tok.save(tok_dir)
    dist.barrier()
    return tok


# ---------------------------------------------------------------------------------------------
# Model and optimizer


def load_init_model(cfg: TrainConfig) -> Checkpoint | None:
    """--init-from: the model to start from (float32, on the CPU until build_model), or None."""
    if not cfg.init_from:
        return None
    from .loading import load_model

    init = load_model(cfg.init_from, device="cpu")
    init.model.float()  # in place: training keeps float32 weights (autocast does the rest)
    if cfg.block_size > init.model.config.block_size:
        raise ValueError(f"block-size {cfg.block_size} is larger than the context window of "
                         f"{cfg.init_from} ({init.model.config.block_size})")
    return init


def build_model(cfg: TrainConfig, model_cfg: GPTConfig, init: Checkpoint | None,
                device: torch.device) -> GPT:
    torch.manual_seed(cfg.seed)  # the same init weights for the same seed
    model = init.model if init is not None else GPT(model_cfg)
    if init is not None and cfg.dropout:
        set_dropout(model, cfg.dropout)
    if cfg.lora_rank:  # only the adapters train; checkpoints hold them alone (engine/lora.py)
        lora.start_run(model, cfg)
    return model.to(device)


def set_dropout(model: GPT, p: float) -> None:
    """Dropout is not part of a model's weights: a run that starts from a model applies its own
    (the model's config, which its checkpoints keep, is left as it was)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = p


def training_view(model: GPT, cfg: TrainConfig, dist: Dist) -> torch.nn.Module:
    """What a step calls as module(x, y) -> (_, loss): the chunked loss on a CPU, compiled
    with --compile, wrapped in DDP under torchrun. Its parameters are the model's."""
    module = training_module(model, dist.device)
    if cfg.compile:
        module = torch.compile(module)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    return module


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


# ---------------------------------------------------------------------------------------------
# Restore


def restore(run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, state: State, dist: Dist, seed: int,
            sequences_per_step: int) -> int:
    """Load the newest readable step checkpoint of the run into model, optimizer, scaler, the
    RNG and state; a damaged one is skipped with a warning (the one before it is used).
    Returns how many were skipped; state.resumed_from stays None when none could be used."""
    skipped = 0
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            saved = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            read_checkpoint_weights(path, model)
            blob = torch.load(path / "optimizer.pt", map_location=dist.device, weights_only=True)
            # An empty or foreign optimizer.pt (another model's, a plain tensor) fails here,
            # before anything is changed (load_state_dict checks the shapes first).
            if not isinstance(blob, dict):
                raise ValueError(f"optimizer.pt holds a {type(blob).__name__}, not a training state")
            optimizer.load_state_dict(blob["optimizer"])
            if blob.get("scaler"):
                scaler.load_state_dict(blob["scaler"])
            rng_cpu = blob["rng_cpu"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
                pickle.UnpicklingError, CheckpointError, RuntimeError) as e:
            if dist.main:
                print(f"warning: skipping checkpoint {path}: {e}", file=sys.stderr)
            skipped += 1
            continue
        if dist.main:
            torch.set_rng_state(rng_cpu)
            if dist.device.type == "cuda" and blob.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(blob["rng_cuda"], dist.device)
        else:  # only rank 0's RNG is saved; the others derive theirs from the step
            torch.manual_seed(seed + 1 + dist.rank + 1000 * saved["step"])
        state.step = state.last_saved = saved["step"]
        state.position = saved.get("data_position", state.step * sequences_per_step)
        state.best_val = saved.get("best_val") or math.inf
        state.tokens, state.elapsed_before = saved.get("tokens", 0), saved.get("elapsed_s", 0.0)
        state.resumed_from = str(path)
        return skipped
    return skipped


def resume_message(cfg: TrainConfig, state: State, skipped: int) -> str:
    """What --resume did: the step it continues from, or that it starts fresh and why."""
    if state.resumed_from is None:
        why = (f"none of its {skipped} checkpoints could be read (see the warnings above)"
               if skipped else f"it stopped before its first checkpoint (it saves every "
               f"{cfg.save_every} steps and at the end)")
        return (f"resume: {cfg.out} has nothing to continue from: {why}; training starts from "
                f"step 0 with the run's options")
    left = cfg.max_steps - state.step
    todo = (f"{left} more step{'s' if left != 1 else ''} to --max-steps {cfg.max_steps}"
            if left > 0 else f"it is already at --max-steps {cfg.max_steps}: nothing to train "
            "(pass a larger --max-steps to go on)")
    return f"resume: continuing {cfg.out} from step {state.step} ({state.resumed_from}); {todo}"


# ---------------------------------------------------------------------------------------------
# The loop


def _loop(run: Run, state: State, progress: bool | None) -> dict:
    cfg, dist = run.cfg, run.dist
    log_start(run, state)
    state.started = time.time()
    speed = Throughput()
    bar = _bar(progress, total=cfg.max_steps, initial=state.step, desc="training", unit="step") \
        if dist.main else None
    outcome = "finished"
    run.module.train()
    with StopRequested(run.dir / "stop") as stop:
        while state.step < cfg.max_steps:
            loss, lr, tokens, stop_any = train_step(run, state, stop)
            state.step += 1
            state.position += run.plan.sequences
            state.tokens += tokens
            speed.add(tokens)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {state.step}; lower --lr "
                                         "or raise --warmup-steps")
            if bar is not None:
                shown = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
                if state.val_loss is not None:
                    shown["val"] = f"{state.val_loss:.4f}"
                bar.set_postfix(shown, refresh=False)  # drawn by the update
                bar.update(1)
            final = state.step == cfg.max_steps
            if state.step % cfg.log_every == 0 or final or stop_any:
                log_train(run, state, loss, lr, speed.rate(), bar)
            if state.step % cfg.eval_every == 0 or final:
                evaluate_step(run, state, final, bar)
            elif cfg.sample_every and state.step % cfg.sample_every == 0 and dist.main:
                log_sample(run, state)
            stopping = stop_any and not final
            if state.step % cfg.save_every == 0 or final or stopping:
                checkpoint_step(run, state)
            if stopping:
                outcome = "stopped"
                break
    if bar is not None:
        bar.close()
    return finish(run, state, outcome)


def train_step(run: Run, state: State, stop: StopRequested) -> tuple[float, float, int, bool]:
    """One optimizer step at state.step: this process's micro-batches (its share of the items
    from state.position on), gradient clipping, the update. Returns (loss averaged over
    processes, learning rate, tokens of all processes, whether any process was asked to stop)."""
    cfg, dist, plan = run.cfg, run.dist, run.plan
    lr = lr_at(state.step, cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    accum = plan.accum
    loss_sum = torch.zeros((), device=dist.device)  # summed on the device: one sync per step
    ntok = 0
    for micro in range(accum):
        start = state.position + (micro * dist.world + dist.rank) * plan.micro
        x, y = run.data.train.take(start, plan.micro)
        x, y = x.to(dist.device, non_blocking=True), y.to(dist.device, non_blocking=True)
        sync = not dist.enabled or micro == accum - 1  # DDP: all-reduce gradients once per step
        with (contextlib.nullcontext() if sync else run.module.no_sync()), run.autocast:
            _, loss = run.module(x, y)
            loss = loss / accum
        run.scaler.scale(loss).backward()
        loss_sum += loss.detach().float()
        ntok += x.numel()
    if cfg.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    total, ntok_all, stops = dist.all_sum([float(loss_sum), ntok, float(stop.requested())])
    return total / dist.world, lr, int(ntok_all), stops > 0


def log_start(run: Run, state: State) -> None:
    cfg, data = run.cfg, run.data
    run.metrics.log({"type": "start", "step": state.step, "max_steps": cfg.max_steps,
                     "mode": run.mode, "resumed_from": state.resumed_from,
                     "world_size": run.dist.world, "device": str(run.dist.device),
                     "params": run.model.num_params(), "train_tokens": data.train_tokens,
                     "val_tokens": data.val_tokens,
                     "tokens_per_step": run.plan.sequences * data.block,
                     "config": cfg.to_dict()})


def log_train(run: Run, state: State, loss: float, lr: float, tokens_per_s: float, bar) -> None:
    cfg = run.cfg
    run.metrics.log({"type": "train", "step": state.step, "max_steps": cfg.max_steps,
                     "loss": round(loss, 5), "lr": lr, "tokens_per_s": round(tokens_per_s, 1),
                     "tokens": state.tokens, "elapsed_s": round(state.elapsed(), 2)})
    if bar is None and run.dist.main:
        print(f"step {state.step}/{cfg.max_steps}  loss {loss:.4f}  lr {lr:.2e}  "
              f"{tokens_per_s:,.0f} tok/s", flush=True)


def evaluate_step(run: Run, state: State, final: bool, bar) -> None:
    """Validation loss (all processes), a sample (rank 0), and checkpoints/best if it improved."""
    cfg = run.cfg
    sums = validation_loss(run.model, run.data.val, cfg.eval_batches * cfg.batch_size,
                           cfg.batch_size, run.dist, token_byte_counts(run.tokenizer), run.autocast)
    val = sums.loss if sums is not None else None
    if sums is not None:
        state.val_loss, state.val_bpb = val, sums.bpb
        run.metrics.log({"type": "eval", "step": state.step, "val_loss": round(val, 5),
                         "val_ppl": round(perplexity(val), 3), "val_bpb": round(sums.bpb, 5)})
        if run.dist.main:  # on the terminal too, not only in metrics.jsonl
            line = (f"step {state.step}/{cfg.max_steps}  val loss {val:.4f}  "
                    f"perplexity {perplexity(val):.2f}  bits/byte {sums.bpb:.4f}")
            if bar is not None:
                bar.write(line)
            else:
                print(line, flush=True)
    if run.dist.main and (cfg.sample_every == 0 or state.step % cfg.sample_every == 0 or final):
        log_sample(run, state)
    if val is not None and val < state.best_val:
        state.best_val = val
        if run.dist.main:
            save_best(run, state)


def log_sample(run: Run, state: State) -> None:
    state.sample = sample_text(run.model, run.tokenizer, run.data.sample_prompt,
                               run.cfg.sample_tokens, run.cfg.seed)
    run.metrics.log({"type": "sample", "step": state.step, "prompt": run.data.sample_prompt,
                     "text": state.sample})


def finish(run: Run, state: State, outcome: str) -> dict:
    """The last checkpoint (unless this step has one), the "end" event; returns the summary."""
    summary = {**run_summary(run, state), "state": outcome,
               "best_val_loss": state.best_val if math.isfinite(state.best_val) else None,
               "elapsed_s": round(state.elapsed(), 2)}
    if run.dist.main and state.last_saved != state.step:
        save_step(run, state)
    run.metrics.log({"type": "end", **summary})
    if run.dist.main:
        with contextlib.suppress(FileNotFoundError):
            (run.dir / "stop").unlink()
    return summary


def run_summary(run: Run, state: State) -> dict:
    return {"mode": run.mode, "step": state.step, "tokens": state.tokens,
            "val_loss": state.val_loss, "val_bpb": state.val_bpb, "command": command_line(run.cfg)}


# ---------------------------------------------------------------------------------------------
# Save


def checkpoint_step(run: Run, state: State) -> None:
    """A step checkpoint (rank 0 writes it; every process waits for it)."""
    if run.dist.main:
        save_step(run, state)
    state.last_saved = state.step
    run.dist.barrier()


def save_step(run: Run, state: State) -> Path:
    """checkpoints/step-<N>: weights, tokenizer, card, trainer_state.json (State) and
    optimizer.pt (AdamW, GradScaler, RNG: tensors, loaded back with weights_only). Older step
    checkpoints beyond keep_last are deleted."""
    cfg = run.cfg
    trainer_state = {"step": state.step,
                     "best_val": state.best_val if math.isfinite(state.best_val) else None,
                     "tokens": state.tokens, "elapsed_s": state.elapsed(),
                     "data_position": state.position,
                     "world_size": run.dist.world, "mode": run.mode}
    device = run.dist.device
    blob = {"optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    path = save_checkpoint(run.dir / "checkpoints" / f"step-{state.step}", run.model,
                           run.tokenizer, model_card(run, state),
                           {**lora.adapter_files(cfg),
                            "trainer_state.json": json.dumps(trainer_state, indent=2).encode(),
                            "optimizer.pt": _torch_bytes(blob)})
    for _, old in list_checkpoints(run.dir)[:-cfg.keep_last]:
        # Rename first: a half-deleted directory must never look like a checkpoint.
        trash = old.parent / f".{old.name}.deleting"
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    run.metrics.log({"type": "checkpoint", "step": state.step, "path": str(path)})
    return path


def save_best(run: Run, state: State) -> Path:
    """checkpoints/best: the weights with the lowest validation loss (no optimizer state)."""
    best = {"step": state.step, "val_loss": state.best_val}
    return save_checkpoint(run.dir / "checkpoints" / "best", run.model, run.tokenizer,
                           model_card(run, state), {**lora.adapter_files(run.cfg),
                                                    "trainer_state.json": json.dumps(best).encode()})


def model_card(run: Run, state: State) -> str:
    """The README.md of a checkpoint: the model, how it was trained, a command that reproduces
    it, and the latest sample."""
    cfg, c, summary = run.cfg, run.model.config, run_summary(run, state)
    lines = [
        f"# {Path(cfg.out).name}", "",
        f"A GPT-2 style model ({run.model.num_params() / 1e6:.2f}M parameters: {c.n_layer} layers, "
        f"{c.n_head} heads, {c.n_embd} dims, {c.block_size}-token context, vocabulary "
        f"{c.vocab_size}) trained with gpt-workbench.", "",
        "## Training", "",
        f"- data: `{cfg.data}` ({summary['mode']})",
        f"- started from: `{cfg.init_from}`" if cfg.init_from else "- started from: random init",
        f"- preset: `{cfg.preset}`" if cfg.preset else "- preset: none",
        f"- steps: {summary['step']} of {cfg.max_steps}; tokens seen: {summary['tokens']:,}",
        f"- batch: {_batch_text(run.plan)} sequences of up to {c.block_size} tokens; "
        f"AdamW lr {cfg.lr:g}, warmup {cfg.warmup_steps}, cosine to {cfg.lr * cfg.min_lr_ratio:g}",
    ]
    if summary["val_loss"] is not None:
        lines.append(f"- validation loss: {summary['val_loss']:.4f} "
                     f"(perplexity {perplexity(summary['val_loss']):.2f}, "
                     f"{summary['val_bpb']:.4f} bits per byte)")
    lines += ["", "Reproduce:", "", "```", summary["command"], "```"]
    if state.sample:
        lines += ["", "## Sample", "", code_block(state.sample.strip())]
    return "\n".join(lines) + "\n"


def code_block(text: str) -> str:
    """Text in a Markdown code block whose fence is longer than any run of backticks in it: a
    model's sample cannot close the block and become Markdown (an image that every visitor's
    browser would fetch) on the model card that the UIs show."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def _batch_text(plan: BatchPlan) -> str:
    one = f"{plan.micro} x {plan.accum}"
    return one if plan.world == 1 else f"{plan.world} processes x {one}"


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Helpers of the loop


def _bar(enabled: bool | None, **kwargs):
    """A tqdm bar, or None: enabled=None means when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, **kwargs)
