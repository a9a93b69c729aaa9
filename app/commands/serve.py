r"""Serve models over an OpenAI-compatible HTTP API (chat and text completions, streaming).

examples:
  python -m engine serve                                  # http://127.0.0.1:8000/v1
  python -m engine serve --port 8001 --models python-assistant story
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
      -d '{"model": "python-assistant", "messages": [{"role": "user", "content": "How do I reverse a list?"}]}'

Any OpenAI client works (base URL http://127.0.0.1:8000/v1, any API key). The mode is the
"mode" field or a suffix on the model name: python-assistant:python (the Python assistant with
its filter and sources), story:chat (free chat), story:story (plain continuation). See
docs/api.md. Like the apps, a server on a non-loopback --host offers no multi-GB hub models
unless WORKBENCH_ALLOW_LARGE_MODELS=1, answers only to the Host names it knows
(--allowed-hosts), and with WORKBENCH_PASSWORD set takes that password as the API key.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.commands._flags import add_device_arguments

    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 makes it "
                             "reachable from other machines)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="offer only these models (bundled names, runs, hub ids; default: "
                             "every model the apps list)")
    parser.add_argument("--checkpoints", default=None,
                        help="folder of bundled models (default checkpoints/)")
    parser.add_argument("--runs", default=None, help="folder of training runs (default runs/)")
    parser.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                        help="names clients reach this server by, besides localhost, 127.0.0.1 "
                             "and ::1 (comma-separated; added to $WORKBENCH_ALLOWED_HOSTS); "
                             "other Host headers are refused")
    add_device_arguments(parser)  # --device, --precision: the same flags as generate and chat


def build(args: argparse.Namespace):
    """The FastAPI app for these arguments (ValueError for a bad device or model)."""
    from app import workbench
    from app.hosts import allowed_hosts, current_request
    from app.openai_api import create_app, server_app
    from app.policy import RequestExposure, is_exposed

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    wb = workbench.configure(runs_dir=args.runs, bundled_dir=args.checkpoints,
                             device=args.device, precision=args.precision,
                             # judged per request: a client through a proxy is not local
                             exposed=RequestExposure(is_exposed(args.host), current_request))
    return server_app(create_app(wb, models=args.models),
                      allowed_hosts(args.host, False, args.allowed_hosts))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    api = build(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"OpenAI-compatible API on http://{args.host}:{args.port}/v1 "
          f"(docs: http://{args.host}:{args.port}/v1/docs)", flush=True)
    uvicorn.run(api, host=args.host, port=args.port, log_level="warning")
    return 0
