"""The sampling explorer's chart: the next-token candidates, and their probability after each
sampling stage, as an HTML table of bars (one row per candidate, one column per stage).

Token strings come from the model, so every one is escaped; the table is built from numbers
and escaped text only.
"""

from __future__ import annotations

import html

STAGE_HELP = {
    "raw": "the model's own distribution",
    "repetition penalty": "tokens already in the text made less likely",
    "temperature": "sharpened (below 1) or flattened (above 1)",
    "top-k": "only the k most likely kept",
    "top-p": "only the smallest set reaching p kept",
    "greedy": "temperature 0: always the most likely token",
}


def _cell(p: float, before: float | None, scale: float) -> str:
    width = max(0.0, min(100.0, p / scale * 100))
    removed = p == 0.0 and (before is None or before > 0)
    label = "removed" if removed else (f"{p:.1%}" if p >= 0.001 else f"{p:.2e}")
    cls = "bar removed" if removed else "bar"
    return (f'<td><div class="{cls}"><div class="fill" style="width:{width:.1f}%"></div>'
            f'<span class="num">{label}</span></div></td>')


def render(result: dict, params) -> str:
    """HTML for app.workbench.Workbench.explain_next()'s result."""
    stages = result["stages"]
    tokens = result["tokens"]
    final = stages[-1]["probs"]
    best = max(range(len(final)), key=final.__getitem__) if final else -1
    head = "".join(
        f'<th title="{html.escape(STAGE_HELP.get(s["name"], ""))}">{html.escape(s["name"])}</th>'
        for s in stages)
    # Bars are drawn against the largest probability in the table, so small models' flat
    # distributions are still visible; the numbers are the probabilities themselves.
    scale = max((p for s in stages for p in s["probs"]), default=1.0) or 1.0
    rows = []
    for i, tok in enumerate(tokens):
        cells = "".join(_cell(s["probs"][i], stages[k - 1]["probs"][i] if k else None, scale)
                        for k, s in enumerate(stages))
        cls = ' class="picked"' if i == best else ""
        rows.append(f'<tr{cls}><td class="tok">{html.escape(tok)}</td>{cells}</tr>')
    kept = sum(1 for p in final if p > 0)
    settings = (f"temperature {params.temperature:g}, top-k {params.top_k or 'off'}, "
                f"top-p {params.top_p:g}, repetition penalty {params.repetition_penalty:g}")
    note = (f"Next-token candidates after {result['context_tokens']} tokens of context "
            f"({settings}). {kept} of these {len(tokens)} can still be drawn; the last column "
            "is what sampling draws from.")
    if result.get("truncated"):
        note += " The text was longer than the model's context window; only its end was used."
    return (f'<div id="explorer-table-wrap"><p>{html.escape(note)}</p>'
            f'<table class="explorer-table"><thead><tr><th>token</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
