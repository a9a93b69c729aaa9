"""Training data: sources -> token arrays on disk -> batches.

Sources (`--data`):
- a text file, or a folder of them (each file is one document; documents are joined with the
  end-of-text token);
- instruction data: a .jsonl file (one object per line) or a .json file holding a list, in
  Alpaca (`instruction`, `input`, `output`) or Dolly (`instruction`, `context`, `response`) form;
- `hf:NAME[:CONFIG]`: a Hugging Face dataset, streamed (`hf:roneneldan/TinyStories`,
  `hf:wikitext:wikitext-103-raw-v1`). NAME may also be a local folder of parquet/json files,
  which `datasets` loads the same way (that is how the tests exercise this path offline).

Each source is tokenized once into a flat array on disk (`tokens.bin`, uint16 when the
vocabulary fits, else uint32) under a cache directory keyed by the source, the tokenizer and
the options; it is then split into train/val files that are opened as numpy memmaps. The split
is by interleaved chunks (every 1/val_fraction-th chunk goes to validation) so that validation
text comes from all over the corpus, not only from its last pages.

Batches are drawn in a fixed order that depends only on the seed and the epoch, so a resumed
run (or a run on more processes) sees exactly the same sequences at the same step.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .fileio import atomic_file, atomic_write_json
from .templates import format_example
from .tokenizer import EOT, Tokenizer

CACHE_VERSION = 1
DEFAULT_CACHE = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "gpt-workbench")) / "tokens"
INSTRUCTION_SUFFIXES = (".jsonl", ".json")
# Files in a data folder that describe the data rather than being it.
SKIP_PREFIXES = ("readme", "license", "licence", "copying", "notice", "manifest")
ALPACA = ("instruction", "input", "output")
DOLLY = ("instruction", "context", "response")


# `datasets`' packaged file loaders as of 4.x (packaged_builders() adds what the installed one has).
KNOWN_BUILDERS = ("arrow", "audiofolder", "cache", "csv", "folder_based_builder", "generator",
                  "imagefolder", "json", "pandas", "parquet", "pdffolder", "spark", "sql", "text",
                  "videofolder", "webdataset", "xml")


class DataError(ValueError):
    """The data cannot be used; the message names the file (or dataset) and the problem."""


# ---------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Source:
    """Where the data comes from. kind: "text" (documents) or "instruct" (examples)."""

    spec: str
    kind: str
    files: tuple[Path, ...] = ()
    hf_name: str = ""
    hf_config: str | None = None

    @property
    def is_hf(self) -> bool:
        return bool(self.hf_name)

    def fingerprint(self) -> dict:
        """What identifies the content, for the cache key (size and mtime stand in for a hash)."""
        if self.is_hf:
            return {"hf": self.hf_name, "config": self.hf_config}
        out = []
        for f in self.files:
            st = f.stat()
            out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
        return {"files": out}


def open_source(spec: str) -> Source:
    """Parse a --data value and check that it exists and is usable (cheap checks only)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("no data given: pass a text file, a folder, an instruction .jsonl file, "
                        "or hf:NAME[:CONFIG] for a Hugging Face dataset")
    spec = spec.strip()
    if spec.startswith("hf:"):
        rest = spec[3:]
        # A local folder of data files is taken whole (its path may contain ":").
        name, _, config = ("", "", "") if Path(rest).is_dir() else rest.partition(":")
        name = name or rest
        if not name:
            raise DataError(f"{spec!r}: expected hf:NAME or hf:NAME:CONFIG, e.g. hf:roneneldan/TinyStories")
        check_not_builder(name)
        return Source(spec, _hf_kind(name, config or None), hf_name=name, hf_config=config or None)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        files = (path,)
    elif path.is_dir():
        files = tuple(p for p in sorted(path.rglob("*"))
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                      and not p.name.lower().startswith(SKIP_PREFIXES))
        # A folder with text files is a text corpus; JSON files beside them are metadata.
        # A folder of only .jsonl/.json files is instruction data.
        text = tuple(p for p in files if p.suffix.lower() not in INSTRUCTION_SUFFIXES)
        files = text or files
        if not files:
            raise DataError(f"{path}: folder holds no data files")
    else:
        raise DataError(f"{path}: not a regular file or folder")
    instruct = [f for f in files if f.suffix.lower() in INSTRUCTION_SUFFIXES]
    for f in files:
        _check_text_file(f)
    return Source(spec, "instruct" if instruct else "text", files=files)


def _check_text_file(path: Path) -> None:
    """Reject binary files early (a NUL byte in the first 8 KB), before any tokenizing."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    if b"\x00" in head:
        raise DataError(f"{path}: looks like a binary file (it contains NUL bytes); "
                        "training data must be UTF-8 text")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 text (byte {e.start}: {e.reason}); "
                        "convert it to UTF-8 first") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None


def iter_documents(source: Source) -> Iterator[str]:
    """The documents of a text source, in a fixed order."""
    if source.is_hf:
        column = None
        for row in _hf_rows(source):
            if column is None:
                column = _text_column(source, row)
            text = row.get(column)
            if isinstance(text, str) and text.strip():
                yield text
        return
    yielded = False
    for f in source.files:
        text = _read_text(f)
        if text.strip():
            yielded = True
            # A literal <|endoftext|> separates documents inside a file (TinyStories' text dumps).
            docs = text.split(EOT)
            for doc in docs:
                if doc.strip():
                    yield doc.strip() if len(docs) > 1 else doc
        elif len(source.files) == 1:
            raise DataError(f"{f}: file is empty (no text to train on)")
    if not yielded:
        raise DataError(f"{source.spec}: all files are empty (no text to train on)")


def iter_examples(source: Source) -> Iterator[tuple[str, str]]:
    """(prompt, response) pairs of an instruction source, formatted with the shared template."""
    if source.is_hf:
        for i, row in enumerate(_hf_rows(source)):
            yield _example(row, f"{source.spec} row {i}")
        return
    count = 0
    for f in source.files:
        for where, row in _json_records(f):
            count += 1
            yield _example(row, where)
    if not count:
        raise DataError(f"{source.spec}: no instruction examples found (the file is empty)")


def _json_records(path: Path) -> Iterator[tuple[str, object]]:
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of examples, got {type(data).__name__}")
        for i, row in enumerate(data):
            yield f"{path} item {i}", row
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path} line {n}: not valid JSON ({e})") from None
        yield f"{path} line {n}", row


def _example(row: object, where: str) -> tuple[str, str]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "output" in row or "input" in row:
        fields = ALPACA
    elif "response" in row or "context" in row:
        fields = DOLLY
    else:
        raise DataError(f"{where}: missing fields; expected Alpaca ({', '.join(ALPACA)}) or "
                        f"Dolly ({', '.join(DOLLY)}), got {', '.join(sorted(map(str, row))) or 'nothing'}")
    instruction, context, response = (row.get(k) for k in fields)
    for key, value in ((fields[0], instruction), (fields[2], response)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: field {key!r} is missing or empty")
    if context is not None and not isinstance(context, str):
        raise DataError(f"{where}: field {fields[1]!r} must be a string, got {type(context).__name__}")
    return format_example(instruction, context or "", response, _history(row.get("history"), where))


def _history(value: object, where: str) -> tuple[tuple[str, str], ...]:
    """Optional earlier exchanges of a multi-turn example: [{"instruction", "output"}, ...]."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
            isinstance(h, dict) and isinstance(h.get("instruction"), str)
            and isinstance(h.get("output"), str) for h in value):
        raise DataError(f"{where}: field 'history' must be a list of "
                        "{'instruction': str, 'output': str} objects")
    return tuple((h["instruction"], h["output"]) for h in value)


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets (streamed)


def packaged_builders() -> frozenset[str]:
    """Names `datasets.load_dataset` treats as its own file loaders (text, json, csv, parquet,
    arrow, imagefolder, ...), not as Hub datasets: the modules in datasets/packaged_modules/,
    found without importing `datasets` (slow to import)."""
    import importlib.util
    spec = importlib.util.find_spec("datasets")
    found = set(KNOWN_BUILDERS)  # in case a future `datasets` moves the folder
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "packaged_modules"
        if folder.is_dir():
            found.update(p.name for p in folder.iterdir()
                         if p.is_dir() and not p.name.startswith("_"))
    return frozenset(found)


def check_not_builder(name: str) -> None:
    """DataError for hf:text, hf:json, hf:csv, ...: `datasets` reads those from the files of the
    working directory (a server's own source code), so a Hub name may not be one of them."""
    base = name.strip().lower()
    if base in packaged_builders():
        raise DataError(f"hf:{name} names the `datasets` library's built-in {base!r} file loader, "
                        "which reads files from this machine, not a Hugging Face Hub dataset; "
                        "give a Hub dataset (hf:OWNER/NAME, e.g. hf:roneneldan/TinyStories), or "
                        "pass a local file or folder as the data itself")


def _hf_load(name: str, config: str | None):
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is in requirements.txt
        raise DataError("hf: data needs the `datasets` package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, config, split="train", streaming=True)
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        hint = ("the Hugging Face Hub is unreachable (offline mode is on)" if offline else
                "is the name right, and is the Hugging Face Hub reachable from here?")
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise DataError(f"cannot load Hugging Face dataset {name!r}"
                        f"{f' (config {config!r})' if config else ''}: {msg}. {hint} "
                        "Without the network, pass a local text file or folder instead.") from None
    return ds


def _hf_rows(source: Source) -> Iterator[dict]:
    return iter(_hf_load(source.hf_name, source.hf_config))


def _hf_kind(name: str, config: str | None) -> str:
    ds = _hf_load(name, config)
    columns = list(getattr(ds, "column_names", None) or [])
    if not columns:  # some streamed datasets only know their columns after the first row
        first = next(iter(ds), None)
        if first is None:
            raise DataError(f"hf:{name}: the dataset's train split is empty")
        columns = list(first)
    cols = set(columns)
    if "instruction" in cols and ({"output", "response"} & cols):
        return "instruct"
    if "text" in cols or any(c in cols for c in ("story", "content")):
        return "text"
    raise DataError(f"hf:{name}: no text column (looked for 'text', 'story', 'content') and not "
                    f"an instruction dataset; columns are: {', '.join(columns)}")


def _text_column(source: Source, row: dict) -> str:
    for c in ("text", "story", "content"):
        if c in row:
            return c
    raise DataError(f"{source.spec}: no text column; columns are: {', '.join(row)}")


# ---------------------------------------------------------------------------------------------
# Tokenizer training and fingerprints


def tokenizer_corpus(source: Source, max_chars: int = 50_000_000) -> Iterator[str]:
    """Texts to train a BPE on: the documents (or examples) up to max_chars characters."""
    seen = 0
    items: Iterable[str]
    if source.kind == "instruct":
        items = (p + r for p, r in iter_examples(source))
    else:
        items = iter_documents(source)
    for text in items:
        text = text[: max_chars - seen]
        seen += len(text)
        yield text
        if seen >= max_chars:
            return


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    if tokenizer.kind == "gpt2":
        return "gpt2"
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(Path(tmp))
        h = hashlib.sha256()
        for f in sorted(Path(tmp).iterdir()):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Tokenize once into a cache


def _dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def _cache_dir(cache_root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_root) / digest


def _split_chunks(n: int, val_fraction: float) -> tuple[int, list[bool]]:
    """Chunk size and which chunks are validation, spread evenly through the corpus."""
    chunk = int(min(16384, max(64, n // 100)))
    count = max(1, math.ceil(n / chunk))
    is_val = [math.floor((i + 1) * val_fraction) > math.floor(i * val_fraction) for i in range(count)]
    if val_fraction > 0 and not any(is_val) and count >= 2:
        is_val[-1] = True  # a tiny corpus still gets a validation chunk
    return chunk, is_val


@dataclass
class TokenData:
    """A tokenized text corpus: train and val token arrays (memmaps) and metadata."""

    train: np.ndarray
    val: np.ndarray
    meta: dict
    path: Path

    def num_tokens(self, split: str) -> int:
        """Tokens in the "train" or "val" split."""
        return len(self.train if split == "train" else self.val)


@dataclass
class ExampleData:
    """Tokenized instruction examples: tokens, and (offset, length, prompt_len) per example."""

    tokens: np.ndarray
    train: np.ndarray  # (n, 3) int64 rows
    val: np.ndarray
    meta: dict
    path: Path

    def num_tokens(self, split: str) -> int:
        """Tokens in the "train" or "val" split's examples (prompts and responses)."""
        rows = self.train if split == "train" else self.val
        return int(rows[:, 1].sum()) if len(rows) else 0


def prepare(source: Source, tokenizer: Tokenizer, cache_root: Path | str = DEFAULT_CACHE,
            val_fraction: float = 0.1, max_tokens: int | None = None, block_size: int = 1024,
            progress: Callable[[int], None] | None = None) -> TokenData | ExampleData:
    """Tokenize a source into the cache (once) and open it. Safe to call from several processes:
    every file is written under a unique temporary name and renamed into place."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    key = {"version": CACHE_VERSION, "source": source.fingerprint(), "kind": source.kind,
           "tokenizer": tokenizer_fingerprint(tokenizer), "max_tokens": max_tokens,
           "block_size": block_size if source.kind == "instruct" else None}
    root = _cache_dir(Path(cache_root), key)
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        root.mkdir(parents=True, exist_ok=True)
        if source.kind == "instruct":
            meta = _tokenize_examples(source, tokenizer, root, max_tokens, block_size, progress)
        else:
            meta = _tokenize_documents(source, tokenizer, root, max_tokens, progress)
        atomic_write_json(meta_file, {**meta, "key": key})
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if source.kind == "instruct":
        return _open_examples(root, meta, val_fraction)
    return _open_tokens(root, meta, val_fraction)


def _tokenize_documents(source, tokenizer, root, max_tokens, progress) -> dict:
    dtype = _dtype(tokenizer.vocab_size)
    total = docs = 0
    with atomic_file(root / "tokens.bin") as f:  # removed if tokenizing fails
        for doc in iter_documents(source):
            for piece in _pieces(doc):
                ids = tokenizer.encode(piece)
                if max_tokens is not None:
                    ids = ids[: max_tokens - total]
                np.asarray(ids, dtype=dtype).tofile(f)
                total += len(ids)
                if progress:
                    progress(len(ids))
                if max_tokens is not None and total >= max_tokens:
                    break
            np.asarray([tokenizer.eot_id], dtype=dtype).tofile(f)  # document boundary
            total += 1
            docs += 1
            if max_tokens is not None and total >= max_tokens:
                break
        if total <= docs:
            raise DataError(f"{source.spec}: no text to train on")
    return {"kind": "text", "tokens": total, "documents": docs, "dtype": np.dtype(dtype).name}


def _pieces(text: str, size: int = 1 << 20) -> Iterator[str]:
    """Split a long document at line ends into ~1 MB pieces (bounded memory, steady progress).
    Tokenizers split words at whitespace anyway, so this does not change the tokens."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            nl = text.rfind("\n", start, end)
            end = nl + 1 if nl > start else end
        yield text[start:end]
        start = end


def _tokenize_examples(source, tokenizer, root, max_tokens, block_size, progress) -> dict:
    dtype = _dtype(tokenizer.vocab_size)
    index, total, truncated, skipped = [], 0, 0, 0
    with atomic_file(root / "tokens.bin") as f:  # removed if tokenizing fails
        for prompt, response in iter_examples(source):
            p = tokenizer.encode(prompt)
            r = tokenizer.encode(response) + [tokenizer.eot_id]
            if len(p) >= block_size:  # no room for any of the response: the example teaches nothing
                skipped += 1
                continue
            ids = (p + r)[: block_size + 1]
            truncated += len(p) + len(r) > block_size + 1
            np.asarray(ids, dtype=dtype).tofile(f)
            index.append((total, len(ids), len(p)))
            total += len(ids)
            if progress:
                progress(len(ids))
            if max_tokens is not None and total >= max_tokens:
                break
        if not index:
            raise DataError(f"{source.spec}: no usable instruction examples"
                            + (f" ({skipped} prompts longer than the {block_size}-token context)" if skipped else ""))
    _save_npy(root / "index.npy", np.asarray(index, dtype=np.int64))
    return {"kind": "instruct", "tokens": total, "examples": len(index), "truncated": truncated,
            "skipped": skipped, "dtype": np.dtype(dtype).name}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)


def _open_tokens(root: Path, meta: dict, val_fraction: float) -> TokenData:
    all_tokens = np.memmap(root / "tokens.bin", dtype=meta["dtype"], mode="r")
    chunk, is_val = _split_chunks(len(all_tokens), val_fraction)
    tag = f"{val_fraction:g}"
    files = {name: root / f"{name}-{tag}.bin" for name in ("train", "val")}
    if not all(p.is_file() for p in files.values()):
        for name, want in (("train", False), ("val", True)):
            with atomic_file(files[name]) as f:
                for i, v in enumerate(is_val):
                    if v == want:
                        np.asarray(all_tokens[i * chunk:(i + 1) * chunk]).tofile(f)
    arrays = {name: (np.memmap(p, dtype=meta["dtype"], mode="r") if p.stat().st_size
                     else np.zeros(0, dtype=meta["dtype"])) for name, p in files.items()}
    return TokenData(train=arrays["train"], val=arrays["val"], meta=meta, path=root)


def example_is_val(n: int, val_fraction: float) -> np.ndarray:
    """Which of n instruction examples (in file order, unusable ones left out) are validation:
    spread evenly, and at least one of two or more."""
    is_val = np.array([math.floor((i + 1) * val_fraction) > math.floor(i * val_fraction)
                       for i in range(n)], dtype=bool)
    if val_fraction > 0 and not is_val.any() and n >= 2:
        is_val[-1] = True
    return is_val


def _open_examples(root: Path, meta: dict, val_fraction: float) -> ExampleData:
    tokens = np.memmap(root / "tokens.bin", dtype=meta["dtype"], mode="r")
    index = np.load(root / "index.npy", allow_pickle=False)
    is_val = example_is_val(len(index), val_fraction)
    return ExampleData(tokens=tokens, train=index[~is_val], val=index[is_val], meta=meta, path=root)


# ---------------------------------------------------------------------------------------------
# Batches


class Batches:
    """Sequences in a fixed, seeded order: epoch e visits every item once, in the permutation
    drawn from (seed, e). `position` (items consumed so far) is the whole data state, so a
    resumed run continues exactly where the checkpoint left off.

    Items are non-overlapping windows of block_size + 1 tokens (text) or examples (instruct).
    take(start, count) returns the items consumed as the start..start+count-th of the run;
    under DDP each process takes its own slice of a step's items.
    """

    def __init__(self, data: TokenData | ExampleData, block_size: int, seed: int, split: str = "train") -> None:
        self.data = data
        self.block_size = block_size
        self.seed = seed
        self.instruct = isinstance(data, ExampleData)
        if self.instruct:
            self.items = data.train if split == "train" else data.val
            self.n = len(self.items)
        else:
            self.tokens = data.train if split == "train" else data.val
            self.n = max(0, (len(self.tokens) - 1) // block_size)
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.n

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).numpy()
            self._perm_epoch = epoch
        return self._perm

    def take(self, start: int, count: int, shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        ids = []
        for k in range(start, start + count):
            epoch, i = divmod(k, self.n)
            ids.append(int(self._order(epoch)[i]) if shuffle else i % self.n)
        return self.collate(ids)

    def collate(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.instruct:
            T = self.block_size
            # Copy out of the memmap per batch (as nanoGPT re-creates its memmap): the OS page
            # cache does the caching, and no view into the file outlives the batch.
            rows = np.stack([np.asarray(self.tokens[i * T:i * T + T + 1], dtype=np.int64) for i in ids])
            t = torch.from_numpy(rows)
            return t[:, :-1].contiguous(), t[:, 1:].contiguous()
        rows = [self.items[i] for i in ids]
        T = max(int(length) for _, length, _ in rows) - 1
        x = torch.zeros(len(rows), T, dtype=torch.long)  # padding token 0 is masked in y
        y = torch.full((len(rows), T), -100, dtype=torch.long)
        for b, (offset, length, prompt_len) in enumerate(rows):
            seq = torch.from_numpy(np.asarray(self.data.tokens[offset:offset + length], dtype=np.int64))
            x[b, :length - 1] = seq[:-1]
            # Position t predicts token t+1: learn only where t+1 is a response token.
            y[b, prompt_len - 1:length - 1] = seq[prompt_len:]
        return x, y
