"""Documents: what `gpt2 prepare` encodes, from wherever they come.

A document source is re-iterable (prepare reads it twice: once to draw the
held-out split, once to encode) and yields the same documents in the same
order each time. Each document is a `Document(text, id)`; the `id`, when there
is one, is what the held-out draw hashes instead of the text, so that a corpus
can keep its split by a stable key (WebText holds out documents by the hash of
their URL, GPT-2 paper section 3).

A source also says what it is made of (`inputs()`), so prepare can fingerprint
a dataset and tell a re-run from a different corpus:

    FileDocuments   text (.txt, .text, .md) and JSON-lines files, optionally compressed (.zst, .gz, .xz, .bz2),
                    or directories of them: what `gpt2 prepare --input` reads
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from tqdm import tqdm

from gpt2.errors import GPT2Error
from gpt2.compressed import SUFFIXES, Truncated, truncated_error
from gpt2.textfile import json_lines, open_text

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl",)


class Document(NamedTuple):
    text: str
    id: str | None = None  # hashed for the held-out draw instead of the text (e.g. a URL)


class Documents(Protocol):
    """A re-iterable, deterministic stream of documents and a description of what it reads."""

    def __iter__(self) -> Iterator[Document]: ...

    def inputs(self) -> list[dict]:
        """What the documents are made of, as the manifest records it: [{"path", "bytes", "sha256"}, ...]."""
        ...

    def settings(self) -> dict:
        """The settings that shape the documents (part of the dataset's fingerprint)."""
        ...


# ----------------------------------------------------------------------------
# files


def file_kind(path: Path) -> str | None:
    """'jsonl' or 'text' by the name (a compression suffix aside), None for another file."""
    name = path.name.removesuffix(path.suffix) if path.suffix in SUFFIXES else path.name
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def list_inputs(paths: list[Path]) -> list[Path]:
    """The input files in order: files as given, directories expanded (sorted, recursively, hidden files skipped)."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and file_kind(f) and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            if not found:
                raise GPT2Error(f"directory {path} holds no .txt, .text, .md or .jsonl files (optionally .zst, .gz, .xz or .bz2)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise GPT2Error(f"input {path} does not exist")
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _jsonl_documents(path: Path, lines, field: str, id_field: str | None) -> Iterator[Document]:
    for n, obj in json_lines(path, lines):
        if not isinstance(obj, dict) or field not in obj:
            raise GPT2Error(f"{path}, line {n}: no '{field}' field (name the text field with --jsonl-field)")
        text = obj[field]
        if not isinstance(text, str):
            raise GPT2Error(f"{path}, line {n}: '{field}' is {type(text).__name__}, not a string")
        doc_id = None
        if id_field is not None:
            doc_id = obj.get(id_field)
            if not isinstance(doc_id, str) or not doc_id:
                raise GPT2Error(f"{path}, line {n}: no '{id_field}' string (the --id-field); give every line one, or drop --id-field")
        if text.strip():
            yield Document(text, doc_id)


def _text_documents(lines, how: str) -> Iterator[Document]:
    if how == "line":
        for line in lines:
            if line.strip():
                yield Document(line)
        return
    # paragraphs: runs of non-blank lines
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield Document("".join(paragraph))
            paragraph = []
    if paragraph:
        yield Document("".join(paragraph))


def iter_file(path: Path, text_documents: str = "file", jsonl_field: str = "text", id_field: str | None = None) -> Iterator[Document]:
    """The non-empty documents of one input file."""
    try:
        with open_text(path) as f:
            if file_kind(path) == "jsonl":
                yield from _jsonl_documents(path, f, jsonl_field, id_field)
            elif text_documents == "file":
                text = f.read()
                if text.strip():
                    yield Document(text)
            else:
                yield from _text_documents(f, text_documents)
    except UnicodeDecodeError:
        raise GPT2Error(f"{path} is not UTF-8 text; convert it first (e.g. iconv -t UTF-8)") from None
    except Truncated as e:
        raise truncated_error(path, e) from None


def iter_documents(path: Path, text_documents: str = "file", jsonl_field: str = "text") -> Iterator[str]:
    """The non-empty documents of one input file, as text."""
    for doc in iter_file(path, text_documents, jsonl_field):
        yield doc.text


def _sha256(path: Path, bar: tqdm) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


class FileDocuments:
    """The documents of text and JSON-lines files (or directories of them), in the order of `list_inputs`.

    `text_documents` says what a document is in a text file (the whole 'file', a 'paragraph' or a 'line');
    each JSON line is one document, its text in `jsonl_field` and, if `id_field` is set, its id there.
    """

    def __init__(self, paths: list[Path], text_documents: str = "file", jsonl_field: str = "text", id_field: str | None = None):
        self.files = list_inputs(paths)
        self.text_documents = text_documents
        self.jsonl_field = jsonl_field
        self.id_field = id_field
        self._inputs: list[dict] | None = None

    @classmethod
    def from_config(cls, cfg) -> FileDocuments:
        return cls(cfg.input, cfg.text_documents, cfg.jsonl_field, getattr(cfg, "id_field", None))

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            yield from iter_file(path, self.text_documents, self.jsonl_field, self.id_field)

    def inputs(self) -> list[dict]:
        if self._inputs is None:
            total = sum(f.stat().st_size for f in self.files)
            with tqdm(total=total, unit="B", unit_scale=True, desc="checksums", file=sys.stderr, disable=None) as bar:
                self._inputs = [{"path": str(f), "bytes": f.stat().st_size, "sha256": _sha256(f, bar)} for f in self.files]
        return self._inputs

    def settings(self) -> dict:
        settings = {"text_documents": self.text_documents, "jsonl_field": self.jsonl_field}
        if self.id_field is not None:  # only then: datasets made before ids existed keep their fingerprint
            settings["id_field"] = self.id_field
        return settings
