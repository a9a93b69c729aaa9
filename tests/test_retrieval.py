"""engine.retrieval: the docs index, fused ranking, follow-ups; grounded prompts in respond()."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch

from engine import retrieval as R
from engine.assistant import respond
from engine.code_filter import CodeQuestionFilter
from engine.sampling import SamplingParams
from engine.templates import INPUT, format_prompt

RULES = CodeQuestionFilter(use_model=False)


class WordEncoder:
    """A stand-in sentence encoder: a bag of hashed words (so the tests need no model)."""

    STOP = {"a", "an", "and", "the", "for", "how", "do", "i", "of", "in", "to", "is"}

    def encode(self, text: str) -> torch.Tensor:
        v = torch.zeros(4096)
        for w in text.lower().replace("?", " ").replace("`", " ").split():
            if w not in self.STOP:
                v[int(hashlib.md5(w[:5].encode()).hexdigest(), 16) % 4096] += 1
        return torch.nn.functional.normalize(v, dim=0)


PASSAGES = [
    dict(title="list.reverse()", api="list.reverse", kind="method", section="Data Structures",
         url="https://docs.python.org/3/tutorial/datastructures.html#more-on-lists",
         text="`list.reverse()`\n\nReverse the elements of the list in place."),
    dict(title="dict.popitem()", api="dict.popitem", kind="method", section="Built-in Types",
         url="https://docs.python.org/3/library/stdtypes.html#dict.popitem",
         text="`dict.popitem()`\n\nRemove and return a (key, value) pair from the dictionary. "
              "Pairs are returned in LIFO order. Dictionaries are reversible."),
    dict(title="str.split()", api="str.split", kind="method", section="Built-in Types",
         url="https://docs.python.org/3/library/stdtypes.html#str.split",
         text="`str.split(sep=None, maxsplit=-1)`\n\nReturn a list of the words in the string."),
    dict(title="Looping Techniques", api="", kind="tutorial", section="Data Structures",
         url="https://docs.python.org/3/tutorial/datastructures.html#looping-techniques",
         text="When looping through dictionaries, the key and value can be retrieved at the "
              "same time using the `items()` method.\n\n```\nfor k, v in knights.items():\n"
              "    print(k, v)\n```"),
]


def make_index(tmp_path=None) -> R.DocsIndex:
    passages = [R.Passage(id=i, **p) for i, p in enumerate(PASSAGES)]
    enc = WordEncoder()
    vectors = torch.stack([enc.encode(f"{p.title} {p.text}") for p in passages])
    return R.DocsIndex(passages, vectors, encoder=enc)


def test_search_finds_the_entry_that_answers():
    index = make_index()
    hits = index.search("How do I reverse a list?", k=2)
    assert hits[0].passage.api == "list.reverse"
    assert hits[0].score >= hits[1].score
    assert index.search("split a sentence into words", k=1)[0].passage.api == "str.split"


def test_a_follow_up_keeps_the_topic_of_the_earlier_question():
    index = make_index()
    alone = index.search("and for a dictionary?", k=1)[0].passage
    follow = index.search("and for a dictionary?", history=["How do I reverse a list?"], k=1)[0].passage
    assert follow.api == "dict.popitem"  # reversing + dictionary, not any dict entry
    assert R.is_follow_up("and for a dict?") and R.is_follow_up("what about removing one?")
    assert not R.is_follow_up("How do I read a CSV file with a header row in Python?")
    # A self-contained question is searched on its own, whatever came before.
    own = index.search("Return a list of the words in the string", history=["reverse a list"], k=1)
    assert own[0].passage.api == "str.split" and alone is not None


def test_search_rejects_bad_input_and_ignores_empty_queries():
    index = make_index()
    assert index.search("   ?! ") == []
    with pytest.raises(ValueError, match="k must be"):
        index.search("reverse", k=0)
    with pytest.raises(ValueError, match="query must be text"):
        index.search(None)


def test_a_missing_or_damaged_index_says_how_to_build_it(tmp_path):
    with pytest.raises(R.DocsIndexError, match="build_docs_index.py"):
        R.DocsIndex.load(tmp_path)
    (tmp_path / "passages.jsonl").write_text("{not json\n")
    (tmp_path / "embeddings.safetensors").write_bytes(b"junk")
    with pytest.raises(R.DocsIndexError, match="cannot read"):
        R.DocsIndex.load(tmp_path)


def test_context_format_numbers_passages_and_never_cuts_a_code_block():
    index = make_index()
    text = R.format_context(index.passages[:2])
    assert text.startswith("[1] list.reverse() (Data Structures)\n`list.reverse()`")
    assert "\n\n[2] dict.popitem() (Built-in Types)\n" in text
    clipped = R.clip_text(PASSAGES[3]["text"], 150)
    assert clipped.count("```") % 2 == 0 and clipped.startswith("When looping")
    assert R.Passage(id=9, **PASSAGES[3]).excerpt(60).endswith("…")


def grounded(ckpt):
    return SimpleNamespace(model=ckpt.model, tokenizer=ckpt.tokenizer, grounding="python-docs")


@pytest.fixture
def roomy(bpe_tokenizer):
    from conftest import make_model

    return SimpleNamespace(model=make_model(bpe_tokenizer.vocab_size, block_size=512),
                           tokenizer=bpe_tokenizer)


def test_a_grounded_model_gets_the_passages_and_lists_them_as_sources(roomy):
    index = make_index()
    q = "How do I reverse a list in Python?"
    reply = respond([{"role": "user", "content": q}], "python", grounded(roomy),
                    SamplingParams(max_new_tokens=4, seed=0), code_filter=RULES, index=index)
    assert [p.api for p in reply.sources][0] == "list.reverse" and len(reply.sources) == 3
    assert reply.prompt == format_prompt(q, R.format_context(reply.sources))
    assert f"{INPUT}[1] list.reverse()" in reply.prompt and reply.notices == []
    reply.text()


def test_sources_that_do_not_fit_are_dropped_best_last(bpe_tokenizer):
    from conftest import make_model

    index, q = make_index(), "How do I reverse a list in Python?"
    best = index.search(q, k=1)[0].passage
    one = len(bpe_tokenizer.encode(format_prompt(q, R.format_context([best]))))
    small = SimpleNamespace(model=make_model(bpe_tokenizer.vocab_size, block_size=one + 40),
                            tokenizer=bpe_tokenizer, grounding="python-docs")
    reply = respond([{"role": "user", "content": q}], "python", small,
                    SamplingParams(max_new_tokens=40, seed=0), code_filter=RULES, index=index)
    assert [p.api for p in reply.sources] == ["list.reverse"]
    assert any("1 best of 3 documentation passages" in n for n in reply.notices)
    tiny = SimpleNamespace(model=make_model(bpe_tokenizer.vocab_size, block_size=one),
                           tokenizer=bpe_tokenizer, grounding="python-docs")
    reply = respond([{"role": "user", "content": q}], "python", tiny,
                    SamplingParams(max_new_tokens=40, seed=0), code_filter=RULES, index=index)
    assert reply.sources == [] and any("Left out the documentation" in n for n in reply.notices)


def test_chat_and_story_modes_use_no_documentation(roomy):
    index = make_index()
    for mode in ("chat", "story"):
        reply = respond([{"role": "user", "content": "How do I reverse a list?"}], mode,
                        grounded(roomy), SamplingParams(max_new_tokens=2, seed=0), index=index)
        assert reply.sources == [] and INPUT not in reply.prompt


@pytest.mark.slow
def test_the_bundled_index_finds_real_answers():
    """The shipped index with the real sentence model (about 2 s to load)."""
    index = R.DocsIndex.load()
    assert len(index.passages) > 3000
    top = [h.passage for h in index.search("How do I reverse a list?")]
    assert "list.reverse" in [p.api for p in top]
    assert all(p.url.startswith("https://docs.python.org/3/") and "#" in p.url for p in top)
    follow = index.search("and for a dict?", history=["How do I add an item to a list?"])
    assert any(h.passage.api.startswith("dict.") for h in follow)
    meta = json.loads((R.DEFAULT_INDEX_DIR / "meta.json").read_text())
    assert meta["passages"] == len(index.passages)
