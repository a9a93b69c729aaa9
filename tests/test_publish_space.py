"""scripts/publish_space.py, offline: the file set a Space gets, its requirements.txt, the README
front matter that configures it, and the dry run and offline failure as a person sees them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import publish_space as ps  # noqa: E402


def test_the_space_gets_the_app_models_and_data_and_nothing_else():
    files = {f.path: f for f in ps.space_files()}
    for needed in ("README.md", "LICENSE", "app.py", "requirements.txt", "app/gradio/layout.py",
                   "engine/model.py", "engine/assets/gpt2.tiktoken",
                   "checkpoints/story/model.safetensors",
                   "checkpoints/python-assistant/model.safetensors",
                   "data/python/index/embeddings.safetensors", "data/python/index/passages.jsonl",
                   "data/stories/stories.txt", "docs/gradio.md"):
        assert needed in files, needed
    for path in files:
        assert not path.startswith(("tests/", "benchmarks/", "scripts/", ".ci/", "runs/", ".venv/",
                                    "app/chainlit/", "public/", ".chainlit/")), path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
    assert "chainlit_app.py" not in files and "pyproject.toml" not in files
    # binaries are marked (the Hub keeps them in LFS/Xet); text is not
    assert files["checkpoints/story/model.safetensors"].binary
    assert files["data/python/index/embeddings.safetensors"].binary
    assert not files["engine/model.py"].binary and not files["README.md"].binary
    assert files["checkpoints/story/model.safetensors"].size == \
        (ROOT / "checkpoints/story/model.safetensors").stat().st_size


def test_only_tracked_files_go_up(tmp_path):
    # untracked files (a run, a cache, a local note) never do, even inside included folders
    tracked = ["app.py", "engine/model.py", "requirements.txt"]
    root = tmp_path
    for rel in tracked + ["engine/scratch.py", "runs/demo/metrics.jsonl"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "setup.sh").write_text('torch_spec="${TORCH_SPEC:-torch==2.13.0}"\n')
    files = [f.path for f in ps.space_files(root, tracked=tracked)]
    assert files == ["app.py", "engine/model.py", "requirements.txt"]


def test_space_requirements_use_the_cpu_index_and_the_tested_torch():
    text = (ROOT / "requirements.txt").read_text()
    pin = ps.torch_pin()
    assert pin == "torch==2.13.0"  # scripts/setup.sh's default build
    req = ps.space_requirements(text, pin)
    lines = [ln for ln in req.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert "torch==2.13.0  # from the CPU index above" in lines
    assert not any(ps.requirement_name(ln) in ("chainlit", "plotly") for ln in lines)
    # every other requirement of the repository is kept as written
    for ln in text.splitlines():
        if ln.strip() and not ln.startswith("#") and ps.requirement_name(ln) not in (
                "torch", *ps.SKIP_REQUIREMENTS):
            assert ln in lines, ln


def test_the_readme_front_matter_configures_the_tested_space():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    meta = ps.front_matter(readme)
    assert meta["python_version"] == "3.11" == ps.PYTHON_VERSION
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    files = ps.space_files()
    req = next(f.data for f in files if f.path == "requirements.txt").decode()
    assert ps.check_front_matter(meta, files, req) == []
    # what a broken one looks like
    bad = dict(meta, sdk_version="5.0.0")
    del bad["python_version"]
    problems = ps.check_front_matter(bad, files, req)
    assert any("sdk_version '5.0.0' is not the gradio pinned" in p for p in problems)
    assert any("python_version is None" in p and "default to 3.10" in p for p in problems)


def _script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "publish_space.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **env})


def test_dry_run_lists_files_and_sizes_and_uploads_nothing():
    r = _script("--repo", "someone/workbench", "--dry-run", HF_HUB_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    assert "binary  checkpoints/story/model.safetensors" in r.stdout
    assert "requirements.txt  (rewritten for the Space)" in r.stdout
    total = r.stdout.splitlines()[-1]
    assert "dry run: nothing uploaded" in total
    assert any("files," in ln and "binary files, which the Hub stores in LFS/Xet" in ln
               for ln in r.stdout.splitlines())


def test_publishing_offline_is_one_clear_line(tmp_path):
    r = _script("--repo", "someone/workbench", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path))
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "could not publish to the Space someone/workbench" in errors[0]
    assert "Traceback" not in r.stderr
    r = _script("--repo", "not a repo", "--dry-run")
    assert r.returncode == 2 and "is not USER/NAME" in r.stderr
