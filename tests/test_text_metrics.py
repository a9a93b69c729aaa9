"""engine.text_metrics: BLEU and ROUGE-L of generated responses against an instruction set's
references, on the examples (and split) that eval scores the loss on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_model
from engine.checkpoint import Checkpoint
from engine.data import example_is_val, open_source, prepare
from engine.generation import generate
from engine.templates import STOP
from engine.text_metrics import GREEDY, response_scores

ANSWER = "the cat sat on the mat"


def write_set(path: Path, n: int = 6, outputs: list[str] | None = None) -> Path:
    rows = [{"instruction": f"Where did the cat sit {i}?", "input": "",
             "output": outputs[i] if outputs else ANSWER} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_responses_equal_to_the_references_score_100(tmp_path, bpe_tokenizer):
    ckpt = Checkpoint(make_model(bpe_tokenizer.vocab_size, seed=2), bpe_tokenizer, Path("random"))
    params = GREEDY.replace(max_new_tokens=16, temperature=1.0, seed=0)  # seeded: repeatable
    first = response_scores(ckpt, str(write_set(tmp_path / "a.jsonl", n=3)), split="all",
                            params=params)
    answers = [s["response"] for s in first["samples"]]
    # Something BLEU (4-grams) and ROUGE (letters and digits) can count.
    assert all(len(a.split()) >= 4 and any(c.isalnum() for c in a) for a in answers)
    # The same questions with the model's own (seeded, repeatable) answers as the references.
    again = response_scores(ckpt, str(write_set(tmp_path / "b.jsonl", n=3, outputs=answers)),
                            split="all", params=params)
    assert again["bleu"] == pytest.approx(100) and again["rouge_l"] == pytest.approx(100)
    assert first["bleu"] < 100 and again["examples"] == 3
    assert again["sampling"]["seed"] == 0 and again["sampling"]["max_new_tokens"] == 16
    assert set(STOP) <= set(again["sampling"]["stop"]) and "13a" in again["bleu_signature"]


def test_a_random_model_scores_low_and_the_split_is_evals(tmp_path, bpe_tokenizer):
    ckpt = Checkpoint(make_model(bpe_tokenizer.vocab_size), bpe_tokenizer, Path("random"))
    data = str(write_set(tmp_path / "set.jsonl", n=20))
    scores = response_scores(ckpt, data, split="val", val_fraction=0.2, params=GREEDY)
    # The validation examples are the ones eval's loss is taken on.
    held_out = prepare(open_source(data), bpe_tokenizer, tmp_path / "cache", val_fraction=0.2,
                       block_size=64)
    assert scores["examples"] == len(held_out.val) == example_is_val(20, 0.2).sum() == 4
    assert scores["bleu"] < 20 and scores["rouge_l"] < 50
    # Each response is what the model generates for the templated prompt, greedily.
    first = scores["samples"][0]
    room = 64 - len(bpe_tokenizer.encode(first["prompt"]))  # what the window leaves
    params = GREEDY.replace(stop=STOP, max_new_tokens=room)
    assert first["response"] == generate(ckpt.model, bpe_tokenizer, first["prompt"], params).strip()


def test_plain_text_and_empty_splits_are_refused(tmp_path, bpe_tokenizer):
    ckpt = Checkpoint(make_model(bpe_tokenizer.vocab_size), bpe_tokenizer, Path("random"))
    text = tmp_path / "story.txt"
    text.write_text("Once upon a time.\n" * 10, encoding="utf-8")
    with pytest.raises(ValueError, match="need instruction data"):
        response_scores(ckpt, str(text))
    with pytest.raises(ValueError, match="no instruction examples in the val split"):
        response_scores(ckpt, str(write_set(tmp_path / "one.jsonl", n=1)), split="val")
    with pytest.raises(ValueError, match="max_examples"):
        response_scores(ckpt, str(write_set(tmp_path / "s.jsonl")), max_examples=0)


def test_eval_reports_bleu_and_rouge_next_to_the_loss(tmp_path, bpe_tokenizer, capsys):
    import json as _json

    from engine.__main__ import main
    from engine.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "model", make_model(bpe_tokenizer.vocab_size), bpe_tokenizer)
    data = str(write_set(tmp_path / "set.jsonl", n=5))
    args = ["eval", "--model", str(tmp_path / "model"), "--data", data, "--split", "all",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--text-metrics", "3",
            "--max-new-tokens", "8"]
    assert main(args + ["--json"]) == 0
    result = _json.loads(capsys.readouterr().out)
    metrics = result["text_metrics"]
    assert result["loss"] > 0 and metrics["examples"] == 3 and 0 <= metrics["bleu"] <= 100
    assert metrics["sampling"]["max_new_tokens"] == 8 and metrics["sampling"]["temperature"] == 0
    assert main(args + ["--temperature", "0.7", "--seed", "3"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("BLEU ") and "ROUGE-L" in line and "'temperature': 0.7" in line
