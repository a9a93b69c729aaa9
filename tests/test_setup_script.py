"""scripts/setup.sh chooses the PyTorch build: the CPU wheel index on a Linux machine without an
NVIDIA GPU (when it can be reached), PyPI otherwise. Run against a stub python that records what
it is asked to do, so nothing is installed and no network is needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

STUB_PYTHON = """#!/bin/bash
echo "python $*" >> "$SETUP_LOG"
case "$1" in
  -m) exit 0 ;;                                    # pip install ...
  -c) if [[ "$2" == "import torch" ]]; then        # is torch installed?
        [[ -n "$TORCH_PRESENT" ]] && exit 0; exit 1
      fi
      echo "torch (stub)"; exit 0 ;;
  -) cat > /dev/null; exit "$PROBE_RC" ;;          # the reachability probe of the index
esac
"""


def run_setup(tmp_path: Path, system: str = "Linux", gpu: bool = False, probe_ok: bool = True,
              **env: str) -> tuple[list[str], str]:
    """Run a copy of setup.sh; returns (the python calls it made, stderr)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    (repo / ".venv" / "bin").mkdir(parents=True)
    python = repo / ".venv" / "bin" / "python"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    tools = tmp_path / "bin"  # PATH is only this: no real nvidia-smi, uname or python leaks in
    tools.mkdir()
    for name in ("dirname", "cat"):
        (tools / name).symlink_to(shutil.which(name))
    (tools / "uname").write_text(f"#!/bin/bash\necho {system}\n")
    (tools / "uname").chmod(0o755)
    if gpu:
        (tools / "nvidia-smi").write_text("#!/bin/bash\nexit 0\n")
        (tools / "nvidia-smi").chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    proc = subprocess.run(["/bin/bash", str(repo / "scripts" / "setup.sh")], capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": str(tools), "HOME": str(tmp_path), "SETUP_LOG": str(log),
                               "PROBE_RC": "0" if probe_ok else "1", **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return log.read_text().splitlines(), proc.stderr


def torch_installs(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("python -m pip install") and "torch==" in c]


def test_linux_without_a_gpu_gets_the_cpu_build_from_pytorchs_index(tmp_path):
    calls, _ = run_setup(tmp_path)
    assert f"python - {CPU_INDEX}/torch/" in calls  # reachable?
    assert torch_installs(calls) == [
        f"python -m pip install --quiet --index-url {CPU_INDEX} torch==2.13.0"]
    # then the rest from the configured index, as before
    assert "python -m pip install --quiet -r requirements.txt" in calls


def test_an_unreachable_cpu_index_falls_back_to_the_configured_one_and_says_so(tmp_path):
    calls, err = run_setup(tmp_path, probe_ok=False)
    assert torch_installs(calls) == ["python -m pip install --quiet torch==2.13.0"]
    assert f"note: {CPU_INDEX} cannot be reached" in err and "CUDA build" in err


@pytest.mark.parametrize("system, gpu, env", [
    ("Linux", True, {}),                # an NVIDIA GPU: PyPI's CUDA build is the one to want
    ("Darwin", False, {}),              # macOS wheels on PyPI are small already
    ("Linux", False, {"TORCH_INDEX": ""}),  # asked for the configured index
])
def test_other_machines_use_the_configured_index(tmp_path, system, gpu, env):
    calls, err = run_setup(tmp_path, system=system, gpu=gpu, **env)
    assert torch_installs(calls) == ["python -m pip install --quiet torch==2.13.0"]
    assert not any(c.startswith("python - ") for c in calls) and "note:" not in err


def test_torch_spec_and_index_choose_another_build(tmp_path):
    calls, _ = run_setup(tmp_path, gpu=True, TORCH_SPEC="torch==2.13.0+cu126",
                         TORCH_INDEX="https://download.pytorch.org/whl/cu126")
    assert torch_installs(calls) == ["python -m pip install --quiet --index-url "
                                     "https://download.pytorch.org/whl/cu126 torch==2.13.0+cu126"]


def test_torch_already_installed_is_left_alone(tmp_path):
    calls, _ = run_setup(tmp_path, TORCH_PRESENT="1")
    assert torch_installs(calls) == [] and not any(c.startswith("python - ") for c in calls)
    assert "python -m pip install --quiet -r requirements.txt" in calls
