"""Run a command as a person would in a terminal: under a pseudo-terminal (so that isatty() is
true and progress bars really draw), 100 columns wide, or piped. Test support, not a test."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    returncode: int
    output: str  # stdout and stderr together, as a terminal shows them (\r kept)

    def lines(self) -> list[str]:
        """What stays on the screen: each line's text after its last carriage return."""
        return [ln.rsplit("\r", 1)[-1] for ln in self.output.replace("\r\n", "\n").split("\n")]


def run_in_terminal(argv: list[str], cwd: Path | str, env: dict | None = None,
                    stdin: bytes = b"", timeout: float = 300) -> Result:
    """Run argv with stdin, stdout and stderr on a new pseudo-terminal; `stdin` is typed in."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    if stdin:
        os.write(master, stdin)
    chunks: list[bytes] = []
    deadline = time.time() + timeout
    try:
        while True:
            if time.time() > deadline:
                proc.kill()
                raise TimeoutError(f"{' '.join(argv)} ran past {timeout}s:\n"
                                   + b"".join(chunks).decode(errors="replace")[-3000:])
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has closed it
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        proc.wait()
        os.close(master)
    return Result(proc.returncode, b"".join(chunks).decode("utf-8", errors="replace"))


def run_piped(argv: list[str], cwd: Path | str, env: dict | None = None, stdin: bytes = b"",
              timeout: float = 300) -> Result:
    """Run argv with its output piped (not a terminal), stdout and stderr together."""
    proc = subprocess.run(argv, cwd=cwd, env=env, input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout)
    return Result(proc.returncode, proc.stdout.decode("utf-8", errors="replace"))
