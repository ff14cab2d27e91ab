"""Compressed files, read the one way every command reads them: by suffix, and never cut short in silence.

`open_binary(path)` gives the decompressed bytes of a file:

    .zst   zstd, one frame or several, with a 2**31-byte window (the newer
           Pushshift dumps are compressed with --long=31; zstandard's default
           stops at 2**27)
    .gz    gzip;  .xz  xz;  .bz2  bzip2
    else   the file as it is

A file that ends inside a compressed stream raises `Truncated` when the read
reaches that point. zstandard's own stream reader ends quietly there, which
would turn a half-downloaded dump or a shard cut by a full disk into a
smaller corpus without a word; so .zst is decoded frame by frame here.
`gpt2/textfile.py` reads text through it, the WebText stages read lines.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gpt2.errors import GPT2Error

ZSTD_WINDOW = 2**31
SUFFIXES = (".zst", ".gz", ".xz", ".bz2")


class Truncated(EOFError):
    """The file ends inside a compressed stream, or its compressed data is damaged."""


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise GPT2Error("reading .zst files needs the zstandard package: pip install 'gpt2-lm[overlap]'") from None
    return zstandard


def _zstd_chunks(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a .zst stream of one or more frames."""
    zstandard = _zstd()
    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW)
    dobj = dctx.decompressobj()
    inside = False  # a frame has started and not ended
    try:
        while block := raw.read(1 << 20):
            while block:
                out = dobj.decompress(block)
                inside = True
                if out:
                    yield out
                if dobj.eof:
                    block = dobj.unused_data
                    dobj = dctx.decompressobj()
                    inside = False
                else:
                    block = b""
    except zstandard.ZstdError as e:
        raise Truncated(f"damaged zstd data ({e})") from None
    if inside:
        raise Truncated("the file ends inside a zstd frame")


def _stream_chunks(stream: BinaryIO) -> Iterator[bytes]:
    try:
        while block := stream.read(1 << 20):
            yield block
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:  # gzip: EOFError / BadGzipFile (an OSError)
        raise Truncated(f"{type(e).__name__}: {e}") from None


class _Chunks(io.RawIOBase):
    """A readable binary stream over an iterator of byte blocks."""

    def __init__(self, chunks: Iterator[bytes], raw: BinaryIO):
        self._chunks, self._raw = chunks, raw
        self._block, self._at = memoryview(b""), 0  # the current block and how much of it was read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._block):
            block = next(self._chunks, b"")
            if not block:
                return 0
            self._block, self._at = memoryview(block), 0
        n = min(len(buffer), len(self._block) - self._at)
        buffer[:n] = self._block[self._at : self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_binary(path: Path | str) -> BinaryIO:
    """The decompressed bytes of `path` (by its suffix) as a buffered binary stream; a missing file or a
    directory is a one-line error."""
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise GPT2Error(f"{path} does not exist") from None
    except IsADirectoryError:
        raise GPT2Error(f"{path} is a directory; give a file") from None
    suffix = path.suffix
    if suffix not in SUFFIXES:
        return raw
    if suffix == ".zst":
        chunks = _zstd_chunks(raw)
    else:
        opener = {".gz": lambda f: gzip.GzipFile(fileobj=f), ".xz": lzma.LZMAFile, ".bz2": bz2.BZ2File}[suffix]
        chunks = _stream_chunks(opener(raw))
    return io.BufferedReader(_Chunks(chunks, raw), buffer_size=1 << 20)


def truncated_error(path: Path | str, e: Exception, fix: str = "write or download it again, or leave it out") -> GPT2Error:
    """The one-line error for a cut-off or damaged compressed file."""
    return GPT2Error(f"{path} is truncated or corrupt ({e}); {fix}")
