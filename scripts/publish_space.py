"""Publish this repository as a Hugging Face Space (the Gradio app, on CPU hardware).

    .venv/bin/python scripts/publish_space.py --repo USER/SPACE --dry-run   # what would go up
    .venv/bin/hf auth login                                                  # once (or HF_TOKEN)
    .venv/bin/python scripts/publish_space.py --repo USER/SPACE             # create or update it

Why not `git push` to the Space: this repository commits binary weights
(checkpoints/*/model.safetensors, data/python/index/embeddings.safetensors) as plain git
objects, and the Hub refuses binary files pushed without LFS. Uploaded through the Hub's API
(huggingface_hub's create_commit, as upload_folder does), binary files go to the Hub's
LFS/Xet storage on their own, so nothing about this repository has to change.

What goes up (space_files): the files git tracks under INCLUDE, as they are on disk, so nothing
untracked (runs/, .venv/, caches) ever does; the Chainlit app, tests, benchmarks and scripts stay
behind. requirements.txt is rewritten for the Space (space_requirements): PyTorch's CPU wheel
index first (~200 MB of wheels instead of the ~3 GB CUDA build that PyPI serves on Linux), torch
pinned to the build scripts/setup.sh installs, Chainlit left out. README.md's front matter
configures the Space; check_front_matter() refuses to publish one that does not fit (sdk,
sdk_version = the pinned gradio, app_file, python_version = the version the tests run on).
Files on the Space that are not in the set any more are deleted in the same commit.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What a Space runs: the Gradio app, the engine, the bundled models and their data (the docs
# index the Python assistant grounds its answers in; the corpora, for the Train tab when the
# owner turns it on), the docs the README links to.
INCLUDE = ("README.md", "LICENSE", "app.py", "requirements.txt", "app/", "engine/",
           "checkpoints/", "data/", "docs/")
EXCLUDE = ("app/chainlit/",)  # the Chainlit front end: not run on a Gradio Space
# ... nor installed there (plotly: its loss chart; sqlalchemy, aiosqlite: its saved conversations)
SKIP_REQUIREMENTS = {"chainlit", "plotly", "sqlalchemy", "aiosqlite"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHON_VERSION = "3.11"  # what the tests run on; Spaces default to 3.10
BINARY_SUFFIXES = (".safetensors", ".bin", ".pt", ".npy", ".npz", ".png", ".jpg", ".ico")


@dataclass(frozen=True)
class SpaceFile:
    path: str  # in the Space repository
    size: int
    binary: bool  # stored by the Hub in LFS/Xet
    source: Path | None = None  # the file on disk, or
    data: bytes | None = None  # its content, when rewritten for the Space


def tracked_files(root: Path = ROOT) -> list[str]:
    """The files git tracks (relative paths); ValueError outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ValueError(f"{root}: not a git checkout (git ls-files failed: {e}); the Space is "
                         "made from the files git tracks") from None
    return sorted(p for p in out.decode("utf-8").split("\0") if p)


def selected(path: str) -> bool:
    parts = path.split("/")
    if "__pycache__" in parts or path.endswith(".pyc"):
        return False
    return (any(path == p or (p.endswith("/") and path.startswith(p)) for p in INCLUDE)
            and not any(path.startswith(p) for p in EXCLUDE))


def is_binary(path: Path) -> bool:
    if path.suffix in BINARY_SUFFIXES:
        return True
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def space_files(root: Path = ROOT, tracked: list[str] | None = None) -> list[SpaceFile]:
    """The Space's files, sorted by path, requirements.txt rewritten (space_requirements)."""
    files = []
    for rel in (tracked if tracked is not None else tracked_files(root)):
        path = root / rel
        if not selected(rel) or not path.is_file():  # deleted but not yet committed: skipped
            continue
        if rel == "requirements.txt":
            data = space_requirements(path.read_text(encoding="utf-8"), torch_pin(root)).encode()
            files.append(SpaceFile(rel, len(data), False, data=data))
        else:
            files.append(SpaceFile(rel, path.stat().st_size, is_binary(path), source=path))
    return files


def torch_pin(root: Path = ROOT) -> str:
    """The torch build scripts/setup.sh installs (its default TORCH_SPEC), e.g. torch==2.13.0."""
    setup = (root / "scripts" / "setup.sh").read_text(encoding="utf-8")
    m = re.search(r'TORCH_SPEC:-(torch==[0-9][^}"\s]*)', setup)
    if not m:
        raise ValueError("scripts/setup.sh: no default TORCH_SPEC (torch==X.Y.Z) found")
    return m.group(1)


def requirement_name(line: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
    return m.group(1).lower().replace("_", "-") if m else ""


def space_requirements(text: str, torch_spec: str) -> str:
    """requirements.txt for a CPU Space: PyTorch's CPU index first, torch pinned, no Chainlit.

    `--extra-index-url` is pip's own syntax inside a requirements file. With it, pip sees both
    torch X (PyPI: a CUDA build on Linux) and torch X+cpu (the CPU index) and takes X+cpu, the
    higher version under PEP 440's local-version rule; every other package still comes from
    PyPI."""
    out = ["# requirements.txt of the Space, written by scripts/publish_space.py from the",
           "# repository's requirements.txt: CPU PyTorch wheels (about 200 MB, not the ~3 GB",
           "# CUDA build PyPI serves on Linux), torch pinned to the tested build, no Chainlit.",
           f"--extra-index-url {CPU_INDEX}"]
    for line in text.splitlines():
        name = requirement_name(line)
        if line.lstrip().startswith("#"):  # the repository's comments are about its own setup
            continue
        if name == "torch":
            out.append(f"{torch_spec}  # from the CPU index above")
        elif name not in SKIP_REQUIREMENTS:
            out.append(line)
    return "\n".join(out) + "\n"


def front_matter(readme: str) -> dict[str, str]:
    """README.md's YAML front matter as flat key -> value strings (quotes removed)."""
    m = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    if not m:
        return {}
    meta = {}
    for line in m.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "#")):
            meta[key.strip()] = value.strip().strip("\"'")
    return meta


def check_front_matter(meta: dict[str, str], files: list[SpaceFile], requirements: str) -> list[str]:
    """What would make the Space fail to build or run differently from the tested app."""
    problems = []
    if meta.get("sdk") != "gradio":
        problems.append(f"sdk is {meta.get('sdk')!r}, not 'gradio'")
    pin = re.search(r"^gradio==(\S+)", requirements, re.M)
    if not pin or meta.get("sdk_version") != pin.group(1):
        problems.append(f"sdk_version {meta.get('sdk_version')!r} is not the gradio pinned in "
                        f"requirements.txt ({pin.group(1) if pin else 'none'})")
    if meta.get("app_file") not in {f.path for f in files}:
        problems.append(f"app_file {meta.get('app_file')!r} is not among the files")
    if meta.get("python_version") != PYTHON_VERSION:
        problems.append(f"python_version is {meta.get('python_version')!r}, not "
                        f"{PYTHON_VERSION!r} (the version the tests run on; Spaces default to 3.10)")
    return problems


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def report(files: list[SpaceFile]) -> str:
    lines = [f"{f.size:>12,}  {'binary  ' if f.binary else '        '}{f.path}"
             + ("  (rewritten for the Space)" if f.data is not None else "") for f in files]
    binary = sum(f.size for f in files if f.binary)
    lines.append(f"{len(files)} files, {_size(sum(f.size for f in files))} "
                 f"({_size(binary)} in {sum(f.binary for f in files)} binary files, which the Hub "
                 "stores in LFS/Xet)")
    return "\n".join(lines)


def uncommitted(root: Path, files: list[SpaceFile]) -> list[str]:
    names = {f.path for f in files}
    try:
        out = subprocess.run(["git", "status", "--porcelain", "-z"], cwd=root,
                             capture_output=True, check=True).stdout.decode("utf-8")
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted(entry[3:] for entry in out.split("\0") if entry[3:] in names)


def publish(repo: str, files: list[SpaceFile], private: bool, token: str | None) -> str:
    """Create the Space if needed and replace its files with `files` in one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo, repo_type="space", space_sdk="gradio", private=private,
                          exist_ok=True)
    names = {f.path for f in files}
    stale = [p for p in api.list_repo_files(repo, repo_type="space")
             if p not in names and p != ".gitattributes"]
    ops = [CommitOperationAdd(path_in_repo=f.path,
                              path_or_fileobj=f.data if f.data is not None else str(f.source))
           for f in files]
    ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
    api.create_commit(repo, repo_type="space", operations=ops,
                      commit_message="Publish GPT Workbench (scripts/publish_space.py)")
    return str(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See README.md, 'On Hugging Face Spaces'.")
    parser.add_argument("--repo", required=True, help="the Space: USER/NAME (or ORG/NAME)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the files and sizes and check the front matter; upload nothing")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--token", default=None,
                        help="a Hugging Face write token (default: HF_TOKEN or `hf auth login`)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", args.repo):
        print(f"error: --repo {args.repo!r} is not USER/NAME", file=sys.stderr)
        return 2
    try:
        files = space_files()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    requirements = next(f.data for f in files if f.path == "requirements.txt").decode()
    problems = check_front_matter(front_matter(readme), files, requirements)
    print(report(files))
    for path in uncommitted(ROOT, files):
        print(f"note: {path} has uncommitted changes; it goes up as it is on disk")
    if problems:
        for p in problems:
            print(f"error: README.md front matter: {p}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"dry run: nothing uploaded; without --dry-run these files replace those of the "
              f"Space {args.repo}")
        return 0
    try:
        url = publish(args.repo, files, args.private, args.token)
    except Exception as e:  # noqa: BLE001 - offline, no token, no permission: one line each
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: could not publish to the Space {args.repo}: {first} (online? logged in "
              "with `hf auth login` or HF_TOKEN set, with write access?)", file=sys.stderr)
        return 2
    print(f"published: {url} (the Space builds and starts in a few minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
