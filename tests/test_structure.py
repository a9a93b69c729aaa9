"""The layout the design card promises (docs: ../shared/DESIGN.md, issue 9's structure check):
the engine is a library that never reaches into a UI, and no module or function outgrows a read."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("engine", "app", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")]
SOURCES += [ROOT / "app.py", ROOT / "chainlit_app.py"]
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 150
UI = {"gradio", "chainlit", "app", "gradio_client"}


def test_the_engine_never_imports_a_ui_or_the_web_layer():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: import {n}" for n in names
                          if n.split(".")[0] in UI]
    assert offenders == []


def test_the_shared_web_layer_lives_in_app_not_in_the_engine():
    assert not (ROOT / "engine" / "service.py").exists()
    assert (ROOT / "app" / "workbench.py").is_file()
    assert (ROOT / "app" / "gradio").is_dir() and (ROOT / "app" / "chainlit").is_dir()
    # The entry points stay thin: the apps live in app/.
    for entry in ("app.py", "chainlit_app.py"):
        assert len((ROOT / entry).read_text(encoding="utf-8").splitlines()) <= 40, entry


def test_no_source_file_or_function_is_too_long_to_read():
    long_files = [f"{p.relative_to(ROOT)}: {n} lines" for p in SOURCES
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    long_functions = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert long_files == [] and long_functions == []
