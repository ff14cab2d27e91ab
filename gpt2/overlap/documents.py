"""The documents of the overlap study's inputs: text files, JSON lines and token shards.

n-grams never cross a document boundary (gpt2/overlap/ngrams.py), so what a
document is matters:

    a text file (any name; .gz and .zst are decompressed)   one document: the whole file
    a JSON-lines file (.jsonl, .jsonl.gz, .jsonl.zst)       one document per line: its `text` field
                                                            (what `gpt2 webtext` and `gpt2 prepare` read)
    a dataset directory of `gpt2 prepare` (manifest.json)   one document per <|endoftext|>-separated run of
                                                            tokens of its training split, decoded with the
                                                            dataset's own tokenizer
    another directory                                       every file below it (sorted, hidden ones skipped)

Text is read as UTF-8 exactly as the other commands read it (gpt2/textfile.py).
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt2.errors import GPT2Error
from gpt2.textfile import decode, open_text

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
    name = path.name.removesuffix(".gz").removesuffix(".zst")
    return "jsonl" if name.endswith(".jsonl") else "text"


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


def _open(path: Path) -> io.TextIOBase:
    if path.name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise GPT2Error(f"{path} is zstd-compressed: install the zstandard package (pip install 'gpt2[overlap]')") from None
        raw = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8", newline="")
    return open_text(path)


def _read_text(path: Path) -> str:
    if not path.name.endswith((".gz", ".zst")):
        return decode(path.read_bytes(), path)
    with _open(path) as f:
        return f.read()


def iter_documents(inp: Input, jsonl_field: str = "text", splits: tuple[str, ...] = ("train",)) -> Iterator[str]:
    """The documents of one input, in order (empty ones included: they have no n-grams)."""
    try:
        if inp.kind == "shards":
            yield from _shard_documents(inp.path, splits)
        elif inp.kind == "jsonl":
            with _open(inp.path) as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        yield _jsonl_text(line, inp.path, number, jsonl_field)
        else:
            yield _read_text(inp.path)
    except UnicodeDecodeError as e:
        raise GPT2Error(f"{inp.path} is not UTF-8 text ({e.reason}); convert it to UTF-8 first") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise GPT2Error(f"{inp.path} is not a complete gzip file ({e})") from None
    except Exception as e:  # zstandard's errors have no common base class but this one
        if type(e).__name__ == "ZstdError":
            raise GPT2Error(f"{inp.path} is not a complete zstd file ({e})") from None
        raise


def _jsonl_text(line: str, path: Path, number: int, field: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise GPT2Error(f"{path}, line {number}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
        raise GPT2Error(f"{path}, line {number}: no '{field}' string field (name the text field with --jsonl-field)")
    return obj[field]


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
