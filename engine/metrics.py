"""<run>/metrics.jsonl: the training run's progress events, one JSON object a line.

The trainer appends (MetricsLog); every reader goes through read_events, which returns complete
lines only and skips a line that does not parse (a crash can tear the last one) or whose fields
have the wrong types (well_formed: a hand-edited or foreign file must not break a progress view):

    events, offset = read_events(path)            # all of it, and where it ended
    new, offset = read_events(path, offset)       # what was appended since (a UI polling)
    read_metrics(path)                            # all of it, the events only

The event types and their fields are listed in docs/training.md.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

from .fileio import atomic_write_text


class MetricsLog:
    """Appends events to metrics.jsonl (when `enabled`: rank 0 only). One line per event,
    flushed, so a reader (the UIs) sees each event as soon as it happens. Every event gets a
    "time" (Unix seconds); on_event, if given, receives it too (in-process callers)."""

    def __init__(self, path: Path, enabled: bool, on_event: Callable[[dict], None] | None) -> None:
        self.path, self.enabled, self.on_event = path, enabled, on_event

    def log(self, event: dict) -> None:
        event = {**event, "time": round(time.time(), 3)}
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")
        if self.on_event:
            self.on_event(event)


_NUMBER = (int, float)
# The fields readers compute with, and their types (None counts as absent)...
FIELD_TYPES = {"type": str, "step": int, "max_steps": int, "time": _NUMBER, "loss": _NUMBER,
               "lr": _NUMBER, "tokens_per_s": _NUMBER, "tokens": int, "elapsed_s": _NUMBER,
               "val_loss": _NUMBER, "prompt": str, "text": str, "state": str}
# ...and the ones each kind of event must have.
REQUIRED = {"train": ("step", "time"), "eval": ("step", "val_loss"), "sample": ("step",)}


def well_formed(event) -> bool:
    """Is a parsed line an event the readers can use: an object with a string "type", its
    kind's required fields, and the types of FIELD_TYPES (true/false is not a number)?"""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return False
    if any(key not in event for key in REQUIRED.get(event["type"], ())):
        return False
    for key, kind in FIELD_TYPES.items():
        value = event.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            return False
    return True


def read_events(path: Path | str, since: int = 0) -> tuple[list[dict], int]:
    """The events of complete lines after byte offset `since`, and the offset after the last
    complete line. A missing file has no events (offset 0). If the file was rewritten shorter
    (a resume drops the events after its checkpoint) the offset is past the end: everything is
    returned again from 0."""
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        return [], 0
    if since > size:
        since = 0
    with open(path, "rb") as f:
        f.seek(since)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    out = []
    for line in chunk[:end].splitlines():
        with contextlib.suppress(ValueError):  # a torn line, or bytes that are not UTF-8
            event = json.loads(line)
            if well_formed(event):
                out.append(event)
    return out, since + end


def read_metrics(path: Path | str) -> list[dict]:
    """Every event of a metrics.jsonl file (none if it does not exist)."""
    return read_events(path)[0]


def truncate_metrics(path: Path, step: int) -> None:
    """On resume: keep the events up to the checkpoint's step (the rest will be redone)."""
    if path.exists():
        keep = [e for e in read_metrics(path) if e.get("step", 0) <= step and e.get("type") != "end"]
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in keep))
