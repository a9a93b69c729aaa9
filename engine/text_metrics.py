"""BLEU and ROUGE-L of a model's responses to an instruction set, against the set's references.

    scores = response_scores(checkpoint, "data/python/sft.jsonl", split="val", max_examples=50)
    scores["bleu"], scores["rouge_l"], scores["sampling"]

The examples are the ones `python -m engine eval` scores the loss on: instruction data read as
training reads it (engine.data.iter_examples, the shared template), prompts that leave the model
no room for a response left out as training leaves them out, and the same validation split
(engine.data.example_is_val). Each prompt is answered with the given sampling (default greedy,
so the figures repeat) and the instruction template's stop strings, as chat would; an answer
gets at most the room the model's window leaves after its prompt.

BLEU is sacrebleu's corpus BLEU (13a tokenizer, the standard settings its signature records);
ROUGE-L is rouge-score's F-measure with Porter stemming, averaged over examples. Both are on a
0-100 scale. They reward word overlap with one reference, so read them next to the loss: an
answer that is right in other words scores low.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from . import data as D
from .generation import stream
from .sampling import SamplingParams
from .templates import STOP

GREEDY = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=128)


def response_scores(checkpoint, data: str, split: str = "val", val_fraction: float = 0.1,
                    max_examples: int = 50, params: SamplingParams = GREEDY,
                    block_size: int = 0, progress: Callable[[int], None] | None = None) -> dict:
    """Generate a response for each of up to `max_examples` examples of the split and score them.

    Returns {"bleu", "rouge_l", "examples", "split", "sampling": {...}, "bleu_signature",
    "samples": [{"prompt", "reference", "response"}] (the first three)}. ValueError for data
    that is not instruction data or a split with no examples."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if split not in ("val", "train", "all"):
        raise ValueError(f"split must be val, train or all, got {split!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be a whole number of at least 1, got {max_examples!r}")
    source = D.open_source(data)
    if source.kind != "instruct":
        raise ValueError(f"{data}: BLEU and ROUGE-L need instruction data (JSONL with "
                         "instruction/output or Dolly fields), not plain text")
    model, tok = checkpoint.model, checkpoint.tokenizer
    block = block_size or model.config.block_size
    examples = [(p, r) for p, r in D.iter_examples(source) if len(tok.encode(p)) < block]
    is_val = D.example_is_val(len(examples), val_fraction)
    chosen = [ex for ex, v in zip(examples, is_val) if split == "all" or v == (split == "val")]
    chosen = chosen[:max_examples]
    if not chosen:
        raise ValueError(f"{data}: no instruction examples in the {split} split "
                         f"(val_fraction {val_fraction:g}, {len(examples)} usable examples)")
    params = params.replace(stop=params.stop + tuple(s for s in STOP if s not in params.stop))
    responses = []
    for i, (prompt, _) in enumerate(chosen):
        ids = tok.encode(prompt)
        # Never more than the window has room for, so the prompt is never cut (generation
        # would keep only its end to leave room for a long answer).
        room = min(params.max_new_tokens, block - len(ids))
        responses.append(stream(model, tok, ids, params.replace(max_new_tokens=room))
                         .text().strip())
        if progress:
            progress(i + 1)
    references = [r for _, r in chosen]
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(responses, [references])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, hyp)["rougeL"].fmeasure for ref, hyp in zip(references, responses)]
    return {"bleu": bleu.score, "rouge_l": 100 * sum(rouge) / len(rouge),
            "examples": len(chosen), "split": split,
            "sampling": {**asdict(params), "stop": list(params.stop)},
            "bleu_signature": str(metric.get_signature()),
            "samples": [{"prompt": p, "reference": r, "response": h}
                        for (p, r), h in list(zip(chosen, responses))[:3]]}
