"""A training run as a child process, for both UIs (and anything else that wants one).

    from engine.jobs import JobManager, JobError
    jobs = JobManager()                       # runs under engine.loading.RUNS_DIR (./runs)
    job = jobs.start({"data": "data/stories/stories.txt", "out": "my-story", "max_steps": 300},
                     preset="cpu-demo")        # validated first: JobError / ValueError, no compute
    job.status()      # {"state": "running", "step": 120, "max_steps": 300, "loss": 3.1,
                      #  "val_loss": 3.3, "tokens_per_s": 5400.0, "eta_s": 42.0, ...}
    events, offset = job.events(0)           # new metrics.jsonl events since a byte offset
    jobs.stop()       # asks the run to save a checkpoint and exit (SIGTERM + a stop file)
    jobs.resume("my-story", max_steps=600)   # continue a stopped or finished run
    jobs.current()    # after a page reload or a UI restart: the running (or last) job, or None

The child is `python -m engine train ...` in its own process group (a UI that exits or is
killed does not take the run with it), with its output in <run>/train.log. State lives in
files, so any process can reattach:
    <runs>/current-job.json   {"run_dir": ...} of the most recent job started here
    <run>/job.json            {"pid", "state", "argv", "started", "ended", "returncode", ...}
    <run>/metrics.jsonl       progress events written by the trainer (see engine/train.py)
One job at a time per runs directory (a lock file guards the check-and-start across processes).
Job states (STATES): starting, running, stopping (ACTIVE: a process is at work), then finished,
stopped or failed (ENDED).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .fileio import atomic_write_json
from .loading import ROOT, RUNS_DIR
from .metrics import read_events, read_metrics
from .run_dir import check_run_dir
from .train_config import TrainConfig, option_args, resolve_config

ACTIVE = ("starting", "running", "stopping")  # a training process is (or should be) at work
ENDED = ("finished", "stopped", "failed")
STATES = ACTIVE + ENDED
POINTER = "current-job.json"
LOCK = ".jobs.lock"
# Names in a runs directory that belong to the job runner (and the UIs' copied uploads): a run
# with one of these names would clobber them.
RESERVED = frozenset({POINTER, LOCK, "uploads"})
_children: dict[int, subprocess.Popen] = {}  # processes started by this process, to reap them


class JobError(ValueError):
    """A job cannot be started, stopped or found; the message says why."""


def _pid_alive(pid: int) -> bool:
    """True if pid runs (a zombie counts as dead). Children we started are reaped here."""
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a zombie or a recycled pid is not our trainer
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return b"engine" in cmdline and b"train" in cmdline
    except (OSError, IndexError):
        return True


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Job:
    """One training run directory, with or without a live process."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"Job({str(self.run_dir)!r})"

    @property
    def info(self) -> dict:
        return _read_json(self.run_dir / "job.json")

    @property
    def pid(self) -> int | None:
        return self.info.get("pid")

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and self.info.get("state") in ACTIVE and _pid_alive(pid)

    def _settle(self) -> dict:
        """Bring job.json up to date once the process has gone: finished, stopped or failed."""
        info = self.info
        if info.get("state") not in ACTIVE or (info.get("pid") and _pid_alive(info["pid"])):
            return info
        proc = _children.pop(info.get("pid"), None)
        returncode = proc.returncode if proc is not None else info.get("returncode")
        end = next((e for e in reversed(self.metrics()) if e.get("type") == "end"), None)
        if end is not None and returncode in (0, None):
            info["state"] = end.get("state", "finished")
        else:
            info["state"] = "failed"
            info["error"] = self._error_message(returncode)
        info.update(returncode=returncode, ended=info.get("ended") or time.time())
        with contextlib.suppress(OSError):
            atomic_write_json(self.run_dir / "job.json", info)
        return info

    def _error_message(self, returncode) -> str:
        lines = [l for l in self.log_tail(40).splitlines() if l.strip()]
        for line in reversed(lines):  # the CLI prints user errors as "error: ..."
            if line.startswith("error:"):
                return line[len("error:"):].strip()
        if returncode is not None and returncode < 0:
            return f"the training process was killed by signal {-returncode}"
        tail = lines[-1] if lines else "no output"
        return f"the training process exited with status {returncode}: {tail}"

    def status(self, events: list[dict] | None = None) -> dict:
        """State and latest figures, for a progress display. events: the run's metrics events
        (default: all of metrics.jsonl); a poller that reads the file incrementally may pass
        only the last "start", the last "eval" and the train events since that start."""
        info = self._settle()
        state = info.get("state", "unknown")
        if state in ("starting", "running") and (self.run_dir / "stop").exists():
            state = "stopping"
        events = self.metrics() if events is None else events
        start_idx = max((i for i, e in enumerate(events) if e.get("type") == "start"), default=-1)
        recent = events[start_idx + 1:] if start_idx >= 0 else []
        trains = [e for e in recent if e.get("type") == "train"]
        evals = [e for e in events if e.get("type") == "eval"]
        start = events[start_idx] if start_idx >= 0 else {}
        last = trains[-1] if trains else {}
        max_steps = last.get("max_steps") or start.get("max_steps") or info.get("max_steps")
        step = last.get("step", start.get("step", 0))
        if state == "starting" and start:
            state = "running"
        status = {
            "state": state, "run_dir": str(self.run_dir), "pid": info.get("pid"),
            "step": step, "max_steps": max_steps, "loss": last.get("loss"), "lr": last.get("lr"),
            "tokens_per_s": last.get("tokens_per_s"), "tokens": last.get("tokens"),
            "val_loss": evals[-1]["val_loss"] if evals else None,
            "elapsed_s": last.get("elapsed_s"), "eta_s": None,
            "started": info.get("started"), "ended": info.get("ended"), "error": info.get("error"),
        }
        if state in ("running", "stopping") and len(trains) >= 2 and max_steps:
            # Rate over the recent window (evaluations and checkpoints included in the time).
            a, b = trains[max(0, len(trains) - 20)], trains[-1]
            if b["step"] > a["step"] and b["time"] > a["time"]:
                rate = (b["step"] - a["step"]) / (b["time"] - a["time"])
                status["eta_s"] = round((max_steps - step) / rate, 1)
        return status

    def metrics(self) -> list[dict]:
        """Every event of the run's metrics.jsonl."""
        return read_metrics(self.run_dir / "metrics.jsonl")

    def events(self, since: int = 0) -> tuple[list[dict], int]:
        """Events appended since byte offset `since`; returns them and the next offset (see
        engine.metrics.read_events: complete lines only; from 0 again after a resume)."""
        return read_events(self.run_dir / "metrics.jsonl", since)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.run_dir / "train.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode("utf-8", errors="replace").replace("\r", "\n")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, wait: float = 0.0) -> dict:
        """Ask the run to save a checkpoint and exit. With wait > 0, wait up to that many seconds
        for it to exit. Stopping a job that is not running is not an error (returns its status)."""
        if not self.running():
            return self.status()
        (self.run_dir / "stop").touch()  # seen between steps even if the signal were lost
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)  # the child leads its own process group
        if wait > 0:
            self.wait(wait)
        return self.status()

    def kill(self) -> None:
        """Kill at once, without a checkpoint (the run can still resume from its last one)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.wait(10)

    def wait(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.time() + timeout
        while self.running():
            if deadline is not None and time.time() >= deadline:
                break
            time.sleep(0.1)
        return self.status()


class JobManager:
    """Starts, finds and stops the training job of a runs directory."""

    def __init__(self, runs_dir: Path | str | None = None, python: str | None = None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir is not None else RUNS_DIR
        self.python = python or sys.executable

    def run_path(self, out: str) -> Path:
        """A run name ("my-story") is a folder in runs_dir; an absolute path is used as is."""
        if not isinstance(out, str) or not out.strip():
            raise JobError("no run name given: pass out='name' (a folder under the runs directory)")
        path = Path(out.strip()).expanduser()
        path = path if path.is_absolute() else self.runs_dir / path
        if path.name in RESERVED and path.parent.resolve() == self.runs_dir.resolve():
            raise JobError(f"run name {path.name!r} is reserved for the job runner's own files "
                           "in the runs folder; choose another name")
        return path

    def validate(self, options: dict, preset: str | None = None, resume: bool = False,
                 force: bool = False) -> TrainConfig:
        """Everything that can be checked before spawning: the options, the data, the run dir."""
        from .data import open_source

        options = dict(options)
        options["out"] = str(self.run_path(options.get("out", "")))
        if resume and "data" not in options:
            saved = _read_json(Path(options["out"]) / "train_config.json")
            if saved.get("data"):
                options["data"] = saved["data"]
        cfg = resolve_config(options, preset=preset, resume=resume)
        check_run_dir(cfg, resume, force)
        open_source(cfg.data)
        if cfg.init_from:
            from .loading import BUNDLED_DIR, HUB_MODELS

            p = Path(cfg.init_from).expanduser()
            if not (p.exists() or (BUNDLED_DIR / cfg.init_from).exists() or cfg.init_from in HUB_MODELS
                    or (cfg.init_from.count("/") == 1 and not cfg.init_from.startswith((".", "/")))):
                raise JobError(f"init_from {cfg.init_from!r}: no such model (not a directory, a "
                               "bundled model or a hub id)")
        return cfg

    def current(self) -> Job | None:
        """The running job, else the last one started from this runs directory, else None."""
        pointer = _read_json(self.runs_dir / POINTER)
        run_dir = pointer.get("run_dir")
        if not run_dir or not Path(run_dir).is_dir():
            return None
        job = Job(run_dir)
        job._settle()
        return job

    def running(self) -> Job | None:
        job = self.current()
        return job if job is not None and job.running() else None

    def start(self, options: dict, preset: str | None = None, resume: bool = False,
              force: bool = False) -> Job:
        """Validate, then spawn `python -m engine train` for these options (TrainConfig fields)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            busy = self.running()
            if busy is not None:
                s = busy.status()
                raise JobError(f"a training job is already running ({busy.run_dir.name}, step "
                               f"{s['step']}/{s['max_steps']}); stop it before starting another")
            cfg = self.validate(options, preset, resume, force)
            run = Path(cfg.out)
            argv = [self.python, "-m", "engine", "train", "--out", str(run)]
            if preset and not resume:
                argv += ["--preset", preset]
            given = {k: v for k, v in options.items() if k != "out" and v is not None}
            for name, value in given.items():
                argv += option_args(name, value)
            if resume:
                argv.append("--resume")
            if force:
                argv.append("--force")
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "train.log", "ab" if resume else "wb")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
                "PYTHONUNBUFFERED": "1"}
            try:
                proc = subprocess.Popen(argv, cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
            finally:
                log.close()
            _children[proc.pid] = proc
            try:
                atomic_write_json(run / "job.json", {
                    "pid": proc.pid, "state": "starting", "argv": argv, "preset": preset,
                    "options": given, "resume": resume, "started": time.time(), "ended": None,
                    "returncode": None, "max_steps": cfg.max_steps})
                atomic_write_json(self.runs_dir / POINTER, {"run_dir": str(run)})
            except BaseException:
                # A job nobody can find would break one-job-at-a-time: end it before giving up.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                _children.pop(proc.pid, None)
                raise
            return Job(run)

    def resume(self, out: str, **changes) -> Job:
        """Continue a stopped, failed or finished run (e.g. with a larger max_steps)."""
        return self.start({"out": out, **changes}, resume=True)

    def stop(self, wait: float = 0.0) -> dict | None:
        """Stop the running job (see Job.stop); None if no job is running."""
        job = self.running()
        return job.stop(wait) if job is not None else None

    @contextlib.contextmanager
    def _lock(self):
        import fcntl

        with open(self.runs_dir / LOCK, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
