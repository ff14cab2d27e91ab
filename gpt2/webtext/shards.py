"""The files every WebText stage reads and writes: JSON-lines shards, compressed streams, stage folders.

- `open_lines(path)` streams the lines of a .jsonl file, plain or compressed
  (gpt2/compressed.py: .zst with the 2**31-byte window that the newer Pushshift
  dumps need, .xz, .bz2, .gz); a truncated or corrupt stream is a one-line
  error naming the file.
- `write_jsonl(path, rows)` writes a shard atomically (a temporary file, fsync,
  rename), so a shard either exists whole or not at all: that is what makes
  every stage resumable after kill -9 (a re-run redoes only missing shards).
- `StageDir` is a stage's output folder: it refuses a folder that holds
  something else, and records the stage's statistics in `stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpt2.compressed import Truncated, open_binary, truncated_error
from gpt2.errors import GPT2Error

MARKER = "webtext-stage.json"  # names the stage that owns a folder
STATS = "stats.json"


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string, the same in every process and on every machine (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def open_lines(path: Path) -> Iterator[bytes]:
    """The lines of a file, decompressed by its suffix (gpt2/compressed.py), as bytes."""
    path = Path(path)
    with open_binary(path) as f:
        try:
            for line in f:
                yield line.removesuffix(b"\n")
        except Truncated as e:
            raise truncated_error(path, e, "download it again, or leave it out") from None


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
