"""The documents of the overlap study's inputs: text files, JSON lines and token shards.

n-grams never cross a document boundary (gpt2/overlap/ngrams.py), so what a
document is matters:

    a text file (any name; .zst .gz .xz .bz2 decompressed)  one non-empty document: the whole file
    a JSON-lines file (.jsonl, also compressed)             one document per line with non-empty `text`
                                                            (what `gpt2 webtext` and `gpt2 prepare` read)
    a dataset directory of `gpt2 prepare` (manifest.json)   one document per <|endoftext|>-separated run of
                                                            tokens of its training split, decoded with the
                                                            dataset's own tokenizer
    another directory                                       every file below it (sorted, hidden ones skipped)

Files are read as `gpt2 prepare` reads them (gpt2/data/documents.py, gpt2/textfile.py:
UTF-8, byte for byte), except that a text file is always one document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt2.data.documents import file_kind, iter_file
from gpt2.errors import GPT2Error

_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Input:
    """One input: a file or a dataset directory."""

    path: Path
    kind: str
    """'text', 'jsonl' or 'shards'"""
    size: int
    """bytes to read (for a progress bar): the file's size, or two bytes per token of the shards read"""


def _kind(path: Path) -> str:
    return "jsonl" if file_kind(path) == "jsonl" else "text"  # any other file is text here


def _shard_bytes(directory: Path, splits: tuple[str, ...]) -> int:
    from gpt2.data.shards import TokenDataset

    dataset = TokenDataset(directory)
    return sum(2 * dataset.num_tokens(s) for s in splits)


def list_inputs(paths: list[Path], splits: tuple[str, ...] = ("train",)) -> list[Input]:
    """The inputs in order: files as given, dataset directories as one input, other directories expanded."""
    out: list[Input] = []
    for path in map(Path, paths):
        if path.is_dir() and (path / _MANIFEST).is_file():
            out.append(Input(path, "shards", _shard_bytes(path, splits)))
        elif path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts))
            if not found:
                raise GPT2Error(f"directory {path} holds no files")
            out += [Input(f, _kind(f), f.stat().st_size) for f in found]
        elif path.is_file():
            out.append(Input(path, _kind(path), path.stat().st_size))
        else:
            raise GPT2Error(f"input {path} does not exist")
    unique: dict[Path, Input] = {}
    for inp in out:
        unique.setdefault(inp.path.resolve(), inp)
    return list(unique.values())


def iter_documents(inp: Input, jsonl_field: str = "text", splits: tuple[str, ...] = ("train",)) -> Iterator[str]:
    """The non-empty documents of one input, in order (an empty one has no n-grams). Files are read by
    `gpt2 prepare`'s reader (gpt2/data/documents.py), a text file as one document."""
    if inp.kind == "shards":
        yield from _shard_documents(inp.path, splits)
    else:
        for doc in iter_file(inp.path, "file", jsonl_field):
            yield doc.text


def _shard_documents(directory: Path, splits: tuple[str, ...]) -> Iterator[str]:
    """The documents of a `gpt2 prepare` dataset: each starts at an <|endoftext|> token of the stream."""
    from gpt2.data.shards import TokenDataset

    dataset = TokenDataset(directory)
    tokenizer = dataset.tokenizer()
    eot = tokenizer.eot_token
    if eot is None:
        raise GPT2Error(f"the tokenizer of {directory} has no <|endoftext|> token, so its documents cannot be told apart")
    for split in splits:
        parts: list[np.ndarray] = []  # the tokens of the document being read, which may span shards
        started = False
        for shard in dataset.stream(split).shards:
            shard = np.asarray(shard)
            previous = 0
            for cut in np.flatnonzero(shard == eot).tolist():
                parts.append(shard[previous:cut])
                if started or any(len(p) for p in parts):
                    yield tokenizer.decode(np.concatenate(parts).tolist())
                parts, started, previous = [], True, cut + 1
            parts.append(shard[previous:])
        if started or any(len(p) for p in parts):
            yield tokenizer.decode(np.concatenate(parts).tolist())
