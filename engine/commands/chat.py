r"""Chat with a model in the terminal: the Python assistant (with its documentation sources) or
free chat.

Interactive: type a message, read the answer as it streams, then the sources it was given.
/reset starts a new conversation, /quit (or Ctrl-D) leaves. The conversation is kept, so a
follow-up ("and for a dict?") builds on the previous exchange.

With --json it reads one message per stdin line, answers each as a fresh conversation, and
writes one JSON object per line (for scripts and evaluations):
  {"reply": str, "refused": bool, "reason": str, "sources": [{"title", "url", "text"}, ...],
   "notices": [str, ...]}
A line that cannot be answered (empty, too long) gets {"error": "<what is wrong>"}.

examples:
  python -m engine chat --model python-assistant
  echo "how do I reverse a list?" | python -m engine chat --model python-assistant --json --seed 0
  python -m engine chat --model gpt2 --mode chat --temperature 0.8
"""

from __future__ import annotations

import argparse
import json
import sys

from ._flags import (add_device_arguments, add_grounding_argument, add_sampling_arguments,
                     load, sampling_params)

MAX_MESSAGE_CHARS = 8000  # the same bound the apps put on a message


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.sampling import SamplingParams

    p.add_argument("--model", "-m", default="python-assistant",
                   help="bundled model name, checkpoint or run directory, transformers folder "
                        "or hub id (default python-assistant)")
    p.add_argument("--mode", choices=("python", "chat"), default="python",
                   help="python: the Python assistant (off-topic questions are declined, a "
                        "grounded model answers from the docs); chat: free chat (default python)")
    p.add_argument("--system", default="", help="text put before the conversation (free chat)")
    p.add_argument("--json", action="store_true",
                   help="one message per stdin line, one JSON answer per stdout line")
    add_sampling_arguments(p, SamplingParams(temperature=0.3, max_new_tokens=200))
    add_grounding_argument(p)
    add_device_arguments(p)


def run(args: argparse.Namespace) -> int:
    from engine.device import pick_device

    params = sampling_params(args)  # validate everything before loading anything
    pick_device(args.device)
    ckpt = load(args)
    if args.json:
        return _json_lines(args, ckpt, params)
    return _interactive(args, ckpt, params)


def _answer(args, ckpt, params, conversation):
    from engine.assistant import respond

    return respond(conversation, args.mode, ckpt, params, system=args.system)


def _check(message: str) -> str | None:
    if not message.strip():
        return "the message is empty"
    if len(message) > MAX_MESSAGE_CHARS:
        return f"the message has {len(message)} characters; the limit is {MAX_MESSAGE_CHARS}"
    return None


def _json_lines(args, ckpt, params) -> int:
    out = sys.stdout
    for line in sys.stdin:
        message = line.rstrip("\n")
        problem = _check(message)
        if problem is None:
            try:
                reply = _answer(args, ckpt, params, [{"role": "user", "content": message}])
                text = reply.text()
            except ValueError as e:  # e.g. a message too long for the context window
                problem = str(e)
        if problem is not None:
            out.write(json.dumps({"error": problem}) + "\n")
        else:
            out.write(json.dumps({
                "reply": text, "refused": reply.refused, "reason": reply.reason,
                "sources": [p.as_source() for p in reply.sources],
                "notices": list(reply.notices)}, ensure_ascii=False) + "\n")
        out.flush()
    return 0


def _interactive(args, ckpt, params) -> int:
    out = sys.stdout
    print(f"Chatting with {args.model} ({args.mode} mode). /reset starts over, /quit leaves.",
          file=sys.stderr)
    conversation: list[dict] = []
    while True:
        try:
            message = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if message.strip() in ("/quit", "/exit"):
            return 0
        if message.strip() == "/reset":
            conversation = []
            print("(new conversation)", file=sys.stderr)
            continue
        problem = _check(message)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            continue
        turns = conversation + [{"role": "user", "content": message}]
        try:
            reply = _answer(args, ckpt, params, turns)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        out.write("bot> ")
        chunks = []
        for delta in reply:
            chunks.append(delta)
            out.write(delta)
            out.flush()
        out.write("\n")
        if reply.refused and reply.reason:
            print(f"(why: {reply.reason})", file=sys.stderr)
        for i, p in enumerate(reply.sources, 1):
            print(f"  [{i}] {p.title} ({p.section}) {p.url}", file=sys.stderr)
        for notice in reply.notices:
            print(f"note: {notice}", file=sys.stderr)
        conversation = turns + [{"role": "assistant", "content": "".join(chunks)}]
