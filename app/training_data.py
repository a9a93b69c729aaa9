"""Where a training run started from a UI gets its text: a bundled corpus, an uploaded file, or a
Hugging Face dataset name; exactly one, checked before any job starts.

An upload is a path, so a client could name any file the server can read: it is taken only from
inside upload_root, the folder where the front end's upload widget stores what a person uploaded
(the trusted caller passes it; a client never chooses it). It is copied into the runs directory,
so it outlives the front end's upload cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from engine.data import check_not_builder

UPLOAD_SUFFIXES = (".txt", ".md", ".jsonl", ".json")
MAX_UPLOAD_BYTES = 200_000_000
_HF_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?")
_NOT_CORPORA = ("LICENSE", "README", "NOTICE", "SOURCES")


def corpora(data_dir: Path) -> list[tuple[str, str]]:
    """(label, path) of the corpora that ship with the repository (data/*/ text and JSONL),
    stories first: the quickest to show a falling loss."""
    found = []
    if data_dir.is_dir():
        for f in sorted(data_dir.glob("*/*"), key=lambda f: (f.parent.name != "stories", str(f))):
            if f.suffix.lower() in (".txt", ".jsonl") and \
                    not f.name.upper().startswith(_NOT_CORPORA):
                kind = "instructions" if f.suffix.lower() == ".jsonl" else "text"
                size = f.stat().st_size
                size = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
                found.append((f"{f.parent.name}/{f.name} ({kind}, {size})", str(f)))
    return found


def data_source(data: str | None, upload: str | Path | None, hf_name: str | None,
                bundled: list[tuple[str, str]], uploads_dir: Path,
                upload_root: str | Path | None = None) -> str:
    """The `data` option of a training job: a bundled corpus (by path or label), a copy of an
    uploaded file in uploads_dir, or "hf:NAME". ValueError for anything else."""
    for what, value in (("data", data), ("hf_name", hf_name)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{what} must be text, got {type(value).__name__}")
    given = [x for x in (data, upload, hf_name) if x not in (None, "")]
    if len(given) != 1:
        raise ValueError("choose one data source: a bundled corpus, an uploaded file, or a "
                         "Hugging Face dataset name")
    if data:
        return _bundled(data, bundled)
    if hf_name:
        return _hub_dataset(hf_name)
    return _stored_upload(upload, uploads_dir, upload_root)


def _bundled(data: str, bundled: list[tuple[str, str]]) -> str:
    paths = {p: p for _, p in bundled}
    paths.update({label: p for label, p in bundled})
    if data not in paths:
        names = ", ".join(Path(p).parent.name + "/" + Path(p).name
                          for _, p in bundled) or "none found"
        raise ValueError(f"unknown bundled corpus {data!r}; choose one of: {names}")
    return paths[data]


def _hub_dataset(hf_name: str) -> str:
    name = hf_name.strip()
    name = name[3:] if name.startswith("hf:") else name
    if not _HF_NAME.fullmatch(name) or ".." in name or Path(name.split(":")[0]).exists():
        raise ValueError(f"{hf_name!r} is not a Hugging Face dataset name; expected "
                         "NAME or OWNER/NAME, optionally :CONFIG (e.g. roneneldan/TinyStories "
                         "or wikitext:wikitext-103-raw-v1)")
    check_not_builder(name.split(":")[0])  # hf:text would read the server's own files
    return f"hf:{name}"


def _stored_upload(upload, uploads_dir: Path, upload_root: str | Path | None) -> str:
    """Check an uploaded file and copy it to uploads_dir (named by content, copied once)."""
    if not isinstance(upload, (str, Path)):
        raise ValueError(f"the upload must be a file path, got {type(upload).__name__}")
    src = Path(str(upload))
    if upload_root is None or not _inside(src, upload_root):
        raise ValueError(f"{src.name!r} was not uploaded through this app's upload box; "
                         "upload the file there (a path on the server is not accepted)")
    if not src.is_file():
        raise ValueError(f"the uploaded file {src.name!r} is missing; upload it again")
    if src.suffix.lower() not in UPLOAD_SUFFIXES:
        raise ValueError(f"{src.name}: upload a text file ({', '.join(UPLOAD_SUFFIXES)}); "
                         ".jsonl holds instruction pairs, anything else is plain text")
    size = src.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"{src.name} is {size / 1e6:.0f} MB; the limit for uploads is "
                         f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB (train on bigger data from the "
                         "command line)")
    if size == 0:
        raise ValueError(f"{src.name} is empty")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    uploads_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", src.stem)[:40] or "data"
    dest = uploads_dir / f"{stem}-{digest}{src.suffix.lower()}"
    if not dest.exists():
        tmp = dest.with_suffix(dest.suffix + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return str(dest)


def _inside(path: Path, root: str | Path) -> bool:
    """True if path (links resolved) lies inside the folder root."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError, ValueError):
        return False
