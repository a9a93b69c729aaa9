"""Every command in README.md and in each command's --help examples runs as written, on a fresh
checkout, in a terminal (a pseudo-terminal: progress bars draw); the README's commands also
piped.

The commands run in a scratch copy of the checkout (the code, models and data linked in, runs/
and the other outputs its own), one copy per source and mode, in the order they are written, so
a later command finds what an earlier one made (eval finds runs/demo). Bounds, the only changes
made to a command: a training command gets --max-steps 2 (3 when it resumes), eval-assistant
three questions of each split (as written it takes over 15 minutes here). Without a network, a
command that needs the Hub (`--model gpt2`, `--data hf:...`, publishing a Space) must fail with
one clear line that says so. A few are not run, each for a
stated reason (NOT_RUN); the multi-machine torchrun line (a placeholder host) has its arguments
parsed instead.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

from terminal import run_in_terminal, run_piped

ROOT = Path(__file__).resolve().parent.parent
NOT_RUN = {
    "scripts/setup.sh": "installs packages (.ci/run runs the README's test line on a fresh clone, "
                        "and this test runs inside it)",
    ".venv/bin/hf": "an interactive login to the Hub (needs the network)",
}
LINKED = ("engine", "app", "checkpoints", "data", "docs", "scripts", "benchmarks", "README.md",
          "requirements.txt", "app.py")


# ---------------------------------------------------------------------------------------------
# The commands, as written


def _join_continuations(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1].rstrip() + " " + line.strip()
        else:
            out.append(line.strip())
    return out


def readme_commands() -> list[str]:
    """The shell lines of README.md's indented code blocks that run something of ours."""
    lines = [ln for ln in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
             if ln.startswith("    ")]
    return [c for c in _join_continuations(lines)
            if c.startswith((".venv/bin/", "scripts/")) or re.match(r"echo .* \| \.venv/bin/", c)]


def help_commands() -> dict[str, list[str]]:
    """Each command's examples (the lines after "examples:" in its --help), by command."""
    from engine import commands

    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        doc = importlib.import_module(f"engine.commands.{info.name}").__doc__ or ""
        block = doc.split("examples:\n", 1)[1].split("\n\n", 1)[0] if "examples:\n" in doc else ""
        found[info.name.replace("_", "-")] = _join_continuations(block.splitlines())
    return found


# ---------------------------------------------------------------------------------------------
# Running them


def workspace(tmp: Path) -> Path:
    """A scratch checkout: the code, models and data linked in; runs/ and outputs its own."""
    tmp.mkdir(parents=True)
    for name in LINKED:
        (tmp / name).symlink_to(ROOT / name)
    venv = ROOT / ".venv" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.prefix)
    (tmp / ".venv").symlink_to(venv)
    return tmp


def needs_the_hub(tokens: list[str]) -> bool:
    pairs = list(zip(tokens, tokens[1:]))
    return (("--model", "gpt2") in pairs or any(t.startswith("hf:") for t in tokens)
            or ("scripts/publish_space.py" in tokens and "--dry-run" not in tokens))


def prepare(command: str, questions: Path) -> tuple[str, list[str], bytes]:
    """(shell line to run, the engine part's tokens, stdin) for a command as written."""
    parts = [shlex.split(p, comments=True) for p in command.split(" | ")]
    main = parts[-1]
    if main[0] == "python":
        main[0] = sys.executable
    elif main[0] == "torchrun":
        main[0] = str(Path(sys.executable).with_name("torchrun"))
    engine = main[main.index("engine") + 1:] if "engine" in main else []
    if engine[:1] == ["train"] and "--help" not in engine:
        main += ["--max-steps", "3" if "--resume" in engine else "2"]
    if engine[:1] == ["eval-assistant"]:
        main += ["--questions", str(questions)]
    stdin = b"/quit\n" if engine[:1] == ["chat"] and len(parts) == 1 else b""
    return " | ".join(shlex.join(p) for p in parts), engine, stdin


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """What the runs share: the token cache (each corpus is tokenized once per tokenizer), an
    empty Hugging Face cache, and a few questions for eval-assistant (three of each split)."""
    path = tmp_path_factory.mktemp("shared")
    rows = [json.loads(r) for r in (ROOT / "benchmarks" / "data" / "assistant_questions.jsonl")
            .read_text(encoding="utf-8").splitlines() if r.strip()]
    few = [r for split in ("dev", "test") for r in [r for r in rows if r["split"] == split][:3]]
    (path / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in few),
                                          encoding="utf-8")
    return path


def run_all(commands: list[str], where: Path, mode: str, shared: Path) -> list[str]:
    """Run the commands in order; returns what went wrong, each with the command's output."""
    from engine.__main__ import build_parser

    ws = workspace(where)
    questions = shared / "questions.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(shared / "hf"),
               WORKBENCH_CACHE=str(shared / "cache"), TERM="xterm")
    run = run_in_terminal if mode == "terminal" else run_piped
    problems = []
    for command in commands:
        first = command.split()[0]
        if first in NOT_RUN:
            continue
        line, engine, stdin = prepare(command, questions)
        if "HOST0" in command:  # a placeholder host: check that the engine accepts the arguments
            build_parser().parse_args(engine)
            continue
        started = time.time()
        result = run(["/bin/bash", "-c", line], cwd=ws, env=env, stdin=stdin, timeout=600)
        print(f"{time.time() - started:6.1f}s  [{mode}] {command}")  # shown with pytest -s
        out = result.output
        errors = [ln for ln in result.lines() if ln.startswith("error:")]
        torchrun = "torchrun" in first
        if needs_the_hub(shlex.split(command, comments=True)):
            ok = (result.returncode != 0 and len(errors) == 1
                  and re.search(r"offline|cannot be reached|could not publish", errors[0])
                  and ("Traceback" not in out or torchrun))
        else:
            ok = result.returncode == 0 and not errors and "Traceback" not in out
        if not ok:
            problems.append(f"[{mode}] {command}\n  exit {result.returncode}\n{out[-3000:]}")
    return problems


# ---------------------------------------------------------------------------------------------
# Tests


def test_the_commands_are_found_and_written_for_a_fresh_checkout():
    readme = readme_commands()
    assert ".venv/bin/python -m engine train --preset cpu-demo --data data/stories/stories.txt " \
           "--out runs/demo" in readme
    assert any(c.startswith("echo ") and "| .venv/bin/python -m engine chat" in c for c in readme)
    torchruns = [c for c in readme if "torchrun" in c]
    assert len(torchruns) == 3 and all(c.startswith(".venv/bin/torchrun ") for c in torchruns)
    assert any("--nproc_per_node=2" in c and "--device cpu" in c for c in torchruns)
    helps = help_commands()
    assert set(helps) >= {"train", "eval", "export", "generate", "chat", "eval-assistant"}
    for name, examples in helps.items():
        assert examples, f"{name} --help has no examples"
        for c in examples:
            assert re.match(r"(python -m engine |torchrun |echo .* \| python -m engine )", c), c
            assert "..." not in c and "data/story " not in c + " " and "book.txt" not in c, c


# Slow: about 30 runs of the CLI per mode, each paying the torch import, BPE training for the
# training commands; the token cache is shared, so each corpus is tokenized once per tokenizer.
@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", ["piped", "terminal"])
def test_every_readme_command_runs_as_written(tmp_path, shared, mode):
    problems = run_all(readme_commands(), tmp_path / "checkout", mode, shared)
    assert not problems, "\n\n".join(problems)


# The --help examples run in a terminal only (the mode that broke in issue 18: progress bars
# draw there). Piped, each command is the same code path the README run above and tests/test_cli
# already take; running all of them twice cost about 170 s of a 15-minute suite.
@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", ["terminal"])
def test_every_help_example_runs_as_written(tmp_path, shared, mode):
    helps = help_commands()
    ordered = helps.pop("train") + [c for examples in helps.values() for c in examples]
    problems = run_all(ordered, tmp_path / "checkout", mode, shared)
    assert not problems, "\n\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The lines the runs above leave out: `python app.py` (after setup.sh) and the benchmarks


def test_python_app_py_serves_as_written(tmp_path):
    """README's `.venv/bin/python app.py` (its argument parsing, device pick and exposure
    wiring), in a scratch checkout: it says where to open it, serves the page there, refuses a
    request for another Host name, and stops on Ctrl-C. The port comes from GRADIO_SERVER_PORT,
    the variable the app documents, so the command stays as written."""
    import signal
    import subprocess
    import urllib.error
    import urllib.request

    from gradio_support import free_port

    (line,) = [c for c in readme_commands() if c.endswith("&& .venv/bin/python app.py")]
    command = line.split("&& ", 1)[1]
    ws = workspace(tmp_path / "checkout")
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port)}
    env.pop("WORKBENCH_ALLOW_TRAINING", None)
    proc = subprocess.Popen(shlex.split(command), cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = []
    try:
        for text in proc.stdout:  # its own line says where to go, once it is about to serve
            out.append(text)
            if "GPT Workbench: open" in text:
                break
        assert f"open http://localhost:{port} in a browser" in "".join(out), "".join(out)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    page = r.read().decode("utf-8", "replace")
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "".join(out)
                time.sleep(0.2)
        assert r.status == 200 and "gradio" in page.lower()
        evil = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError):  # a DNS-rebinding name is refused
            urllib.request.urlopen(evil, timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) in (0, 130, -signal.SIGINT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())
