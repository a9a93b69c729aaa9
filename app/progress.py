"""A training run's progress for a UI that polls it every second: the loss curve, the latest
samples, and the events a job's status is computed from, read from where the last poll stopped.

Each browser tab polls once a second and a long run logs 100,000s of steps, so a run's
metrics.jsonl is read incrementally (engine.jobs.Job.events from a byte offset) and the curve
sent to a UI is thinned to MAX_CURVE_POINTS training points.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

MAX_CURVE_POINTS = 500  # training-loss points sent to a UI per poll
SAMPLES_KEPT = 5
STATUS_WINDOW = 20  # the last train events Job.status computes its rates from


@dataclass
class RunProgress:
    """What was read so far of one run's metrics.jsonl."""

    identity: tuple | None  # (inode, device): a resume rewrites the file, which starts over
    offset: int = 0
    train: list = field(default_factory=list)  # (step, loss)
    val: list = field(default_factory=list)  # (step, val_loss)
    samples: deque = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    start: dict | None = None  # the last "start" event (a resume starts a new one)
    eval: dict | None = None  # the last "eval" event
    since_start: deque = field(default_factory=lambda: deque(maxlen=STATUS_WINDOW))

    def add(self, e: dict) -> None:
        kind = e.get("type")
        if kind == "start":
            self.start = e
            self.since_start.clear()
        elif kind == "train":
            self.since_start.append(e)
            if "loss" in e:
                self.train.append((e["step"], e["loss"]))
        elif kind == "eval":
            self.eval = e
            if e.get("val_loss") is not None:
                self.val.append((e["step"], e["val_loss"]))
        elif kind == "sample":
            self.samples.append({"step": e.get("step"), "prompt": e.get("prompt", ""),
                                 "text": e.get("text", "")})

    def recent(self) -> list[dict]:
        """The events engine.jobs.Job.status needs: last start, last eval, recent steps."""
        return [e for e in (self.start, self.eval) if e is not None] + list(self.since_start)

    def curve(self) -> list[dict]:
        """[{"step", "loss", "split": "train" | "validation"}], training points thinned."""
        return ([{"step": s, "loss": v, "split": "train"}
                 for s, v in thin(self.train, MAX_CURVE_POINTS)]
                + [{"step": s, "loss": v, "split": "validation"} for s, v in self.val])


class ProgressReader:
    """RunProgress per run directory, brought up to date on each read (thread-safe)."""

    def __init__(self) -> None:
        self._runs: dict[str, RunProgress] = {}
        self._lock = threading.Lock()

    def read(self, job) -> tuple[list[dict], list[dict], list[dict]]:
        """(curve, samples, the events Job.status needs) of job's run, after reading the events
        appended since the last read. A rewritten file (a resume drops the events after its
        checkpoint) is read again from the start."""
        path = job.run_dir / "metrics.jsonl"
        try:
            st = path.stat()
            identity, size = (st.st_ino, st.st_dev), st.st_size
        except OSError:
            identity, size = None, 0
        key = str(job.run_dir)
        with self._lock:
            seen = self._runs.get(key)
            if seen is None or seen.identity != identity or seen.offset > size:
                seen = self._runs[key] = RunProgress(identity)
            events, seen.offset = job.events(seen.offset)
            for e in events:
                seen.add(e)
            return seen.curve(), list(seen.samples), seen.recent()


def thin(points: list, limit: int) -> list:
    """At most `limit` of the points, evenly spread, the first and the last always kept."""
    if len(points) <= limit:
        return list(points)
    if limit < 2:
        return list(points[-limit:]) if limit else []
    last = len(points) - 1
    return [points[round(i * last / (limit - 1))] for i in range(limit)]
