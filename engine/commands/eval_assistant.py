r"""Score the Python assistant on a held-out question set: retrieval and answers.

Prints one JSON object: recall@3 (a right API among the sources shown), named_in_reply (the
reply mentions a right API), code_blocks_parse (fenced code that ast.parse accepts), and the
median and 90th-percentile time to first token. The default set is
benchmarks/data/assistant_questions.jsonl; tune on --split dev, report --split test (see
docs/assistant.md for the figures and how the set was made).

examples:
  python -m engine eval-assistant --model python-assistant --split test
  python -m engine eval-assistant --model python-assistant --split dev --misses 20
"""

from __future__ import annotations

import argparse
import json
import sys

from ._flags import (add_device_arguments, add_grounding_argument, add_sampling_arguments,
                     load, sampling_params)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.assistant_eval import DEFAULT_QUESTIONS, SPLITS
    from engine.sampling import SamplingParams

    p.add_argument("--model", "-m", default="python-assistant",
                   help="the model to answer with (default python-assistant)")
    p.add_argument("--questions", default=str(DEFAULT_QUESTIONS),
                   help="JSONL question set (default: the bundled held-out set)")
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="which part of the set: dev (for tuning), test (report), all")
    p.add_argument("--misses", type=int, default=0, metavar="N",
                   help="also print up to N questions that missed (to stderr)")
    p.add_argument("--free-names", action="store_true",
                   help="let the model spell names in `backticks` freely (by default they are "
                        "held to the names its sources show: engine/inline_code.py)")
    add_sampling_arguments(p, SamplingParams(temperature=0.0, max_new_tokens=160))
    add_grounding_argument(p)
    add_device_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.assistant import respond
    from engine.assistant_eval import evaluate, read_questions
    from engine.device import pick_device

    params = sampling_params(args)
    items = read_questions(args.questions, args.split)
    pick_device(args.device)
    ckpt = load(args)

    def ask(conversation):
        reply = respond(conversation, "python", ckpt, params, grounded_names=not args.free_names)
        return reply, [p.as_source() | {"text": p.text} for p in reply.sources], reply.refused

    ask([{"role": "user", "content": "How do I warm up the model?"}])[0].text()  # load once
    with tqdm(total=len(items), desc="questions", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        report = evaluate(items, ask, args.split, progress=bar.update)
    result = {"model": args.model, **report.summary(), "grounded_names": not args.free_names,
              "sampling": {"temperature": params.temperature, "top_k": params.top_k,
                           "top_p": params.top_p, "max_new_tokens": params.max_new_tokens,
                           "seed": params.seed}}
    for miss in report.misses[: args.misses]:
        print(json.dumps(miss, ensure_ascii=False), file=sys.stderr)
    print(json.dumps(result))
    return 0
