"""Atomic file and directory writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for all threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # closed (and the temporary file removed) on any error
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it private (0600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary sibling (.<name>.*.tmp) that replaces
    `path` when the body ends and is removed when it raises (a full disk, bad data, a stop), so
    a failed write leaves neither a half file nor a stray temporary one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def save_safetensors(tensors: dict, path: Path | str) -> None:
    """Weights as a safetensors file with the usual file mode. (Call it inside an
    atomic_directory: the file itself is written in place.) safetensors creates the file private
    (0600) whatever the umask; a UI running as another user, a shared runs folder or a copy
    uploaded elsewhere must be able to read the weights like the files beside them."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~current_umask())


def fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


# Fault injection for the crash tests (tests/test_resume.py): WORKBENCH_CRASH_AT="<dir>:<point>"
# makes this process SIGKILL itself at that point of saving the directory named <dir>, so a test
# kills a save at a known moment instead of hoping that a timed kill lands inside one.
CRASH_AT = "WORKBENCH_CRASH_AT"


def crash_point(path: Path, point: str) -> None:
    if os.environ.get(CRASH_AT) == f"{path.name}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename.

    If the body raises (or the process dies), `path` is untouched and the temporary directory
    (named .<name>.tmp-*) is removed or, after a crash, ignored by readers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    # mkdtemp makes the directory private (0700); give it the usual mode under the umask so a
    # checkpoint is as readable as any other directory the user creates.
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        crash_point(path, "written")  # every file written, none of it visible yet
        fsync_tree(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            crash_point(path, "swapped")  # the old directory moved aside, the new one not in
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
