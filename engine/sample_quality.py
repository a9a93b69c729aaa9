"""Sample quality: does a model write words of its corpus, and does it repeat itself?

    vocab = corpus_words(texts)                        # the set of words of a training corpus
    sample_quality(model, tokenizer, vocab, n=8)       # N seeded samples, scored

Two figures over N samples of 200 new tokens from one fixed prompt ("The king" by default), seeds
0..N-1, at the default sampling settings (SamplingParams(): temperature 0.8, top-k 50):

- real_word_share: of all the words the samples contain (the prompt not counted), the share that
  occur anywhere in the training corpus. A small model with a subword vocabulary glues pieces into
  words no one wrote ("medessenice"); this counts them.
- repeated_4gram_share: of all the word 4-grams in the samples (each sample on its own), the share
  that repeat an earlier 4-gram of the same sample: a model stuck in a loop scores high.

Words are what WORD_PATTERN matches in the case-folded text: runs of letters, with apostrophes
inside them ("press'd", "o'er"), so numbers and punctuation are not words and "King" is "king".
Words are counted over tokens the tokenizer decodes, so the figures compare across tokenizers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

# Letters ([^\W\d_]: a word character that is neither a digit nor "_"), with single apostrophes
# between letters. A leading or trailing apostrophe ('tis, th') is punctuation here.
WORD_PATTERN = r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*"
_WORD = re.compile(WORD_PATTERN)

DEFAULT_PROMPT = "The king"
DEFAULT_TOKENS = 200
NGRAM = 4


def words(text: str) -> list[str]:
    """The words of text, case-folded, in order (see WORD_PATTERN)."""
    return _WORD.findall(text.casefold())


def corpus_words(texts: Iterable[str]) -> frozenset[str]:
    """Every word that occurs in the texts (case-folded)."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(words(text))
    return frozenset(vocab)


@dataclass
class SampleQuality:
    samples: int
    words: int  # words the samples hold
    real_words: int  # of those, the ones the corpus has
    ngrams: int  # word 4-grams the samples hold
    repeated_ngrams: int  # of those, the ones that already occurred earlier in the same sample
    prompt: str
    max_new_tokens: int

    @property
    def real_word_share(self) -> float:
        return self.real_words / self.words if self.words else 0.0

    @property
    def repeated_4gram_share(self) -> float:
        return self.repeated_ngrams / self.ngrams if self.ngrams else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "real_word_share": self.real_word_share,
                "repeated_4gram_share": self.repeated_4gram_share}


def continuation_words(prompt: str, continuation: str) -> list[str]:
    """The words the model wrote: those of prompt + continuation that end inside the
    continuation, so a word it completed ("The king" + "dom") counts whole ("kingdom")."""
    cut = len(prompt.casefold())
    return [m.group() for m in _WORD.finditer((prompt + continuation).casefold()) if m.end() > cut]


def score_texts(texts: Iterable[str], vocab: frozenset[str], prompt: str = "",
                max_new_tokens: int = 0) -> SampleQuality:
    """Score generated continuations of prompt against a corpus vocabulary."""
    q = SampleQuality(0, 0, 0, 0, 0, prompt, max_new_tokens)
    for text in texts:
        ws = continuation_words(prompt, text)
        q.samples += 1
        q.words += len(ws)
        q.real_words += sum(w in vocab for w in ws)
        seen: set[tuple[str, ...]] = set()
        for i in range(len(ws) - NGRAM + 1):
            gram = tuple(ws[i:i + NGRAM])
            q.ngrams += 1
            q.repeated_ngrams += gram in seen
            seen.add(gram)
    return q


def generate_samples(model, tokenizer, n: int, prompt: str = DEFAULT_PROMPT,
                     max_new_tokens: int = DEFAULT_TOKENS) -> list[str]:
    """n continuations of prompt, seeds 0..n-1, default sampling settings otherwise."""
    from .generation import generate
    from .sampling import SamplingParams

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"samples must be an integer >= 1, got {n!r}")
    if not prompt:
        raise ValueError("the sample prompt must not be empty")
    was_training = model.training
    model.eval()
    try:
        return [generate(model, tokenizer, prompt, SamplingParams(max_new_tokens=max_new_tokens, seed=s))
                for s in range(n)]
    finally:
        model.train(was_training)


def sample_quality(model, tokenizer, vocab: frozenset[str], n: int, prompt: str = DEFAULT_PROMPT,
                   max_new_tokens: int = DEFAULT_TOKENS) -> SampleQuality:
    """Generate n seeded samples and score them against the corpus vocabulary."""
    texts = generate_samples(model, tokenizer, n, prompt, max_new_tokens)
    return score_texts(texts, vocab, prompt, max_new_tokens)
