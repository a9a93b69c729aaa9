"""Command line: python -m engine <command> ...

Each command lives in engine/commands/<name>.py with `add_arguments(parser)` and `run(args)`;
run() returns an exit code. Errors a person can fix (ValueError, CheckpointError, ...) are
printed as one line on stderr with exit status 2, never as a traceback; under torchrun, by rank
0 alone (every rank also hands its line to torchrun's failure summary).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
import time

from . import commands

# Commands that need the web layer live with it (app/commands/: `serve`, the OpenAI-compatible API
# over app.workbench). The engine never imports app to do its own work; its command line lists
# those commands when the package is there (a checkout) and goes without them in an install of
# the engine alone (pyproject packages engine only).
FRONT_END_COMMANDS = ("app.commands",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Train, evaluate, export and sample small GPT-2 models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        name = module.__name__.rsplit(".", 1)[1]
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        p = sub.add_parser(name.replace("_", "-"), help=summary, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           add_help=not getattr(module, "OWN_HELP", False))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_modules() -> list:
    """engine/commands/*.py, then the commands of the packages in FRONT_END_COMMANDS that are
    present, sorted by name within each; "_" modules are shared helpers, not commands."""
    packages = [commands]
    for name in FRONT_END_COMMANDS:
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # its parent package is not installed
            found = None
        if found is not None:
            packages.append(importlib.import_module(name))
    return [importlib.import_module(f"{pkg.__name__}.{info.name}") for pkg in packages
            for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)
            if not info.name.startswith("_")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - classified below
        from .errors import USER_ERRORS

        if isinstance(e, USER_ERRORS):
            report_error(f"error: {e}")
            return 2
        raise


def report_error(line: str) -> None:
    """One line on stderr. Under torchrun every process fails the same way, so rank 0 alone
    prints it, and each process writes it to the error file torchrun reads
    (TORCHELASTIC_ERROR_FILE), so the launcher's failure summary shows it instead of <N/A>."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as f:
                json.dump({"message": line, "timestamp": int(time.time())}, f)
        except OSError:
            pass
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
