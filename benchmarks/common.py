"""What both benchmarks share: logging to stderr (stdout ends with the JSON line), picking the
models from --models, and the thread count."""

from __future__ import annotations

import argparse
import sys

import torch


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_common_arguments(parser: argparse.ArgumentParser, models, default: str) -> None:
    parser.add_argument("--models", default=default, help=f"comma-separated, from: {', '.join(models)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def apply_common_arguments(parser: argparse.ArgumentParser, args, models) -> list[str]:
    """The chosen model names (a usage error for unknown ones); sets the thread count."""
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in models]
    if bad or not names:
        parser.error(f"unknown model(s) {', '.join(bad) or '(none)'}; choose from {', '.join(models)}")
    if args.threads < 0:
        parser.error("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    return names
