"""One tokenizer interface over two implementations.

- GPT2Tokenizer: OpenAI's GPT-2 BPE through tiktoken, built from the vocabulary vendored in
  engine/assets (tiktoken would otherwise download it at run time, which fails offline).
- BPETokenizer: a byte-level BPE trained with the `tokenizers` library on a corpus and saved
  as tokenizer.json inside a checkpoint (the from-scratch models use small vocabularies).

Both are byte-level, so every token maps to a byte string; the streamer joins those bytes and
decodes them incrementally, which never splits a multi-byte UTF-8 character.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Iterable

from .fileio import atomic_write_json

EOT = "<|endoftext|>"
ASSETS = Path(__file__).parent / "assets"
GPT2_VOCAB_FILE = ASSETS / "gpt2.tiktoken"
# tiktoken's r50k_base pattern: the pre-tokenizer GPT-2 was trained with.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:
    """Interface: text <-> token ids, plus the bytes of each token for streaming."""

    kind: str = ""
    eot_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Encode user text. Special-token strings in it are treated as ordinary text, so a
        prompt cannot inject an end-of-text token."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write what load_tokenizer needs into a checkpoint directory."""
        raise NotImplementedError

    def to_hf(self):
        """The same tokenizer as a `tokenizers.Tokenizer` (for exporting a transformers folder)."""
        raise NotImplementedError


class GPT2Tokenizer(Tokenizer):
    kind = "gpt2"

    def __init__(self) -> None:
        self._enc = _gpt2_encoding()
        self.eot_id = self._enc.eot_token
        self.vocab_size = self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids), errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._enc.decode_single_token_bytes(token_id)

    def save(self, directory: Path) -> None:
        # The vocabulary is the vendored one; the checkpoint only records which tokenizer it uses.
        atomic_write_json(Path(directory) / "tokenizer_config.json", {"kind": self.kind})

    def to_hf(self):
        """GPT-2's tokenizer.json, rebuilt from the vendored ranks (see gpt2_vocab_and_merges)."""
        from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, \
            pre_tokenizers, processors

        vocab, merges = gpt2_vocab_and_merges()
        tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
        return tok


@functools.lru_cache(maxsize=1)
def _gpt2_ranks() -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(GPT2_VOCAB_FILE, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=1)
def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocab.json and merges.txt contents, recovered from the tiktoken ranks.

    tiktoken only stores each token's rank; in GPT-2 a token's rank is 256 + the index of the
    merge that created it. Running BPE on a token's bytes with only the merges ranked below it
    stops at exactly two parts: that pair is its merge. Tokens are spelled with the byte-to-
    unicode map that vocab.json uses (a space is "Ġ").
    """
    ranks = _gpt2_ranks()
    spell = {b: ch for ch, b in _byte_decoder().items()}
    text = lambda bs: "".join(spell[b] for b in bs)  # noqa: E731
    vocab = {text(tok): rank for tok, rank in ranks.items()}
    vocab[EOT] = len(ranks)
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(tok) == 1:
            continue
        parts = [bytes([b]) for b in tok]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:  # cannot happen for a real BPE vocabulary; guard against a bad file
            raise ValueError(f"{GPT2_VOCAB_FILE}: token of rank {rank} is not one merge of two tokens")
        merges.append((text(parts[0]), text(parts[1])))
    return vocab, merges


@functools.lru_cache(maxsize=1)
def _gpt2_encoding():
    import tiktoken

    ranks = _gpt2_ranks()
    return tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
        special_tokens={EOT: len(ranks)}, explicit_n_vocab=len(ranks) + 1,
    )


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode map, which ByteLevel BPE uses to spell bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class BPETokenizer(Tokenizer):
    """Byte-level BPE from the `tokenizers` library, stored as tokenizer.json."""

    kind = "bpe"

    def __init__(self, tok) -> None:
        self._tok = tok
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise ValueError(f"tokenizer has no {EOT} token")
        self.eot_id = eot
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        decoder = _byte_decoder()
        added = tok.get_added_tokens_decoder()
        self._bytes: list[bytes] = []
        for i in range(self.vocab_size):
            piece = tok.id_to_token(i)
            if piece is None:
                self._bytes.append(b"")
            elif i in added:
                self._bytes.append(piece.encode("utf-8"))
            else:
                try:
                    self._bytes.append(bytes(decoder[ch] for ch in piece))
                except KeyError:
                    raise ValueError(f"token {i} ({piece!r}) is not byte-level BPE; only byte-level "
                                     "BPE tokenizers (like GPT-2's) are supported") from None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257 + 1:
            raise ValueError(f"vocab_size must be at least 258 (256 bytes + {EOT}), got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        # The tokenizers library would turn a literal "<|endoftext|>" in user text into the
        # special id; spell it with ordinary tokens instead (encoded in two halves that cannot
        # match the special token).
        ids: list[int] = []
        for i, part in enumerate(text.split(EOT)):
            if i:
                ids += self._plain(EOT[:-2]) + self._plain(EOT[-2:])
            ids += self._plain(part)
        return ids

    def _plain(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids if text else []

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def to_hf(self):
        return self._tok

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self._tok.save(str(directory / "tokenizer.json"))
        atomic_write_json(directory / "tokenizer_config.json", {"kind": self.kind})


def gpt2_tokenizer() -> GPT2Tokenizer:
    return GPT2Tokenizer()
