"""Data sources, the token cache, the train/val split, SFT masking and batch order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import data as D
from engine.templates import format_example
from engine.tokenizer import EOT

STORY = ("Once upon a time a small fox lived by the river. Every morning the fox ran to the "
         "water and looked at the fish. ") * 8


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---- sources and bad input


def test_text_file_tokenizes_to_train_and_val(tmp_path, bpe_tokenizer):
    f = write(tmp_path / "story.txt", STORY * 4)
    src = D.open_source(str(f))
    assert src.kind == "text"
    data = D.prepare(src, bpe_tokenizer, tmp_path / "cache", val_fraction=0.1)
    expected = bpe_tokenizer.encode(STORY * 4) + [bpe_tokenizer.eot_id]
    assert data.meta["tokens"] == len(expected)
    assert len(data.train) + len(data.val) == len(expected)
    assert 0 < len(data.val) < len(data.train)
    assert data.train.dtype == np.uint16
    # the split keeps chunks whole and in order: train + val re-interleaved is the corpus
    chunk, is_val = D._split_chunks(len(expected), 0.1)
    rebuilt, ti, vi = [], 0, 0
    for v in is_val:
        src_arr = data.val if v else data.train
        pos = vi if v else ti
        piece = [int(t) for t in src_arr[pos:pos + chunk]]
        rebuilt += piece
        vi, ti = (vi + len(piece), ti) if v else (vi, ti + len(piece))
    assert rebuilt == expected


def test_folder_documents_are_joined_with_eot_and_metadata_skipped(tmp_path, bpe_tokenizer):
    write(tmp_path / "corpus" / "a.txt", "first document")
    write(tmp_path / "corpus" / "sub" / "b.md", f"second document{EOT}third document")
    write(tmp_path / "corpus" / "README.md", "about this corpus")
    write(tmp_path / "corpus" / "LICENSE-PSF.txt", "licence text")
    write(tmp_path / "corpus" / "works.json", '{"meta": 1}')
    write(tmp_path / "corpus" / ".hidden.txt", "hidden")
    src = D.open_source(str(tmp_path / "corpus"))
    assert src.kind == "text"
    assert [p.name for p in src.files] == ["a.txt", "b.md"]
    assert list(D.iter_documents(src)) == ["first document", "second document", "third document"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"caf\xe9 au lait", "not valid UTF-8"),
])
def test_bad_text_files_are_named(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(D.DataError, match=message) as e:
        list(D.iter_documents(D.open_source(str(f))))
    assert str(f) in str(e.value)


def test_missing_paths_and_empty_specs(tmp_path):
    with pytest.raises(D.DataError, match="no such file"):
        D.open_source(str(tmp_path / "nope.txt"))
    with pytest.raises(D.DataError, match="no data given"):
        D.open_source("  ")
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DataError, match="no data files"):
        D.open_source(str(tmp_path / "empty"))


# ---- instruction data


def test_alpaca_dolly_and_json_list(tmp_path):
    alpaca = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    dolly = {"instruction": "Summarize.", "context": "A long text.", "response": "Short."}
    write(tmp_path / "a.jsonl", json.dumps(alpaca) + "\n\n" + json.dumps(dolly) + "\n")
    write(tmp_path / "b.json", json.dumps([alpaca]))
    got = list(D.iter_examples(D.open_source(str(tmp_path / "a.jsonl"))))
    assert got == [format_example("Add the numbers.", "2 and 3", "5"),
                   format_example("Summarize.", "A long text.", "Short.")]
    assert D.open_source(str(tmp_path / "b.json")).kind == "instruct"
    assert list(D.iter_examples(D.open_source(str(tmp_path / "b.json")))) == got[:1]


@pytest.mark.parametrize("line, message", [
    ('{"instruction": "x"}', "missing fields"),
    ('{"instruction": "x", "output": ""}', "'output' is missing or empty"),
    ('{"instruction": "", "response": "y"}', "'instruction' is missing or empty"),
    ('{"instruction": "x", "input": 3, "output": "y"}', "'input' must be a string"),
    ('{"instruction": "x", "output": "y"', "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
])
def test_bad_jsonl_lines_are_named(tmp_path, line, message):
    good = json.dumps({"instruction": "q", "input": "", "output": "a"})
    f = write(tmp_path / "d.jsonl", good + "\n" + line + "\n")
    with pytest.raises(D.DataError, match=message) as e:
        list(D.iter_examples(D.open_source(str(f))))
    assert f"{f} line 2" in str(e.value)


def test_sft_batches_mask_prompt_and_padding(tmp_path, bpe_tokenizer):
    rows = [{"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Tell me about the fox and the river please.", "input": "",
             "output": "The fox ran to the river every morning."}]
    f = write(tmp_path / "sft.jsonl", "\n".join(json.dumps(r) for r in rows))
    data = D.prepare(D.open_source(str(f)), bpe_tokenizer, tmp_path / "cache", val_fraction=0.0,
                     block_size=256)
    assert isinstance(data, D.ExampleData) and len(data.train) == 2 and len(data.val) == 0
    x, y = D.Batches(data, 256, seed=0).collate([0, 1])
    lengths = []
    for b, row in enumerate(rows):
        prompt, response = format_example(row["instruction"], row["input"], row["output"])
        p = bpe_tokenizer.encode(prompt)
        r = bpe_tokenizer.encode(response) + [bpe_tokenizer.eot_id]
        n = len(p) + len(r)
        assert x[b, :n - 1].tolist() == (p + r)[:-1]
        # targets: -100 over the prompt (except the last prompt position, which predicts the
        # first response token), the response tokens and EOT, then -100 padding
        assert y[b, :len(p) - 1].eq(-100).all()
        assert y[b, len(p) - 1:n - 1].tolist() == r
        assert y[b, n - 1:].eq(-100).all()
        lengths.append(n)
    assert x.shape[1] == max(lengths) - 1  # padded to the longest example in the batch


def test_sft_long_examples_truncated_and_prompt_only_skipped(tmp_path, bpe_tokenizer):
    rows = [{"instruction": "fox " * 100, "output": "too late"},
            {"instruction": "short", "output": "river " * 100}]
    f = write(tmp_path / "long.jsonl", "\n".join(json.dumps(r) for r in rows))
    data = D.prepare(D.open_source(str(f)), bpe_tokenizer, tmp_path / "cache", 0.0, block_size=64)
    assert data.meta["examples"] == 1 and data.meta["skipped"] == 1 and data.meta["truncated"] == 1
    assert int(data.train[0][1]) == 65  # block_size + 1 tokens: 64 inputs and 64 targets


# ---- Hugging Face datasets (local stand-ins; the network is never touched)


def test_hf_local_parquet_folder_streams(tmp_path, bpe_tokenizer):
    import datasets

    folder = tmp_path / "hfdata"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": [STORY, "A second story about a cat."]}).to_parquet(
        str(folder / "train.parquet"))
    src = D.open_source(f"hf:{folder}")
    assert src.is_hf and src.kind == "text"
    assert list(D.iter_documents(src)) == [STORY, "A second story about a cat."]
    data = D.prepare(src, bpe_tokenizer, tmp_path / "cache", 0.1)
    assert data.meta["documents"] == 2


def test_hf_local_instruction_json(tmp_path):
    folder = tmp_path / "dolly"
    write(folder / "train.jsonl", json.dumps({"instruction": "q", "context": "", "response": "a"}))
    src = D.open_source(f"hf:{folder}")
    assert src.kind == "instruct"
    assert list(D.iter_examples(src)) == [format_example("q", "", "a")]


def test_hf_unreachable_dataset_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(D.DataError, match="cannot load Hugging Face dataset 'no-such-user/no-such-data'"
                                          ".*local text file"):
        D.open_source("hf:no-such-user/no-such-data")
    with pytest.raises(D.DataError, match="expected hf:NAME"):
        D.open_source("hf:")


# ---- cache and batches


def test_cache_is_reused_and_keyed_by_content(tmp_path, bpe_tokenizer, gpt2_tokenizer):
    f = write(tmp_path / "s.txt", STORY)
    calls = []
    first = D.prepare(D.open_source(str(f)), bpe_tokenizer, tmp_path / "c", 0.1, progress=calls.append)
    assert calls
    calls.clear()
    again = D.prepare(D.open_source(str(f)), bpe_tokenizer, tmp_path / "c", 0.1, progress=calls.append)
    assert not calls and again.path == first.path
    other = D.prepare(D.open_source(str(f)), gpt2_tokenizer, tmp_path / "c", 0.1)
    assert other.path != first.path
    write(f, STORY + " And then it rained.")
    changed = D.prepare(D.open_source(str(f)), bpe_tokenizer, tmp_path / "c", 0.1)
    assert changed.path != first.path


def test_batch_order_is_seeded_and_position_addressable(tmp_path, bpe_tokenizer):
    import random

    rng = random.Random(0)  # non-repeating text, so that distinct windows differ
    words = STORY.split()
    f = write(tmp_path / "s.txt", " ".join(rng.choice(words) for _ in range(3000)))
    data = D.prepare(D.open_source(str(f)), bpe_tokenizer, tmp_path / "c", 0.1)
    b = D.Batches(data, 16, seed=3)
    n = len(b)
    assert n > 8
    x_all, y_all = b.take(0, 8)
    x1, _ = b.take(0, 4)
    x2, _ = b.take(4, 4)
    assert torch.equal(torch.cat([x1, x2]), x_all)
    assert torch.equal(x_all[:, 1:], y_all[:, :-1])  # targets are inputs shifted by one
    assert torch.equal(D.Batches(data, 16, seed=3).take(0, 8)[0], x_all)
    assert not torch.equal(D.Batches(data, 16, seed=4).take(0, 8)[0], x_all)
    # one epoch visits every window exactly once, the next epoch reshuffles
    epoch = b.take(0, n)[0]
    windows = {tuple(r.tolist()) for r in epoch}
    assert len(windows) == n
    assert {tuple(r.tolist()) for r in b.take(n, n)[0]} == windows
