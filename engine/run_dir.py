"""The run directory (`--out`): what a run writes there, and the checks before it writes any.

    <run>/train_config.json   the resolved TrainConfig (resume reads it back)
    <run>/tokenizer/          the run's tokenizer (GPT-2's, a trained BPE, or the init model's)
    <run>/metrics.jsonl       one JSON object per line (engine.metrics; schema in docs/training.md)
    <run>/checkpoints/        step-<N>/ (the last keep_last) and best/ (engine.checkpoint format)
    <run>/stop                created by a UI (engine.jobs) to ask the run to stop

A run never overwrites anything without --resume or --force, and --force deletes only the files
a run writes (RUN_FILES), never other files a person keeps there.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from .checkpoint import list_checkpoints
from .train_config import TrainConfig

RUN_FILES = ("train_config.json", "metrics.jsonl", "checkpoints", "tokenizer", "stop")
JOB_FILES = {"job.json", "train.log", "stop"}  # written by engine.jobs around a run


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


def prepare_run_dir(cfg: TrainConfig, resume: bool, force: bool) -> Path:
    """Check the run directory, clear it with --force, create it; returns it."""
    run = Path(cfg.out)
    check_run_dir(cfg, resume, force)
    if force:
        clear_run(run)
    run.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (run / "stop").unlink()  # a stale stop request must not end the new run at once
    return run


def clear_run(out: Path) -> None:
    """--force: delete a previous run's files (only the files a run writes)."""
    for name in RUN_FILES:  # not job.json / train.log: the job runner starting this run owns them
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
