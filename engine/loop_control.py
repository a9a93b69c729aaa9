"""What the training loop checks between steps: whether to stop, and how fast it goes."""

from __future__ import annotations

import signal
import time
from pathlib import Path


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


class Throughput:
    """Tokens per second since the previous reading."""

    def __init__(self) -> None:
        self.since, self.tokens = time.time(), 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def rate(self) -> float:
        now = time.time()
        rate = self.tokens / max(now - self.since, 1e-9)
        self.since, self.tokens = now, 0
        return rate
