"""The Bloom filter of the overlap study (GPT-2 paper, section 4) and its file format.

A Bloom filter (Bloom 1970) is an array of m bits and k hash functions. To
add an n-gram, set the k bits its hashes point at; an n-gram is reported
present when all k of its bits are set. Nothing added is ever missed; an
n-gram never added is reported present with probability about
(1 - e^(-kN/m))^k after N distinct n-grams were added. The paper bounds that
false-positive rate by 1e-8; for a target p we take

    k = the integer near log2(1/p) that needs the fewest bits   (27 for 1e-8)
    m = the smallest prime >= -kN / ln(1 - p^(1/k))             (38.34 bits per n-gram for 1e-8)

The k bit positions of an n-gram with 64-bit key x come from double hashing
(Kirsch and Mitzenmacher 2006): a = x mod m, b = 1 + fmix64(x ^ C) mod (m - 1),
position_i = (a + i b) mod m for i < k. With m prime, the k positions differ.

The file (`.bloom`), memory-mapped for queries, is

    bytes 0-7      magic b"GPT2BLMF"
    bytes 8-11     format version (little-endian uint32)
    bytes 12-15    length of the JSON header that follows
    ...            the header (UTF-8 JSON: n, m, k, hash, normalization, counts, checksum, inputs),
                   zero-padded to HEADER_BYTES
    HEADER_BYTES-  the bits: ceil(m / 64) little-endian uint64 words, bit i of the filter is
                   bit (i mod 64) of word i // 64

Adding sorts the positions of a few thousand keys at a time, so that the bits
are set in one sweep through memory. It is safe from several processes at once:
the words are cut into stripes and each process sets the bits of one stripe
under that stripe's lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from gpt2.errors import GPT2Error
from gpt2.overlap.ngrams import HASH, NORMALIZATION, fmix64

MAGIC = b"GPT2BLMF"
VERSION = 1
HEADER_BYTES = 65536
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_STEP_SEED = np.uint64(0x2545F4914F6CDD1D)
_CHUNK = 1 << 13  # keys handled at once: their k positions (1.7 MB at k = 27) stay in the core's cache
MAX_BITS = 1 << 58  # a + i * b stays below 2^64
REQUIRED = {"n": int, "m": int, "k": int, "hash": str, "normalization": str, "ngrams": int, "distinct": int,
            "fp_rate": float, "bits_sha256": str}


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first 12 primes as bases: exact below 3.3e24."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in bases:
        return True
    if any(n % p == 0 for p in bases):
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def design(items: int, fp_rate: float) -> tuple[int, int]:
    """(m, k): the fewest bits, and their number of hash functions, that hold `items` distinct items at a
    false-positive rate of at most `fp_rate`."""
    if items < 1 or not 0 < fp_rate < 1:
        raise ValueError(f"need items >= 1 and 0 < fp_rate < 1, got {items} and {fp_rate}")
    k0 = max(1, round(-math.log2(fp_rate)))
    best = min((math.ceil(-k * items / math.log1p(-fp_rate ** (1 / k))), k) for k in range(max(1, k0 - 1), k0 + 2))
    m = max(best[0], 64)
    while not _is_prime(m):
        m += 1
    if m >= MAX_BITS:
        raise GPT2Error(f"{items:,} items at a false-positive rate of {fp_rate} need {m:,} bits, more than this format holds")
    return m, best[1]


def false_positive_rate(m: int, k: int, items: int) -> float:
    """The expected false-positive rate of m bits and k hash functions holding `items` distinct items."""
    return (1.0 - math.exp(-k * items / m)) ** k


class BloomFilter:
    """m bits and k hash functions over 64-bit n-gram keys (gpt2.overlap.ngrams); in memory or memory-mapped."""

    def __init__(self, bits: np.ndarray, m: int, k: int, header: dict | None = None):
        if len(bits) != (m + 63) // 64:
            raise ValueError(f"{len(bits)} words cannot hold {m} bits")
        self.bits, self.m, self.k = bits, m, k
        self.header = header or {}

    @classmethod
    def empty(cls, m: int, k: int) -> BloomFilter:
        return cls(np.zeros((m + 63) // 64, dtype=np.uint64), m, k)

    @classmethod
    def for_items(cls, items: int, fp_rate: float) -> BloomFilter:
        """An empty in-memory filter sized for `items` distinct items."""
        return cls.empty(*design(max(items, 1), fp_rate))

    def _start(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first position (a = x mod m) and the step (b = 1 + fmix64(x ^ C) mod (m - 1)) of each key."""
        step = fmix64(keys ^ _STEP_SEED) % np.uint64(self.m - 1) + np.uint64(1)
        return keys % np.uint64(self.m), step

    def _advance(self, pos: np.ndarray, step: np.ndarray, out: np.ndarray) -> None:
        """out = (pos + step) mod m, for pos and step below m."""
        np.add(pos, step, out=out)
        np.minimum(out, out - np.uint64(self.m), out=out)  # below m the subtraction wraps around to a huge number

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """The k bit positions of every key, sorted (so that setting them walks through memory in order)."""
        pos, step = self._start(keys)
        every = np.empty((self.k, len(keys)), dtype=np.uint64)
        every[0] = pos
        for i in range(1, self.k):
            self._advance(every[i - 1], step, every[i])
        every = every.ravel()
        every.sort()
        return every

    def add(self, keys: np.ndarray, locks: list | None = None) -> None:
        """Set the bits of `keys` (uint64). With `locks`, a list of locks shared with other processes that add
        to the same memory-mapped bits, each lock guards one stripe of the words."""
        keys = np.asarray(keys, dtype=np.uint64)
        if locks is not None:
            stripes = np.linspace(0, len(self.bits), len(locks) + 1).astype(np.int64)  # first word of each stripe
        for lo in range(0, len(keys), _CHUNK):
            pos = self.positions(keys[lo : lo + _CHUNK])
            word = (pos >> np.uint64(6)).view(np.int64)  # ufunc.at is quickest with signed indices
            mask = np.left_shift(np.uint64(1), pos & np.uint64(63))
            if locks is None:
                np.bitwise_or.at(self.bits, word, mask)
                continue
            edges = np.searchsorted(word, stripes)
            for s, lock in enumerate(locks):
                if edges[s + 1] > edges[s]:
                    with lock:
                        np.bitwise_or.at(self.bits, word[edges[s] : edges[s + 1]], mask[edges[s] : edges[s + 1]])

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key's k bits are all set (True for every key added; rarely for others)."""
        keys = np.asarray(keys, dtype=np.uint64)
        found = np.zeros(len(keys), dtype=bool)
        one = np.uint64(1)
        for lo in range(0, len(keys), _CHUNK):
            pos, step = self._start(keys[lo : lo + _CHUNK])
            alive = np.arange(lo, lo + len(pos))
            for i in range(self.k):
                hit = ((self.bits[pos >> np.uint64(6)] >> (pos & np.uint64(63))) & one).astype(bool)
                if not hit.all():  # most keys never added stop after a bit or two
                    alive, pos, step = alive[hit], pos[hit], step[hit]
                    if not len(alive):
                        break
                if i + 1 < self.k:
                    self._advance(pos, step, pos)
            found[alive] = True
        return found

    def __contains__(self, key: int) -> bool:
        return bool(self.contains(np.array([key], dtype=np.uint64))[0])

    def fill(self) -> float:
        """The fraction of bits set (about 1/2 for a filter filled to its design)."""
        ones = sum(int(np.bitwise_count(self.bits[i : i + (1 << 24)]).sum(dtype=np.int64)) for i in range(0, len(self.bits), 1 << 24))
        return ones / self.m

    def union(self, other: BloomFilter) -> None:
        """Add every item of `other`, a filter of the same shape (the OR of the bits)."""
        if (other.m, other.k) != (self.m, self.k):
            raise ValueError("filters of different shapes")
        np.bitwise_or(self.bits, other.bits, out=self.bits)


# ----------------------------------------------------------------------------
# the file


def _bits_bytes(m: int) -> int:
    return (m + 63) // 64 * 8


def bits_sha256(bits: np.ndarray) -> str:
    h = hashlib.sha256()
    view = bits.view(np.uint8)
    for i in range(0, len(view), 1 << 26):
        h.update(view[i : i + (1 << 26)])
    return h.hexdigest()


def _encode_header(header: dict) -> bytes:
    data = json.dumps(header, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if _PREFIX.size + len(data) > HEADER_BYTES:
        raise GPT2Error(f"the filter's header ({len(data):,} bytes) does not fit in {HEADER_BYTES:,} bytes")
    return (_PREFIX.pack(MAGIC, VERSION, len(data)) + data).ljust(HEADER_BYTES, b"\0")


def create(path: Path, m: int, k: int) -> BloomFilter:
    """A new filter file of m zero bits (sparse until written), memory-mapped for writing; its header is
    written by `finish`."""
    path = Path(path)
    with open(path, "wb") as f:
        f.write(_encode_header({"m": m, "k": k, "complete": False}))
        f.truncate(HEADER_BYTES + _bits_bytes(m))
    return BloomFilter(np.memmap(path, dtype="<u8", mode="r+", offset=HEADER_BYTES, shape=((m + 63) // 64,)), m, k)


def attach(path: Path, m: int, k: int) -> BloomFilter:
    """The bits of a filter file being built, memory-mapped for writing (for worker processes)."""
    return BloomFilter(np.memmap(path, dtype="<u8", mode="r+", offset=HEADER_BYTES, shape=((m + 63) // 64,)), m, k)


def finish(bloom: BloomFilter, path: Path, header: dict) -> dict:
    """Write the header (with the bits' checksum) of a filter made by `create`, and flush the file to disk."""
    bloom.bits.flush()
    header = {**header, "m": bloom.m, "k": bloom.k, "hash": HASH, "normalization": NORMALIZATION,
              "bits_sha256": bits_sha256(bloom.bits)}
    with open(path, "r+b") as f:
        f.write(_encode_header(header))
        f.flush()
        os.fsync(f.fileno())
    return header


def read_header(path: Path) -> dict:
    """The header of a filter file, after checking its magic, version, fields and size."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
        size = path.stat().st_size
    except FileNotFoundError:
        raise GPT2Error(f"filter {path} does not exist; build one with `gpt2 overlap build`") from None
    except IsADirectoryError:
        raise GPT2Error(f"filter {path} is a directory; give the file written by `gpt2 overlap build`") from None
    if len(raw) < _PREFIX.size or raw[:8] != MAGIC:
        raise GPT2Error(f"{path} is not a Bloom filter written by `gpt2 overlap build` (no {MAGIC.decode()} header)")
    _, version, length = _PREFIX.unpack_from(raw)
    if version != VERSION:
        raise GPT2Error(f"{path} has filter format version {version}; this release reads version {VERSION}: build it again")
    if len(raw) < HEADER_BYTES or _PREFIX.size + length > HEADER_BYTES:
        raise GPT2Error(f"{path} is truncated inside its header: build it again")
    try:
        header = json.loads(raw[_PREFIX.size : _PREFIX.size + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GPT2Error(f"{path} has a corrupt header: build it again") from None
    if not isinstance(header, dict) or header.get("complete") is False:
        raise GPT2Error(f"{path} was not finished (its build stopped early): build it again")
    for key, kind in REQUIRED.items():
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise GPT2Error(f"{path} has a corrupt header (no valid '{key}'): build it again")
    if not (1 <= header["n"] and 64 <= header["m"] < MAX_BITS and 1 <= header["k"] <= 64):
        raise GPT2Error(f"{path} has a corrupt header (n={header['n']}, m={header['m']}, k={header['k']}): build it again")
    expected = HEADER_BYTES + _bits_bytes(header["m"])
    if size != expected:
        raise GPT2Error(
            f"{path} should be {expected:,} bytes for its {header['m']:,} bits but is {size:,} bytes "
            f"({'truncated' if size < expected else 'has extra data'}): build it again"
        )
    return header


def open_filter(path: Path, *, n: int | None = None, verify: bool = True) -> BloomFilter:
    """A filter file, memory-mapped read-only. Refuses one built with another hash, normalisation or (if
    given) n-gram length than this release uses, and, with `verify`, one whose bits fail their checksum."""
    header = read_header(path)
    if header["hash"] != HASH or header["normalization"] != NORMALIZATION:
        which = "normalisation" if header["normalization"] != NORMALIZATION else "hash"
        raise GPT2Error(
            f"{path} was built with the {which} '{header[which if which == 'hash' else 'normalization']}', but this release uses "
            f"'{NORMALIZATION if which != 'hash' else HASH}'; build the filter again with `gpt2 overlap build`"
        )
    if n is not None and header["n"] != n:
        raise GPT2Error(f"{path} holds {header['n']}-grams, not {n}-grams; build a filter with --n {n}, or ask for --n {header['n']}")
    bits = np.memmap(path, dtype="<u8", mode="r", offset=HEADER_BYTES, shape=((header["m"] + 63) // 64,))
    if verify and bits_sha256(bits) != header["bits_sha256"]:
        raise GPT2Error(f"{path} is corrupt: its bits do not match the checksum in its header; build it again")
    return BloomFilter(bits, header["m"], header["k"], header)
