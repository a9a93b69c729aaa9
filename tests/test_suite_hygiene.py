"""What conftest.py promises the whole suite: under the skip gate (WORKBENCH_NO_SKIPS=1, set by
.ci/run) a test that skips, or a module that skips as it is imported, fails the run; the session
is offline and writes nowhere outside its scratch folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SKIPPERS = {
    "at import": "import pytest\npytest.skip('no chromium', allow_module_level=True)\n",
    "importorskip": "import pytest\npytest.importorskip('no_such_module_here')\n",
    "in a test": "import pytest\n\ndef test_x():\n    pytest.skip('no docs')\n",
}


def run_pytest(folder: Path, gate: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBENCH_NO_SKIPS": gate, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(folder)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)


def test_every_kind_of_skip_fails_the_run_under_the_gate(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    for i, source in enumerate(SKIPPERS.values()):
        (tmp_path / f"test_skipper_{i}.py").write_text(source, encoding="utf-8")
    (tmp_path / "test_fine.py").write_text("def test_ok():\n    pass\n", encoding="utf-8")
    gated = run_pytest(tmp_path, "1")
    assert gated.returncode == 1, gated.stdout + gated.stderr
    listed = gated.stdout.split("these fail the run", 1)[-1]
    for i, how in enumerate(SKIPPERS):
        assert f"test_skipper_{i}.py" in listed, f"a skip {how} was not counted:\n{gated.stdout}"
    assert run_pytest(tmp_path, "0").returncode == 0


def test_the_session_is_offline_and_keeps_out_of_home():
    """conftest assigns the offline flags (an HF_HUB_OFFLINE=0 outside cannot undo them) and
    points every cache the tests could write at the session's scratch folder."""
    import huggingface_hub.constants as hf

    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert os.environ[flag] == "1", flag
    assert hf.HF_HUB_OFFLINE is True
    scratch = Path(os.environ["HOME"])
    assert scratch.name == "home" and scratch.parent.name.startswith("workbench-tests-")
    for name in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "XDG_CACHE_HOME",
                 "GRADIO_TEMP_DIR", "TMPDIR", "CHAINLIT_APP_ROOT"):
        assert Path(os.environ[name]).is_relative_to(scratch.parent), name
    assert Path(hf.HF_HUB_CACHE).is_relative_to(scratch.parent)
