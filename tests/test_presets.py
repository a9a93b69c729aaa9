"""Training presets: what docs/training.md and `train --help` say about them is what they are, and
the -cpu recipes are the ones the bundled models were trained with (their cards' commands)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from engine.__main__ import build_parser, main
from engine.presets import PRESETS
from engine.train_config import TrainConfig, resolve_config

ROOT = Path(__file__).resolve().parent.parent
# What makes a recipe: the model, the tokenizer, the optimisation (not the logging cadence).
RECIPE = ("mode", "n_layer", "n_head", "n_embd", "block_size", "tokenizer", "vocab_size",
          "dropout", "batch_size", "grad_accum", "max_steps", "lr", "min_lr_ratio",
          "warmup_steps", "weight_decay", "beta1", "beta2", "grad_clip", "seed")
BUNDLED_DATA = {"data/stories/stories.txt": "story-cpu", "data/python/docs.txt": "python-cpu",
                "data/python/qa.jsonl": "python-sft-cpu"}


def preset(name: str) -> TrainConfig:
    return resolve_config({"data": "d", "out": "o"}, preset=name)


def docs_table() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("## Presets", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_docs_table_is_the_presets():
    rows = docs_table()
    assert set(rows) == set(PRESETS)
    for name, (model, tokenizer, batch, lr, steps, _) in rows.items():
        cfg = preset(name)
        if "init-from" in model:
            assert PRESETS[name].get("mode") == "sft", name
        else:
            shape = re.match(r"(\d+) layers, (\d+) heads, (\d+) dims", model)
            assert shape and tuple(map(int, shape.groups())) == (cfg.n_layer, cfg.n_head,
                                                                 cfg.n_embd), name
            assert tokenizer == ("GPT-2" if cfg.tokenizer == "gpt2" else f"BPE {cfg.vocab_size}"), name
        drop = re.search(r"dropout ([\d.]+)", model)
        assert (float(drop.group(1)) if drop else 0.0) == cfg.dropout, name
        b = re.match(r"(\d+) x (up to )?(\d+)", batch)
        assert int(b.group(1)) == cfg.batch_size * cfg.grad_accum, name
        if not b.group(2):
            assert int(b.group(3)) == cfg.block_size, name
        assert float(lr.split()[0]) == cfg.lr, name
        warm = re.search(r"warmup (\d+)", lr)
        assert warm and int(warm.group(1)) == cfg.warmup_steps, name
        assert int(steps) == cfg.max_steps, name


# The bundled python-assistant's first two stages as its v3 card recorded them (commit e323680);
# v4's card says it continues from v3 and records only the grounded stage that followed.
RECORDED = [
    "python -m engine train --data data/python/docs.txt --out /work/bundle/pydocs3 --block-size 256 "
    "--tokenizer bpe --vocab-size 4096 --max-steps 1200 --lr 0.0015 --warmup-steps 50 "
    "--save-every 100 --sample-prompt \"A list is\"",
    "python -m engine train --data data/python/qa.jsonl --out /work/bundle/pysft3 --val-data "
    "data/python/qa_val.jsonl --mode sft --init-from /work/bundle/pydocs3 --max-steps 500 --lr 0.001 "
    "--warmup-steps 20 --weight-decay 0.0 --eval-every 100 --eval-batches 10 --save-every 100 "
    "--sample-prompt \"How do I reverse a list?\"",
]


def card_commands() -> list[list[str]]:
    """The training commands the bundled models' cards record (and RECORDED), as arguments."""
    found = list(RECORDED)
    for card in sorted((ROOT / "checkpoints").glob("*/README.md")):
        found += re.findall(r"`(python -m engine train [^`]+)`", card.read_text(encoding="utf-8"))
    return [shlex.split(cmd)[4:] for cmd in found]


def test_the_cpu_presets_are_the_bundled_models_recipes():
    seen = set()
    for args in card_commands():
        ns = build_parser().parse_args(["train", *args])
        data = ns.data
        if data not in BUNDLED_DATA:
            continue
        name = BUNDLED_DATA[data]
        options = {k: v for k, v in vars(ns).items() if k in TrainConfig.__dataclass_fields__}
        if "init_from" in options:
            options["init_from"] = "x"  # a path on the machine that trained it
        trained, recipe = resolve_config(options), preset(name)
        differ = {f: (getattr(trained, f), getattr(recipe, f)) for f in RECIPE
                  if getattr(trained, f) != getattr(recipe, f)}
        assert not differ, f"{name} differs from the command in its card (card, preset): {differ}"
        seen.add(name)
    assert seen == set(BUNDLED_DATA.values()), f"no card command found for {set(BUNDLED_DATA.values()) - seen}"


def test_train_help_lists_the_presets_and_a_presets_values(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "presets: --preset NAME is the same as these flags" in out
    assert "story-cpu:  --n-embd 128  --block-size 256  --tokenizer bpe  --vocab-size 16384" in out
    assert "(default: 256)" in out  # n-embd's default, without a preset
    with pytest.raises(SystemExit):
        main(["train", "--preset", "story-cpu", "--help"])
    out = capsys.readouterr().out
    assert "model width (preset story-cpu: 128)" in out
    assert "optimizer steps (preset story-cpu: 1100)" in out
    assert "AdamW beta1 (default: 0.9)" in out  # a value the preset leaves alone
