"""Training jobs for a UI: start, resume, stop and follow a run, within the server's policy.

    desk = TrainingDesk(runs_dir, data_dir, models, exposed=False)
    desk.start("cpu-demo", data=desk.corpora()[0][1], max_steps=200)   # -> status dict
    desk.status()          # the current (or last) job: state, step, loss, ETA, curve, samples
    desk.stop()            # save a checkpoint and end

The job itself is engine.jobs' child process, the same runner the CLI uses, so it outlives the
page and any process can follow it. Everything a client sends is checked here before a job
starts (app.limits.TRAINING, app.training_data); on a server others can reach, every call that
starts or stops work raises PermissionError unless the owner allows training (app.policy).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from engine.checkpoint import list_checkpoints
from engine.device import describe, pick_device
from engine.jobs import ACTIVE, Job, JobError, JobManager
from engine.presets import PRESETS
from engine.train_config import TrainConfig, resolve_config

from .catalog import ModelCatalog
from .limits import TRAINING, check
from .policy import TrainingPolicy, exposed_now, training_policy
from .progress import ProgressReader
from .training_data import corpora, data_source

__all__ = ["TrainingDesk", "ACTIVE", "JobError"]

_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TrainingDesk:
    """This server's training: one job at a time in its runs directory."""

    def __init__(self, runs_dir: Path, data_dir: Path, models: ModelCatalog,
                 exposed: bool = False) -> None:
        self.runs_dir = Path(runs_dir)
        self.data_dir = Path(data_dir)
        self.models = models  # where init_from is resolved, and finished runs show up
        self.exposed = exposed
        self.jobs = JobManager(self.runs_dir)
        self._progress = ProgressReader()
        self._latest: dict[str, int | None] = {}  # run dir -> newest checkpoint step seen
        self._lock = threading.Lock()

    # -- what a form offers ------------------------------------------------------------------

    def policy(self) -> TrainingPolicy:
        return training_policy(self.exposed)

    def presets(self) -> list[tuple[str, str]]:
        """(label, name) of the training presets, each label saying what the preset trains."""
        out = []
        for name, p in PRESETS.items():
            cfg = TrainConfig(**p)
            if p.get("mode") == "sft":
                shape = "instruction tuning of an existing model"
            else:
                shape = (f"{cfg.n_layer} layers × {cfg.n_embd} dims, {cfg.block_size} context, "
                         f"{'GPT-2' if cfg.tokenizer == 'gpt2' else f'{cfg.vocab_size}-token BPE'}")
            out.append((f"{name}: {shape}, {cfg.max_steps:,} steps", name))
        return out

    def preset_values(self, preset: str, fields: tuple[str, ...]) -> list:
        """The preset's values of some TrainConfig fields (to fill a form's number boxes)."""
        cfg = resolve_config({"data": "-", "out": "-"}, preset=preset)
        return [getattr(cfg, f) for f in fields]

    def corpora(self) -> list[tuple[str, str]]:
        """(label, path) of the bundled training corpora (data/*/), stories first."""
        return corpora(self.data_dir)

    def device_notice(self) -> str:
        """Where training will run, in words (a CPU run gets a notice)."""
        device = pick_device("auto")
        if device.type == "cpu":
            return ("No GPU found: training runs on the CPU. That is fine for the cpu-demo "
                    "preset (minutes); the larger presets take hours.")
        return f"Training runs on the {describe(device)}."

    def resumable_runs(self) -> list[str]:
        """Names of runs in the runs directory that have a checkpoint to continue from."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(d.name for d in self.runs_dir.iterdir()
                      if d.is_dir() and (d / "train_config.json").is_file() and list_checkpoints(d))

    # -- control -----------------------------------------------------------------------------

    def _allowed(self) -> None:
        policy = self.policy()
        if not policy.allowed:
            raise PermissionError(policy.reason)

    def start(self, preset: str, data: str | None = None, upload: str | Path | None = None,
              hf_name: str | None = None, run_name: str | None = None,
              init_from: str | None = None, upload_root: str | Path | None = None,
              **options) -> dict:
        """Start a training job (a child process) and return its status.

        upload: a file the front end's upload widget stored under upload_root (both set by the
        app's own handler, never taken from a client's request; see app.training_data).
        options: TrainConfig fields a person may set (app.limits.TRAINING: max_steps, lr,
        batch_size, ...), None or "" = the preset's value. Raises PermissionError when this
        server does not allow training and ValueError for bad input, before any work."""
        self._allowed()
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"unknown training preset {preset!r}; choose one of: "
                             f"{', '.join(PRESETS)}")
        unknown = sorted(set(options) - set(TRAINING))
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; the app sets "
                             f"{', '.join(TRAINING)}")
        opts = {name: check(name, value, TRAINING[name]) for name, value in options.items()
                if value not in (None, "")}
        name = (run_name or "").strip() or f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not _RUN_NAME.fullmatch(name):
            raise ValueError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        self.jobs.run_path(name)  # refuses the job runner's own file names, before any copying
        if init_from:
            opts["init_from"] = self.models.resolve(init_from)
        opts["data"] = data_source(data, upload, hf_name, self.corpora(),
                                   self.runs_dir / "uploads", upload_root)
        opts["out"] = name
        return self.status(self.jobs.start(opts, preset=preset).run_dir)

    def resume(self, run_name: str, max_steps=None) -> dict:
        """Continue a stopped (or finished, with more steps) run from its last checkpoint."""
        self._allowed()
        runs = self.resumable_runs()
        if run_name not in runs:
            raise ValueError(f"no run {run_name!r} to resume here; runs with checkpoints: "
                             f"{', '.join(runs) or 'none'}")
        changes = {}
        if max_steps not in (None, ""):
            changes["max_steps"] = check("max_steps", max_steps, TRAINING["max_steps"])
        return self.status(self.jobs.resume(run_name, **changes).run_dir)

    def stop(self) -> dict:
        """Ask the running job to save a checkpoint and stop; the status afterwards."""
        self._allowed()
        self.jobs.stop()
        return self.status()

    def running(self) -> str | None:
        """The run directory of the job running now, or None."""
        job = self.jobs.running()
        return None if job is None else str(job.run_dir)

    # -- following a job ---------------------------------------------------------------------

    def status(self, run_dir: str | Path | None = None) -> dict:
        """A job for a progress view, by default the current (or last) one: engine.jobs status
        fields (state, step, max_steps, loss, val_loss, tokens_per_s, eta_s, error, ...) plus
        "run" (its name), "run_dir", "curve" ([{"step", "loss", "split": "train"|"validation"}]),
        "samples" ([{"step", "prompt", "text"}], newest last) and "log" (the last lines of
        train.log when it failed). {"state": "idle"} when no job was ever started here.
        For a visitor from another machine, run_dir, pid and log are None."""
        job = Job(run_dir) if run_dir is not None else self.jobs.current()
        if job is None:
            return {"state": "idle", "run": None, "curve": [], "samples": []}
        curve, samples, recent = self._progress.read(job)
        status = job.status(recent)
        status.update(run=job.run_dir.name, curve=curve, samples=samples)
        if status["state"] == "failed":
            status["log"] = job.log_tail(15)
        self._forget_stale(job.run_dir)
        if exposed_now(self.exposed):  # server paths, process ids and logs are the owner's
            status.update(run_dir=None, pid=None, log=None)
        return status

    def _forget_stale(self, run_dir: Path) -> None:
        """A run that saved a newer checkpoint: drop the cached older one."""
        found = list_checkpoints(run_dir)
        latest = found[-1][0] if found else None
        key = str(run_dir)
        with self._lock:
            if self._latest.get(key) == latest:
                return
            self._latest[key] = latest
        self.models.forget(key)
