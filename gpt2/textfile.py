"""Reading text files the one way every command reads them: UTF-8, byte for byte.

A file is bytes, and a tokenizer encodes bytes: so `encode` followed by
`decode` must give the file back exactly. Every command that reads text
(`tokenizer train / encode`, `sample --prompt-file`, `prepare`) therefore
decodes the file as UTF-8 and changes nothing else:

- a byte-order mark stays in the text, as U+FEFF (it is part of the file);
- line ends stay as they are: CRLF is not turned into LF;
- a file that is not UTF-8 is an error that names the file and the byte.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "crlf.txt"
>>> _ = p.write_bytes(b"\\xef\\xbb\\xbfone\\r\\ntwo\\n")
>>> read_text(p)
'\\ufeffone\\r\\ntwo\\n'
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from gpt2.compressed import SUFFIXES, open_binary
from gpt2.errors import GPT2Error


def _not_utf8(path: Path | str, e: UnicodeDecodeError, offset: int = 0) -> GPT2Error:
    return GPT2Error(f"{path} is not UTF-8 text ({e.reason} at byte {offset + e.start:,}); convert it to UTF-8 first")


def decode(data: bytes, source: Path | str) -> str:
    """`data` as UTF-8 text, exactly (a BOM kept as U+FEFF, line ends untouched); `source` names it in errors."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(source, e) from None


def read_text(path: Path | str, what: str = "input file") -> str:
    """The whole of a UTF-8 file as text, exactly; a missing file, a directory or other bytes are one-line errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GPT2Error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise GPT2Error(f"{what} {path} is a directory; give a file") from None
    return decode(data, path)


def read_stdin() -> str:
    """Standard input as text, by the same rule as files."""
    return decode(sys.stdin.buffer.read(), "standard input")


def open_text(path: Path | str) -> IO[str]:
    """A file opened for streaming text by the same rule (UTF-8, line ends kept, BOM kept); a .zst, .gz, .xz or
    .bz2 file decompressed (gpt2/compressed.py: a cut-off one raises `Truncated` where the read reaches the cut)."""
    path = Path(path)
    if path.suffix in SUFFIXES:
        return io.TextIOWrapper(open_binary(path), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def json_lines(path: Path | str, lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    """(line number, value) for each non-blank line of a JSON-lines file; a line that is not JSON is a one-line
    error naming the file and the line. `lines` split at line feeds only (JSON strings may hold U+2028); a
    byte-order mark before the first line is skipped."""
    for n, line in enumerate(lines, 1):
        if n == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise GPT2Error(f"{path}, line {n}: not valid JSON ({e.msg})") from None
