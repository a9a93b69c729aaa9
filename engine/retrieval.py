"""Search over the bundled Python documentation: what the Python assistant grounds its answers in.

    from engine.retrieval import default_index
    hits = default_index().search("how do I reverse a list?", k=3)
    hits[0].passage.title, hits[0].passage.url     # 'list.reverse()', 'https://docs.python.org/...'

The index (data/python/index/, built by scripts/build_docs_index.py from Debian's python3.11-doc
HTML and `pydoc_data.topics`) holds about 3,800 passages: each library entry (`str.split()` in
"Built-in Types"), each tutorial/HOWTO/FAQ section, glossary term and language-reference topic,
with its docs.python.org URL and anchor.

Ranking fuses two well-kept methods, because each fails where the other is strong:
- lexical: BM25 (the `bm25s` library, Snowball stemming) over title, API name and text. Sure
  when the question names the thing ("str.split", "KeyError"), blind to paraphrase.
- semantic: cosine similarity of all-MiniLM-L6-v2 sentence vectors (the encoder the code filter
  already runs; the passages' vectors ship with the index). Knows "biggest" is `max()`.
The two rankings are fused by reciprocal rank (a passage scores 1/(RRF_K + rank) on each side,
summed with weights): scores of different kinds need no common scale, and a passage that both
methods rank well beats one that only one method loves. The constants were chosen on the
development half of benchmarks/data/assistant_questions.jsonl (never on its test half).

The conversation matters: a follow-up that leans on the previous question ("and for a dict?",
"what about removing one?") is searched as itself plus, with a lower weight, the earlier question,
so the new words decide and the old ones keep the topic.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INDEX_DIR = ROOT / "data" / "python" / "index"
BUILD_HINT = ("build it with: .venv/bin/python scripts/build_docs_index.py "
              "(needs Debian's python3.11-doc: apt-get install python3.11-doc)")

# Chosen on the dev split of benchmarks/data/assistant_questions.jsonl (see docs/assistant.md):
# reciprocal-rank fusion with RRF_K = 10 found a right passage for 75% of dev questions, min-max
# scaled scores 72%; the other constants made no difference there and keep neutral values.
RRF_K = 10
LEXICAL_WEIGHT = 1.0
SEMANTIC_WEIGHT = 1.0
API_BOOST = 0.002  # breaks near-ties for a library entry over prose: how-to answers name an API
FOLLOW_UP_WEIGHT = 0.5  # the earlier question's share of a follow-up's query
CANDIDATES = 50  # results considered before one-per-entry de-duplication
PROMPT_PASSAGES = 3  # passages in the prompt
PROMPT_PASSAGE_CHARS = 420  # of each passage's text: three fit a 768-token window with room to answer

# A message that leans on the one before: short, or opening with a connective or a pronoun.
_FOLLOW_UP = re.compile(
    r"^\s*(and|or|but|also|what about|how about|same|now|then|instead|ok|okay|so)\b"
    r"|\b(it|that|this|them|those|these|one|instead|too|either)\b[\s?.!]*$", re.I)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DocsIndexError(ValueError):
    """The index is missing or damaged; the message says how to build it."""


@dataclass(frozen=True)
class Passage:
    id: int
    title: str  # "str.split()", "How do I iterate over a sequence in reverse order?"
    api: str  # "str.split", "keyword:for", "" for prose
    kind: str  # function, method, class, exception, data, attribute, tutorial, faq, ...
    section: str  # the page: "Built-in Types", "Programming FAQ"
    url: str  # https://docs.python.org/3/<page>.html#<anchor>
    text: str  # Markdown: the signature in backticks, paragraphs, fenced examples

    def excerpt(self, chars: int = 240) -> str:
        """The opening of the text, cut at a word, for a UI's source list."""
        text = re.sub(r"```.*?```", " ", self.text, flags=re.S)
        text = re.sub(r"\s+", " ", text).strip()
        if len(text) <= chars:
            return text
        return text[:chars].rsplit(" ", 1)[0] + " …"

    def as_source(self) -> dict:
        """The JSON shape the UIs, the CLI and the API show: title, url, text (an excerpt)."""
        return {"title": self.title, "section": self.section, "url": self.url,
                "text": self.excerpt(), "api": self.api}


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


def is_follow_up(message: str) -> bool:
    """Does this message lean on the conversation before it ("and for a dict?")?"""
    words = _WORD.findall(message)
    return len(words) <= 4 or bool(_FOLLOW_UP.search(message))


class DocsIndex:
    """Passages + their sentence vectors + a BM25 index built from them at load (< 1 s)."""

    def __init__(self, passages: list[Passage], embeddings, encoder=None) -> None:
        import bm25s
        import Stemmer
        import torch

        if len(passages) != len(embeddings):
            raise DocsIndexError(f"the index has {len(passages)} passages but "
                                 f"{len(embeddings)} vectors; {BUILD_HINT}")
        self.passages = passages
        self.embeddings = embeddings.float()
        self._encoder = encoder
        self._stemmer = Stemmer.Stemmer("english")
        corpus = [self._lexical_text(p) for p in passages]
        tokens = bm25s.tokenize(corpus, stopwords="en", stemmer=self._stemmer, show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(tokens, show_progress=False)
        self._lock = threading.Lock()  # bm25s keeps per-call state; searches are sub-ms anyway
        self._is_api = torch.tensor([1.0 if p.api else 0.0 for p in passages])

    @staticmethod
    def _lexical_text(p: Passage) -> str:
        # The name twice and split at dots and underscores ("os.path.join" -> os path join):
        # a question that names the API should find its entry first.
        name = re.sub(r"[._:]", " ", p.api or p.title)
        return f"{p.title} {name} {name} {p.section}\n{p.text}"

    @classmethod
    def load(cls, path: Path | str = DEFAULT_INDEX_DIR, encoder=None) -> "DocsIndex":
        """Read passages.jsonl and embeddings.safetensors; DocsIndexError says what is wrong."""
        from safetensors.torch import load_file

        path = Path(path)
        pfile, efile = path / "passages.jsonl", path / "embeddings.safetensors"
        for f in (pfile, efile):
            if not f.is_file():
                raise DocsIndexError(f"the Python docs index is missing ({f} not found); {BUILD_HINT}")
        try:
            rows = [json.loads(line) for line in pfile.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
            passages = [Passage(**{k: r[k] for k in Passage.__dataclass_fields__}) for r in rows]
            embeddings = load_file(str(efile))["embeddings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DocsIndexError(f"cannot read the Python docs index in {path} ({e}); "
                              f"{BUILD_HINT}") from None
        return cls(passages, embeddings, encoder)

    @property
    def encoder(self):
        if self._encoder is None:
            from .code_filter_model import shared_encoder
            self._encoder = shared_encoder()
        return self._encoder

    def components(self, query: str):
        """(lexical, semantic) reciprocal-rank scores of every passage for one query: 1/(RRF_K +
        rank) with rank 0 for the best (torch vectors; search() sums them with weights)."""
        import bm25s
        import numpy as np
        import torch

        with self._lock:
            words = bm25s.tokenize(query, stopwords="en", stemmer=self._stemmer,
                                   return_ids=False, show_progress=False)[0]
            lexical = torch.from_numpy(np.asarray(self._bm25.get_scores(words), dtype=np.float32))
        semantic = self.embeddings @ self.encoder.encode(query)
        return _reciprocal_rank(lexical), _reciprocal_rank(semantic)

    def _fused(self, query: str):
        lexical, semantic = self.components(query)
        return LEXICAL_WEIGHT * lexical + SEMANTIC_WEIGHT * semantic

    def search(self, query: str, history: Sequence[str] = (), k: int = 3) -> list[Hit]:
        """The k passages that best answer `query`, given the earlier user messages (oldest
        first). A query with no words gives []."""
        import torch

        if not isinstance(query, str):
            raise ValueError(f"query must be text, got {type(query).__name__}")
        if not isinstance(k, int) or not 1 <= k <= 20:
            raise ValueError(f"k must be an integer in 1..20, got {k!r}")
        query = query.strip()[:2000]
        if not _WORD.search(query):
            return []
        scores = self._fused(query)
        earlier = [h for h in history if isinstance(h, str) and _WORD.search(h)]
        if earlier and is_follow_up(query):
            scores = scores + FOLLOW_UP_WEIGHT * self._fused(earlier[-1].strip()[:2000] + " " + query)
        scores = scores + API_BOOST * self._is_api
        # One passage per entry: a long section's chunks (or one API documented twice) would
        # otherwise fill the slots that a different answer could use.
        top = torch.topk(scores, min(CANDIDATES, len(self.passages)))
        hits, seen = [], set()
        for s, i in zip(top.values.tolist(), top.indices.tolist()):
            p = self.passages[i]
            keys = {p.url, p.api or p.url}
            if keys & seen:
                continue
            seen |= keys
            hits.append(Hit(p, s))
            if len(hits) == k:
                break
        return hits


def _reciprocal_rank(scores):
    """1 / (RRF_K + rank) for each entry, rank 0 being the highest score."""
    import torch

    ranks = torch.empty_like(scores)
    ranks[torch.argsort(scores, descending=True)] = torch.arange(len(scores), dtype=scores.dtype)
    return 1.0 / (RRF_K + ranks)


def clip_text(text: str, chars: int) -> str:
    """The opening of a passage's Markdown within `chars`: whole paragraphs, a long first one cut
    at a sentence, and never half a code block (a fence is dropped rather than left open)."""
    out, size = [], 0
    for block in re.split(r"\n\n(?=(?:[^`]|`(?!``))*?(?:```|$))", text):
        if size + len(block) + 2 > chars:
            if not out and not block.startswith("```"):
                cut = block[:chars]
                end = cut.rfind(". ")
                out.append(cut[: end + 1] if end > 20 else cut.rsplit(" ", 1)[0] + " ...")
            break
        out.append(block)
        size += len(block) + 2
    return "\n\n".join(out)


def format_context(passages: Sequence[Passage], chars: int = PROMPT_PASSAGE_CHARS) -> str:
    """The passages as the assistant's prompt carries them (training data uses this too):
    "[1] str.split() (Built-in Types)\n<the opening of the text>", blank-line separated."""
    return "\n\n".join(f"[{i}] {p.title} ({p.section})\n{clip_text(p.text, chars)}"
                        for i, p in enumerate(passages, 1))


_DEFAULT: DocsIndex | None = None
_DEFAULT_LOCK = threading.Lock()


def default_index() -> DocsIndex:
    """The bundled index, loaded once per process (about a second, with the sentence model)."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = DocsIndex.load()
    return _DEFAULT
