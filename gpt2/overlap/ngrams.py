"""Normalisation and the n-gram stream of the overlap study (GPT-2 paper, section 4).

The paper normalises text "to contain only lower-cased alphanumeric words
with a single space as a delimiter" before it looks for 8-grams. Here, exactly:

1. the text is put in Unicode normal form NFC (the paper is silent; without
   it "café" written with a combining accent would lose its "é" and split);
2. a word is a maximal run of characters for which `str.isalnum()` is true
   (letters and digits of every script: "é", "ß", "北京", "²", "٣");
   everything else separates words (spaces, punctuation, "_", "'", marks
   that NFC could not compose);
3. each word is lower-cased on its own (`str.lower()`, so "İ" gives "i̇",
   and a Greek word ending in "Σ" ends in "ς");
4. an n-gram is n consecutive words of one document: n-grams never cross
   document boundaries.

    >>> words("Don't panic: CAFÉ au lait_2, 北京!")
    [b'don', b't', b'panic', b'caf\\xc3\\xa9', b'au', b'lait', b'2', b'\\xe5\\x8c\\x97\\xe4\\xba\\xac']

Words are UTF-8 bytes. An n-gram is identified by a 64-bit key, computed
with numpy over the whole normalised text at once (no Python work per word):

    word   h(w) = fmix64(len(w) * K0 + sum_j fmix64(block_j ^ (j * K1 + K2)))   (8-byte little-endian blocks, zero-padded)
    n-gram key  = fmix64(sum_j h(w_j) * P^(n - 1 - j))                          (mod 2^64)

where fmix64 is MurmurHash3's 64-bit finaliser (a bijection). Keys never
depend on the process, the platform or Python's salted `hash`.
`NORMALIZATION` and `HASH` name these rules; a Bloom filter records both,
and a filter made under other rules is refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

NORMALIZATION = "nfc-isalnum-lower-v1"
"""the rules above; change the name whenever a rule changes"""
HASH = "blocks-fmix64-poly-v1"
"""how an n-gram becomes a 64-bit key; change the name whenever the computation changes"""

_K0, _K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_P = np.uint64(0x9E3779B97F4A7C17)  # odd, 3 mod 4: swapping two words changes the sum unless their hashes differ by 2**63
_TAIL = np.array([(1 << (8 * r)) - 1 if r < 8 else (1 << 64) - 1 for r in range(9)], dtype=np.uint64)  # low r bytes
_SPACE = 32
_WORD = re.compile(r"[^\W_]+")  # `re`'s \w is isalnum() or "_": this is a maximal run of isalnum() characters

# ASCII text takes a byte-level path: A-Z -> a-z, a-z and 0-9 kept, every other byte -> space
_ASCII = bytes(c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57) else _SPACE for c in range(256))
_ALNUM: np.ndarray | None = None


def _alnum_table() -> np.ndarray:
    """str.isalnum() of every code point, computed once (0.2 s) when the first non-ASCII text arrives."""
    global _ALNUM
    if _ALNUM is None:
        _ALNUM = np.fromiter((chr(c).isalnum() for c in range(0x110000)), dtype=bool, count=0x110000)
    return _ALNUM


def normalized(text: str) -> bytes:
    """The normalised words of `text` as UTF-8, separated by (runs of) spaces; words are never empty."""
    if text.isascii():  # NFC already; one translate does the rest
        return text.encode("ascii").translate(_ASCII)
    text = unicodedata.normalize("NFC", text)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").copy()
    cps[~_alnum_table()[cps]] = _SPACE
    # lower-casing after the separators became spaces lower-cases each word on its own
    return cps.tobytes().decode("utf-32-le", "surrogatepass").lower().encode("utf-8", "surrogatepass")


def words(text: str) -> list[bytes]:
    """The normalised words of `text` (UTF-8 bytes), in order."""
    return normalized(text).split()


def word_spans(text: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(the NFC form of `text`, start and end offsets of each of its words in it). The words are those
    of `words(text)`; decontamination cuts the text at these offsets."""
    text = unicodedata.normalize("NFC", text)
    spans = np.array([m.span() for m in _WORD.finditer(text)], dtype=np.int64).reshape(-1, 2)
    return text, spans[:, 0], spans[:, 1]


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit over the output), in place."""
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    x ^= x >> np.uint64(33)
    return x


def _word_hashes(buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The hash h(w) of every word of a space-separated buffer, in order, and where each word starts in it."""
    data = np.frombuffer(b" " + buffer + b" " * 8, dtype=np.uint8)  # a space before, room for 8-byte reads after
    edges = np.diff((data != _SPACE).view(np.int8))
    starts = np.flatnonzero(edges == 1) + 1
    lengths = np.flatnonzero(edges == -1) + 1 - starts
    blocks = (lengths + 7) >> 3
    first = np.zeros(len(blocks), dtype=np.int64)  # index of each word's first block
    np.cumsum(blocks[:-1], out=first[1:])
    j = np.arange(int(blocks.sum()), dtype=np.int64) - np.repeat(first, blocks)  # block number within its word
    # every 8-byte window of the buffer read as a little-endian integer, without copying
    windows = np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    left = np.minimum(np.repeat(lengths, blocks) - 8 * j, 8)
    x = (windows[np.repeat(starts, blocks) + 8 * j] & _TAIL[left]).astype(np.uint64)
    x ^= j.astype(np.uint64) * _K1 + _K2
    fmix64(x)
    h = np.add.reduceat(x, first) if len(x) else x
    h += lengths.astype(np.uint64) * _K0
    return fmix64(h), starts - 1


def distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct keys, sorted (a sort and a comparison: numpy's own `unique` is many times slower on uint64)."""
    keys = np.sort(np.asarray(keys, dtype=np.uint64))
    if len(keys) < 2:
        return keys
    keep = np.empty(len(keys), dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def combine(hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys of the n-grams of consecutive documents, given the hashes of all their words in order and the
    number of words of each document; returns (keys, offsets): document i's keys are keys[offsets[i]:offsets[i + 1]]."""
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.maximum(counts - n + 1, 0), out=offsets[1:])
    windows = len(hashes) - n + 1
    if windows <= 0 or offsets[-1] == 0:
        return np.zeros(0, dtype=np.uint64), offsets
    poly = hashes[:windows].copy()  # sum over j of h[i + j] * P^(n - 1 - j), mod 2^64
    for j in range(1, n):
        poly *= _P
        poly += hashes[j : j + windows]
    # keep the windows that end inside the document they start in
    end_of_word = np.repeat(np.cumsum(counts), counts)[:windows]
    inside = np.arange(n, windows + n, dtype=np.int64) <= end_of_word
    return fmix64(poly[inside]), offsets


def ngram_keys(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The keys of every n-gram of every text (each text a document), in order, and the offsets of each
    text's keys: text i's n-grams are keys[offsets[i]:offsets[i + 1]]."""
    parts = [normalized(t) for t in texts]
    hashes, starts = _word_hashes(b" ".join(parts))
    bounds = np.zeros(len(parts) + 1, dtype=np.int64)  # where each text begins in the joined buffer
    np.cumsum(np.fromiter((len(p) + 1 for p in parts), dtype=np.int64, count=len(parts)), out=bounds[1:])
    return combine(hashes, np.diff(np.searchsorted(starts, bounds)), n)


def ngrams(text: str, n: int) -> list[str]:
    """The n-grams of one document as readable strings ("w1 w2 ... wn"), e.g. to show what overlapped."""
    w = [x.decode("utf-8", "surrogatepass") for x in words(text)]
    return [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]


def random_keys(count: int, n: int, seed: int = 0) -> np.ndarray:
    """Keys of `count` random n-grams: random strings of n words of 12 random letters and digits, which no
    real text holds; a filter's hits on them are false positives."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
    pool = alphabet[rng.integers(0, len(alphabet), size=(1 << 16, 12))]
    hashes = _word_hashes(b" ".join(bytes(row) for row in pool))[0][rng.integers(0, len(pool), size=count * n)]
    keys, _ = combine(hashes, np.full(count, n, dtype=np.int64), n)
    return keys
