"""Retrieval alone, on the assistant question set: recall@k of the docs index for a grid of
fusion weights (tune on --split dev only; report test with the chosen weights).

    .venv/bin/python -m benchmarks.retrieval --split dev --grid
    .venv/bin/python -m benchmarks.retrieval --split test        # the weights in engine/retrieval.py

Prints one JSON object per setting; --misses lists the questions without a right source.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from engine import retrieval as R
from engine.assistant_eval import read_questions, source_matches

GRID = {"RRF_K": [10, 60], "LEXICAL_WEIGHT": [0.5, 1.0], "API_BOOST": [0.0, 0.002],
        "FOLLOW_UP_WEIGHT": [0.3, 0.5, 0.8]}


def recall(index: R.DocsIndex, items: list[dict], k: int, misses: bool = False) -> dict:
    hit, t0 = 0, time.perf_counter()
    missed = []
    for it in items:
        sources = [h.passage.as_source() | {"text": h.passage.text}
                   for h in index.search(it["question"], it.get("history", []), k=k)]
        ok = any(source_matches(s, it["apis"]) for s in sources)
        hit += ok
        if not ok:
            missed.append((it["question"], it["apis"], [s["title"] for s in sources]))
    out = {"recall": round(hit / len(items), 3), "n": len(items),
           "ms_per_query": round((time.perf_counter() - t0) / len(items) * 1000, 1)}
    if misses:
        out["misses"] = missed
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="dev", choices=("dev", "test", "all"))
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--grid", action="store_true", help="try the grid of weights")
    ap.add_argument("--misses", action="store_true")
    args = ap.parse_args(argv)
    items = read_questions(split=args.split)
    index = R.default_index()
    settings = [dict(zip(GRID, v)) for v in itertools.product(*GRID.values())] if args.grid else [{}]
    for s in settings:
        for name, value in s.items():
            setattr(R, name, value)
        print(json.dumps({**s, **recall(index, items, args.k, args.misses)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
