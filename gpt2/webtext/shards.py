"""The files every WebText stage reads and writes: JSON-lines shards, compressed streams, stage folders.

- `open_lines(path)` streams the lines of a .jsonl file, plain or compressed
  (.zst with the 2**31-byte window that the newer Pushshift dumps need, .xz,
  .bz2, .gz); a truncated or corrupt stream is a one-line error naming the file.
- `write_jsonl(path, rows)` writes a shard atomically (a temporary file, fsync,
  rename), so a shard either exists whole or not at all: that is what makes
  every stage resumable after kill -9 (a re-run redoes only missing shards).
- `StageDir` is a stage's output folder: it refuses a folder that holds
  something else, and records the stage's statistics in `stats.json`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpt2.errors import GPT2Error

MARKER = "webtext-stage.json"  # names the stage that owns a folder
STATS = "stats.json"
ZSTD_WINDOW = 2**31  # the newer Pushshift dumps are compressed with --long=31


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string, the same in every process and on every machine (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _zstd_chunks(raw: io.BufferedReader) -> Iterator[bytes]:
    """The decompressed bytes of a .zst file of one or more frames; a file cut inside a frame raises EOFError
    (zstandard's stream reader would end quietly there)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW)
    dobj = dctx.decompressobj()
    pending = False  # inside a frame
    while block := raw.read(1 << 20):
        while block:
            out = dobj.decompress(block)
            pending = True
            if out:
                yield out
            if dobj.eof:
                block = dobj.unused_data
                dobj = dctx.decompressobj()
                pending = False
            else:
                block = b""
    if pending:
        raise EOFError("the file ends inside a zstd frame")


def _chunks(path: Path, raw: io.BufferedReader) -> Iterator[bytes]:
    name = path.name
    if name.endswith(".zst"):
        yield from _zstd_chunks(raw)
        return
    opener = {".xz": lzma.LZMAFile, ".bz2": bz2.BZ2File, ".gz": lambda f: gzip.GzipFile(fileobj=f)}.get(Path(name).suffix)
    stream = opener(raw) if opener else raw
    while block := stream.read(1 << 20):
        yield block


def _corrupt(path: Path, e: Exception) -> GPT2Error:
    return GPT2Error(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); download it again, or leave it out")


def open_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file, decompressed by its suffix (.zst, .xz, .bz2, .gz, else plain), as bytes."""
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise GPT2Error(f"{path} does not exist") from None
    except IsADirectoryError:
        raise GPT2Error(f"{path} is a directory; give a file") from None
    errors: tuple[type[Exception], ...] = (EOFError, lzma.LZMAError, OSError, zlib.error, ValueError)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    with raw:
        try:
            rest = b""
            for block in _chunks(path, raw):
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                yield from lines
            if rest:
                yield rest
        except errors as e:
            raise _corrupt(path, e) from None


def read_jsonl(path: Path) -> Iterator[dict]:
    """The rows of a shard this package wrote (a damaged one is an error: it is ours, so re-running repairs it)."""
    for n, line in enumerate(open_lines(path), 1):
        try:
            yield json.loads(line)
        except ValueError:
            raise GPT2Error(f"{path}, line {n}: not JSON; delete the file and run the stage again") from None


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines (zstd-compressed if the name ends in .zst), atomically; returns the row count."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as f:
        if path.name.endswith(".zst"):
            import zstandard

            out = zstandard.ZstdCompressor(level=3).stream_writer(f, closefd=False)
        else:
            out = f
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
            n += 1
        if out is not f:
            out.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def write_json(path: Path, data: dict) -> None:
    """A small JSON file, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def shard_suffix(compress: bool) -> str:
    return ".jsonl.zst" if compress else ".jsonl"


def list_shards(inputs: list[Path], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """The files among `inputs` (folders expanded, sorted, hidden and temporary files skipped) whose names end in one of `suffixes`."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(suffixes) and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise GPT2Error(f"{what} {p} does not exist")
    if not files:
        raise GPT2Error(f"no {what} found in {', '.join(map(str, inputs))} (looked for {', '.join(suffixes)} files)")
    return files


class StageDir:
    """The output folder of one stage: new or empty, or one this stage wrote before (then it is resumed)."""

    def __init__(self, path: Path, stage: str, settings: dict | None = None):
        """`settings`: what shapes the output; resuming a folder written with other settings is refused."""
        self.path = Path(path)
        self.stage = stage
        marker = self.path / MARKER
        settings = settings or {}
        if self.path.exists() and not self.path.is_dir():
            raise GPT2Error(f"--out {self.path} is a file; give a folder")
        if self.path.is_dir() and any(self.path.iterdir()):
            try:
                owner = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                owner = None
            if not isinstance(owner, dict) or owner.get("stage") != stage:
                held = f"the output of `gpt2 webtext {owner['stage']}`" if isinstance(owner, dict) and "stage" in owner else "other files"
                raise GPT2Error(f"--out {self.path} holds {held}; give a new or empty folder for `gpt2 webtext {stage}`")
            old = owner.get("settings", {})
            for key, value in settings.items():
                if old.get(key) != value:
                    raise GPT2Error(
                        f"--out {self.path} was written with {key}={old.get(key)!r}, not {value!r}; "
                        f"give a new folder, or delete this one to start again"
                    )
        self.path.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            write_json(marker, {"stage": stage, "settings": settings})

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write_stats(self, stats: dict) -> None:
        write_json(self.path / STATS, stats)

    def read_stats(self) -> dict | None:
        try:
            return json.loads((self.path / STATS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
