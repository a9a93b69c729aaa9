"""The Gradio app's command line: `python app.py [--host H] [--port P] [--share] ...`."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from app.workbench import PRECISIONS

    p = argparse.ArgumentParser(description="GPT Workbench: chat, write stories and train small "
                                            "GPT-2 models in the browser.")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (default 127.0.0.1, or $GRADIO_SERVER_NAME; "
                        "0.0.0.0 makes it reachable from other machines)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (default 7860, or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true",
                   help="also serve through a temporary public gradio.live link")
    p.add_argument("--checkpoints", default=None,
                   help="folder of bundled models (default checkpoints/, or "
                        "$WORKBENCH_CHECKPOINTS)")
    p.add_argument("--runs", default=None,
                   help="folder of training runs (default runs/, or $WORKBENCH_RUNS)")
    p.add_argument("--device", default="auto", help="where models run: auto, cpu, cuda, mps")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="number format of chat and story models: fp32 (exact), bf16, int8 "
                        "(CPU only), or auto: the fastest that holds quality on the device "
                        "(default auto; see docs/engine.md)")
    p.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                   help="names browsers reach this server by, besides localhost, 127.0.0.1 "
                        "and ::1 (comma-separated, *.example.org for a domain; added to "
                        "$WORKBENCH_ALLOWED_HOSTS); other Host headers are refused")
    p.add_argument("--api", action="store_true",
                   help="also serve the OpenAI-compatible API at /v1 on the same port "
                        "(see docs/api.md)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="generations that run at once; more wait in the queue (default 8)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from app import workbench
    from app.policy import RequestExposure, is_exposed

    from .layout import build_demo, launch
    from .security import current_request

    if args.concurrency < 1:
        print(f"error: --concurrency must be at least 1, got {args.concurrency}", file=sys.stderr)
        return 2
    try:
        wb = workbench.configure(runs_dir=args.runs, bundled_dir=args.checkpoints,
                                 device=args.device, precision=args.precision,
                                 exposed=RequestExposure(is_exposed(args.host, args.share),
                                                         current_request))
    except ValueError as e:  # the device, or a precision the device cannot run
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_demo(wb)
    if args.host in ("127.0.0.1", "localhost", "0.0.0.0", "::"):
        where = f"http://localhost:{args.port}"
        if args.host in ("0.0.0.0", "::"):
            where += " (other machines: this machine's address, same port)"
    else:
        where = f"http://{args.host}:{args.port}"
    print(f"GPT Workbench: open {where} in a browser", flush=True)
    api = None
    if args.api:
        from app.openai_api import create_app

        api = create_app(wb)
        print(f"OpenAI-compatible API: {where.split(' ')[0]}/v1", flush=True)
    launch(demo, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
           allowed_hosts=args.allowed_hosts, api=api)
    return 0
