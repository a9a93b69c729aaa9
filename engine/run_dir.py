"""The run directory (`--out`): what a run writes there, and the checks before it writes any.

    <run>/train_config.json   the resolved TrainConfig (resume reads it back)
    <run>/tokenizer/          the run's tokenizer (GPT-2's, a trained BPE, or the init model's)
    <run>/metrics.jsonl       one JSON object per line (engine.metrics; schema in docs/training.md)
    <run>/checkpoints/        step-<N>/ (the last keep_last) and best/ (engine.checkpoint format)
    <run>/stop                created by a UI (engine.jobs) to ask the run to stop
    <run>/.lock               held (flock) by the process training in it, released when it exits

A run never overwrites another without --resume or --force. The exception is a run that never
saved a checkpoint (it crashed or was stopped before its first save, and has no best/ either):
there is nothing in it to keep, so the same command simply starts it over. --force deletes only the files a run writes
(RUN_FILES), never other files a person keeps there. While a process trains in a directory (its
lock is held), no other run may start there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from .checkpoint import is_checkpoint, list_checkpoints
from .train_config import TrainConfig

RUN_FILES = ("train_config.json", "metrics.jsonl", "checkpoints", "tokenizer", "stop")
JOB_FILES = {"job.json", "train.log", "stop"}  # written by engine.jobs around a run
LOCK_FILE = ".lock"


def run_state(out: Path) -> str:
    """'empty' (absent or empty), 'run' (holds a training run) or 'other' (other files)."""
    if not out.exists():
        return "empty"
    if not out.is_dir():
        return "other"
    names = {p.name for p in out.iterdir()} - JOB_FILES - {LOCK_FILE}
    if not names:
        return "empty"
    return "run" if names & {"train_config.json", "checkpoints", "metrics.jsonl"} else "other"


def check_run_dir(cfg: TrainConfig, resume: bool, force: bool) -> None:
    """Refuse to overwrite anything without --resume or --force (before any compute). A run
    without a checkpoint may be started over; a directory a process trains in is refused."""
    if resume and force:
        raise ValueError("--resume and --force contradict each other: resume continues the run, "
                         "force deletes it")
    out = Path(cfg.out)
    state = run_state(out)
    if state == "other":
        what = "is a file" if out.is_file() else "holds files that are not a training run"
        raise ValueError(f"{out}: {what}; choose another --out (nothing was changed)")
    busy = RunLock(out).holder()
    if busy is not None:
        raise ValueError(f"{out}: a training process{f' (pid {busy})' if busy else ''} is "
                         "using this run directory; wait for it to end or stop it first")
    if state != "run" or resume or force:
        return
    ckpts = list_checkpoints(out)
    if ckpts:
        raise ValueError(f"{out}: already holds a training run, last checkpoint at step "
                         f"{ckpts[-1][0]}; pass --resume to continue it or --force to delete it "
                         "and start over")
    if is_checkpoint(out / "checkpoints" / "best"):  # trained weights, but nothing to resume
        raise ValueError(f"{out}: already holds a training run with a best checkpoint (no step "
                         "checkpoint to resume from); pass --force to delete it and start over")


def prepare_run_dir(cfg: TrainConfig, resume: bool, force: bool) -> RunLock:
    """Check the run directory, create it and lock it for this process, clear it with --force
    (or when the run there never saved a checkpoint). Returns the held lock."""
    run = Path(cfg.out)
    check_run_dir(cfg, resume, force)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run, created)
    lock.acquire()
    try:
        restart = not resume and not force and run_state(run) == "run"  # no checkpoint: checked
        if restart:
            print(f"note: {run} held a run that never saved a checkpoint; starting it over",
                  file=sys.stderr, flush=True)
        if force or restart:
            clear_run(run)
        with contextlib.suppress(FileNotFoundError):
            (run / "stop").unlink()  # a stale stop request must not end the new run at once
    except BaseException:
        lock.release()
        raise
    return lock


def clear_run(out: Path) -> None:
    """--force: delete a previous run's files (only the files a run writes)."""
    for name in RUN_FILES:  # not job.json / train.log: the job runner starting this run owns them
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


class RunLock:
    """An exclusive lock on a run directory for the process that trains in it: flock on
    <run>/.lock, which the kernel releases when the process ends, however it ends. Where flock
    is missing (Windows), locking is skipped."""

    def __init__(self, run: Path | str, created: bool = False) -> None:
        self.path = Path(run) / LOCK_FILE
        self.created = created  # the directory was made for this run
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ValueError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = self.holder()
            raise ValueError(f"{self.path.parent}: a training process{f' (pid {pid})' if pid else ''}"
                             " is using this run directory; wait for it to end or stop it "
                             "first") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self, failed: bool = False) -> None:
        """Let go of the lock. failed: the run wrote nothing, so leave no trace (the lock file,
        and the directory when it was made for this run)."""
        if self._fd is None:
            return
        run = self.path.parent
        if failed and run_state(run) == "empty" and not (run / "job.json").exists():
            with contextlib.suppress(OSError):
                self.path.unlink()
                if self.created:
                    run.rmdir()
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def holder(self) -> int | None:
        """The pid of another process holding the lock (0 if unknown), or None if it is free."""
        try:
            import fcntl
        except ImportError:
            return None
        if self._fd is not None or not self.path.is_file():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return int(os.read(fd, 32) or b"0")
            except ValueError:
                return 0
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)
