"""Token shards: the on-disk form of a tokenized corpus, and the reader for it.

A dataset directory, written by `gpt2 prepare` (gpt2/data/prepare.py), holds

    manifest.json          what the dataset is: inputs, tokenizer, settings, splits and shards
    tokenizer/             a copy of the tokenizer the shards were encoded with
    train_000000.bin ...   the training split
    val_000000.bin ...     the held-out split (5% of the documents by default, as the
                           GPT-2 paper held out 5% of WebText, section 3)

Each shard is a 64-byte header followed by the token ids as little-endian
uint16, as in llm.c's shards (Karpathy, llm.c `dev/data`): the header holds a
magic string, a format version, the bytes per token and the token count, so a
truncated or foreign file is caught before it is trained on. Shards are read
back with `numpy.memmap`, so opening a dataset of any size costs nothing.

Within a split the documents follow each other, each one preceded by
<|endoftext|> (GPT-2's document separator), so a window of the stream can
start in one document and end in the next, as in GPT-2's training.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from gpt2.atomic import write_atomic
from gpt2.errors import GPT2Error

MAGIC = b"GPT2TOKS"
VERSION = 1
HEADER = struct.Struct("<8sIIQ")  # magic, format version, bytes per token, number of tokens
HEADER_BYTES = 64  # the header is padded so the tokens start on a cache line
TOKEN_DTYPE = np.dtype("<u2")
MANIFEST = "manifest.json"
FORMAT = "gpt2-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "val")


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write `tokens` (uint16) to `path` atomically: a crash leaves either the old file or the new one."""
    tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    header = HEADER.pack(MAGIC, VERSION, TOKEN_DTYPE.itemsize, tokens.size).ljust(HEADER_BYTES, b"\0")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(tokens.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_tokens(path: Path) -> int:
    """The token count in a shard's header, after checking the header and the file size."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
        size = path.stat().st_size
    except FileNotFoundError:
        raise GPT2Error(f"shard {path} is missing: run `gpt2 prepare` again to rebuild the dataset") from None
    if len(raw) < HEADER.size:
        raise GPT2Error(f"{path} is too short to be a token shard (truncated?): run `gpt2 prepare` again")
    magic, version, width, count = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise GPT2Error(f"{path} is not a token shard (no {MAGIC.decode()} header)")
    if version != VERSION:
        raise GPT2Error(f"{path} has shard format version {version}; this release reads version {VERSION}")
    if width != TOKEN_DTYPE.itemsize:
        raise GPT2Error(f"{path} stores {width}-byte tokens; this release reads {TOKEN_DTYPE.itemsize}-byte tokens")
    if size != HEADER_BYTES + count * width:
        raise GPT2Error(
            f"{path} should hold {count:,} tokens ({HEADER_BYTES + count * width:,} bytes) but has {size:,} bytes "
            f"(truncated or corrupt): run `gpt2 prepare` again"
        )
    return count


def read_shard(path: Path) -> np.ndarray:
    """The tokens of a shard as a read-only memory map (uint16)."""
    count = shard_tokens(path)
    if count == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))


class TokenStream:
    """The shards of one split read as one long array of token ids."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = [s for s in shards if len(s)]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])  # start of each shard in the stream

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream (a copy; windows may cross shard boundaries)."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"tokens [{start}, {start + length}) are outside a stream of {len(self)}")
        out = np.empty(length, dtype=TOKEN_DTYPE)
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while filled < length:
            offset = start + filled - int(self.starts[i])
            take = min(length - filled, len(self.shards[i]) - offset)
            out[filled : filled + take] = self.shards[i][offset : offset + take]
            filled += take
            i += 1
        return out


class TokenDataset:
    """A dataset directory written by `gpt2 prepare`: its manifest, tokenizer and splits."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.manifest = read_manifest(self.dir)
        if self.manifest is None:
            raise GPT2Error(f"{self.dir} holds no {MANIFEST}: prepare the data first with `gpt2 prepare --out {self.dir} ...`")
        if not self.manifest.get("complete"):
            raise GPT2Error(f"the dataset in {self.dir} is only partly prepared: run the same `gpt2 prepare` command again to finish it")

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def n_vocab(self) -> int:
        return int(self.manifest["tokenizer"]["n_vocab"])

    def tokenizer(self):
        from gpt2.tokenizer import Tokenizer

        path = self.dir / self.manifest["tokenizer"].get("dir", "tokenizer")
        if not path.is_dir():
            raise GPT2Error(f"the dataset in {self.dir} lacks its tokenizer ({path}): run the `gpt2 prepare` command again to restore it")
        return Tokenizer.load(path)

    def num_tokens(self, split: str) -> int:
        return int(self.manifest["splits"][split]["tokens"])

    def stream(self, split: str) -> TokenStream:
        """The tokens of `split` ('train' or 'val'), checked against the manifest."""
        info = self.manifest["splits"][split]
        shards = []
        for shard in info["shards"]:
            tokens = read_shard(self.dir / shard["file"])
            if len(tokens) != shard["tokens"]:
                raise GPT2Error(
                    f"{self.dir / shard['file']} holds {len(tokens):,} tokens but the manifest says {shard['tokens']:,}: "
                    f"run `gpt2 prepare` again with --force"
                )
            shards.append(tokens)
        return TokenStream(shards)


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a dataset directory (None if there is none), checked for format and version."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GPT2Error(f"{path} is not valid JSON ({e}): run `gpt2 prepare` again with --force") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GPT2Error(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise GPT2Error(f"{path} has manifest version {manifest.get('version')}; this release reads version {FORMAT_VERSION}")
    for key in ("fingerprint", "identity", "tokenizer", "splits", "documents"):
        if key not in manifest:
            raise GPT2Error(f"{path} has no '{key}' entry (corrupt?): run `gpt2 prepare` again with --force")
    problem = _structure_problem(manifest)
    if problem:
        raise GPT2Error(f"{path} is damaged ({problem}): run `gpt2 prepare` again with --force")
    return manifest


def _structure_problem(manifest: dict) -> str | None:
    """What is wrong with the entries that readers of a manifest rely on, or None."""
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    tok = manifest["tokenizer"]
    if not isinstance(tok, dict) or not is_int(tok.get("n_vocab")) or tok["n_vocab"] < 1:
        return "tokenizer.n_vocab is not a positive integer"
    if not isinstance(manifest["documents"], dict):
        return "documents is not a table"
    splits = manifest["splits"]
    for name in SPLITS:
        split = splits.get(name) if isinstance(splits, dict) else None
        if not isinstance(split, dict) or not isinstance(split.get("shards"), list) or not is_int(split.get("tokens")):
            return f"no '{name}' split with its shards and token count"
        for shard in split["shards"]:
            if not isinstance(shard, dict) or not isinstance(shard.get("file"), str) or not is_int(shard.get("tokens")):
                return f"a '{name}' shard without its file name and token count"
            if "/" in shard["file"] or "\\" in shard["file"] or shard["file"] in ("", ".", ".."):
                return f"shard file {shard['file']!r} is not a plain file name"
    return None


def write_manifest(directory: Path, manifest: dict) -> None:
    write_atomic(Path(directory) / MANIFEST, json.dumps(manifest, indent=1) + "\n")
