"""Byte-level BPE, the tokenizer of the GPT-2 paper (section 2.2).

The base vocabulary is the 256 byte values, so any string can be encoded and
no token is ever unknown. Text is first split with a regular expression into
"pieces" (letters, numbers, other symbols, white space; a piece may start with
one space), so merges never cross character categories except for a leading
space. Training then repeatedly merges the most frequent adjacent pair of
tokens inside pieces:

    >>> tok = Tokenizer.train(["aaabdaaabac"], vocab_size=259, special_tokens=())
    >>> [tok.vocab[i] for i in range(256, 259)]  # 'aa' (4 times), then 'ab' (ties go to the smaller ids), then 'aa'+'ab'
    [b'aa', b'ab', b'aaab']
    >>> tok.encode("aaabdaaabac")
    [258, 100, 258, 97, 99]

Encoding applies the learned merges to each piece, earliest-learned first,
exactly as OpenAI's encoder.py does. Two implementations give the same ids:
the readable pure-Python one in this file, and a fast engine built by handing
the same merges to tiktoken (used automatically when the vocabulary allows it).
Training counts words on all cores and runs the merge loop in a small C
extension (`_bpe.c`) when it was compiled, else in the Python `_PairCounts`
below; both make the same merges.

Files: the project's own `bpe.json`, and OpenAI's `encoder.json` + `vocab.bpe`
(identical to Hugging Face's `vocab.json` + `merges.txt`).
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import heapq
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import regex

from gpt2 import download
from gpt2.atomic import write_atomic
from gpt2.compressed import Truncated, truncated_error
from gpt2.errors import GPT2Error
from gpt2.textfile import open_text, read_stdin, read_text

log = logging.getLogger(__name__)

# OpenAI's pre-tokenisation pattern (encoder.py in github.com/openai/gpt-2).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"

# OpenAI's published GPT-2 vocabulary; the hashes are the ones tiktoken pins.
GPT2_FILES = {
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
}

FORMAT_NAME = "gpt2-bpe"
FORMAT_VERSION = 1


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible map from bytes to printable characters, used in encoder.json / vocab.bpe.

    The 188 printable Latin-1 bytes stand for themselves; the other 68 (control
    characters, space, ...) become chr(256 + k) in byte order, so b' ' -> 'Ġ'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    k = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + k)
            k += 1
    return mapping


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` by `new`, left to right."""
    out = []
    i = 0
    n = len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# ----------------------------------------------------------------------------
# Training: the merge loop's pair counts (Python reference; _bpe.c is the same in C)


class _PairCounts:
    """Counts of adjacent token pairs over a bag of words, updated incrementally as pairs merge.

    `best()` returns the most frequent pair (ties: the smallest (left, right) ids)
    and `merge()` rewrites only the words that contain it. A max-heap holds
    (count, pair) entries that may be stale: counts only fall, except for pairs
    that contain the new token, which are pushed afresh after each merge.
    """

    def __init__(self, words: list[list[int]], counts: list[int]):
        self.words = words
        self.counts = counts
        self.pairs: dict[tuple[int, int], int] = defaultdict(int)
        self.where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, c) in enumerate(zip(words, counts)):
            for pair in zip(word, word[1:]):
                self.pairs[pair] += c
                self.where[pair].add(w)
        self.heap = [(-c, pair) for pair, c in self.pairs.items()]
        heapq.heapify(self.heap)

    def best(self) -> tuple[int, int, int] | None:
        while self.heap:
            neg_count, pair = self.heap[0]
            current = self.pairs.get(pair, 0)
            if current == -neg_count and current > 0:
                return pair[0], pair[1], current
            heapq.heappop(self.heap)
            if current > 0:  # stale entry: re-insert with the true count
                heapq.heappush(self.heap, (-current, pair))
        return None

    def merge(self, a: int, b: int, new: int) -> None:
        grown = set()
        for w in self.where.pop((a, b), ()):
            word, c = self.words[w], self.counts[w]
            for pair in zip(word, word[1:]):
                self.pairs[pair] -= c
            word = _merge(word, (a, b), new)
            for pair in zip(word, word[1:]):
                self.pairs[pair] += c
                if new in pair:
                    self.where[pair].add(w)
                    grown.add(pair)
            self.words[w] = word
        self.pairs.pop((a, b), None)
        for pair in grown:
            heapq.heappush(self.heap, (-self.pairs[pair], pair))


def _pair_counts(words: list[bytes], counts: list[int], core: str):
    """The merge-loop state for `words` (as byte ids): the C core when available, else Python."""
    if core in ("auto", "c"):
        try:
            from gpt2 import _bpe
        except ImportError:
            if core == "c":
                raise GPT2Error("the C core of the BPE trainer (gpt2._bpe) is not compiled; reinstall with a C compiler") from None
        else:
            symbols = bytearray().join(words)
            offsets = [0]
            for w in words:
                offsets.append(offsets[-1] + len(w))
            return _bpe.PairCounts(bytes(symbols), offsets, counts)
    return _PairCounts([list(w) for w in words], list(counts))


# ----------------------------------------------------------------------------
# Training: counting words in parallel over streamed text

_worker_regex = None
_SPACE = regex.compile(r"\s")
_CUT = regex.compile(r"\s(?=\S)")


def _safe_cut(text: str, lo: int, hi: int) -> int | None:
    """The last index in (lo, hi] where `text` can be cut without changing its pre-tokenisation.

    A safe cut is just before the last character of a run of white space that
    is followed by a non-space ("a  |  b" -> "a ", " b"; "a\\n|\\nb"). In the
    whole text the pattern matches the run's head with \\s+(?!\\S) and the last
    white-space character starts (or is) the next piece; on each side of the
    cut exactly the same pieces come out. Only spaces and newlines are looked
    for, which is plenty of cut points in practice.
    """
    i = min(hi, len(text) - 1)
    while True:
        i = max(text.rfind(" ", lo + 1, i), text.rfind("\n", lo + 1, i))
        if i < 0:
            return None
        if not _SPACE.match(text, i + 1):
            return i


def _safe_chunks(text: str, size: int) -> Iterator[str]:
    """Cut a long text into pieces of about `size` characters at safe points (see `_safe_cut`)."""
    start = 0
    while len(text) - start > size:
        cut = _safe_cut(text, start, start + size)
        if cut is None:  # none in reach: take the first one further on
            m = _CUT.search(text, start + size)
            if m is None:
                break
            cut = m.start()
        yield text[start:cut]
        start = cut
    yield text[start:]


def iter_file_text(paths: Sequence[Path], chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Stream UTF-8 files as text chunks, cut where GPT-2's pattern splits anyway (see `_safe_cut`)."""
    for path in paths:
        try:
            with open_text(path) as f:
                carry = ""
                while block := f.read(chunk_chars):
                    parts = list(_safe_chunks(carry + block, chunk_chars))
                    carry = parts.pop()
                    yield from parts
                if carry:
                    yield carry
        except UnicodeDecodeError as e:
            raise GPT2Error(f"{path} is not UTF-8 text ({e.reason} in a block of it); convert it to UTF-8 first") from None
        except IsADirectoryError:
            raise GPT2Error(f"{path} is a directory; pass the text files inside it") from None
        except Truncated as e:
            raise truncated_error(path, e) from None
        except OSError as e:
            raise GPT2Error(f"cannot read {path}: {e.strerror}") from None


def _init_worker(pattern: str) -> None:
    global _worker_regex
    _worker_regex = regex.compile(pattern)


def _count_batch(texts: list[str]) -> tuple[Counter, int]:
    counts: Counter = Counter()
    for text in texts:
        counts.update(_worker_regex.findall(text))
    return counts, sum(len(t) for t in texts)


def _batches(texts: Iterable[str], chunk_chars: int, cut: bool) -> Iterator[list[str]]:
    """Group documents into batches of about `chunk_chars` characters, cutting long ones safely if `cut`."""
    batch, size = [], 0
    for text in texts:
        text = _replace_surrogates(text)
        for part in _safe_chunks(text, chunk_chars) if cut else (text,):
            batch.append(part)
            size += len(part)
            if size >= chunk_chars:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def count_words(
    texts: Iterable[str],
    pattern: str = GPT2_PATTERN,
    workers: int = 0,
    progress: bool | None = None,
    chunk_chars: int = 1 << 18,
) -> Counter:
    """How often each pre-tokenised piece occurs in `texts` (an iterable of documents, streamed)."""
    workers = workers or os.cpu_count() or 1
    _init_worker(pattern)
    batches = _batches(texts, chunk_chars, cut=pattern == GPT2_PATTERN)
    counts: Counter = Counter()
    with _progress(unit="char", unit_scale=True, desc="counting words", progress=progress) as bar:
        if workers == 1:
            for batch in batches:
                c, n = _count_batch(batch)
                counts.update(c)
                bar.update(n)
            return counts
        # fork: the workers only run the regex and a Counter, and fork needs no importable __main__
        # (scripts on stdin, notebooks); elsewhere spawn is the only safe choice.
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(pattern,)) as pool:
            for c, n in pool.imap_unordered(_count_batch, batches):
                counts.update(c)
                bar.update(n)
    return counts


def _progress(progress: bool | None, **kwargs):
    from tqdm import tqdm

    return tqdm(disable=None if progress is None else not progress, file=sys.stderr, **kwargs)


# ----------------------------------------------------------------------------
# The tokenizer


class Tokenizer:
    """A byte-level BPE tokenizer: `train`, `encode`, `decode`, `save`, `load`.

    vocab[i] is the byte string of token i; `merges` maps a pair of ids to the
    id it merges into, in the order they were learned (that order is the
    priority when encoding); `byte_ids[b]` is the id of the single byte b
    (OpenAI's vocabulary does not keep bytes in order); `special_tokens` maps
    strings such as '<|endoftext|>' to their ids.
    """

    def __init__(
        self,
        vocab: Sequence[bytes],
        merges: Iterable[tuple[int, int, int]],
        special_tokens: dict[str, int] | None = None,
        byte_ids: Sequence[int] | None = None,
        pattern: str = GPT2_PATTERN,
    ):
        self.vocab: list[bytes] = list(vocab)
        self.byte_ids: list[int] = list(byte_ids) if byte_ids is not None else list(range(256))
        self.merges: dict[tuple[int, int], int] = {}
        for a, b, new in merges:
            self.merges[(a, b)] = new
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.pattern = pattern
        self._check()
        self._regex = regex.compile(pattern)
        self._cache: dict[str, list[int]] = {}
        self._engine = None
        self._engine_built = False
        self.fast = True  # use the tiktoken engine when the vocabulary allows it

    def _check(self) -> None:
        n = len(self.vocab)
        if sorted(self.byte_ids) != sorted(set(self.byte_ids)) or len(self.byte_ids) != 256:
            raise GPT2Error("the tokenizer needs exactly one id for each of the 256 bytes")
        for b, i in enumerate(self.byte_ids):
            if not 0 <= i < n or self.vocab[i] != bytes([b]):
                raise GPT2Error(f"token {i} should be the single byte {b}")
        for (a, b), new in self.merges.items():
            if not (0 <= a < n and 0 <= b < n and 0 <= new < n) or self.vocab[new] != self.vocab[a] + self.vocab[b]:
                raise GPT2Error(f"merge ({a}, {b}) -> {new} does not concatenate its parts' bytes")
        for s, i in self.special_tokens.items():
            if not s:
                raise GPT2Error("a special token cannot be the empty string")
            if not 0 <= i < n or self.vocab[i] != s.encode("utf-8"):
                raise GPT2Error(f"special token {s!r} has id {i}, whose bytes do not spell it")

    # -- properties ---------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return len(self.vocab)

    @property
    def eot_token(self) -> int | None:
        """Id of <|endoftext|>, the document separator (None if the tokenizer has none)."""
        return self.special_tokens.get(ENDOFTEXT)

    def __repr__(self) -> str:
        return f"Tokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, special_tokens={list(self.special_tokens)})"

    def add_special_tokens(self, names: Sequence[str]) -> list[int]:
        """Give each of `names` an id as a special token, after the existing ones; returns their ids in order.

        Tokens the tokenizer has already keep their ids, so adding the same names twice changes nothing.
        Special tokens are never produced by `encode_ordinary`: text that spells one is encoded as ordinary
        text. Fine-tuning adds GPT-1's start, delimiter and extract tokens this way (the model's embedding
        grows to match: `GPT.grow_vocab`).

        >>> tok = Tokenizer(vocab=[bytes([b]) for b in range(256)], merges=[])
        >>> tok.add_special_tokens(["<|start|>", "<|extract|>"]), tok.add_special_tokens(["<|extract|>"]), tok.n_vocab
        ([256, 257], [257], 258)
        """
        ids = []
        for name in names:
            if not name:
                raise GPT2Error("a special token cannot be the empty string")
            if name not in self.special_tokens:
                self.special_tokens[name] = len(self.vocab)
                self.vocab.append(name.encode("utf-8"))
            ids.append(self.special_tokens[name])
        self._engine, self._engine_built = None, False  # rebuilt with the new tokens when next needed
        return ids

    def fingerprint(self) -> str:
        """sha256 of all that decides the ids: the pre-tokenizer pattern, the ids of the 256 bytes, the merges
        in order and the special tokens (every token's bytes follow from these). Two tokenizers with one
        fingerprint encode and decode every text alike. `gpt2 prepare` records it in each dataset's manifest
        (the value is unchanged since the first release) and `gpt2 eval` in each result's cache key.

        >>> Tokenizer.train(["aaabdaaabac"], vocab_size=259, special_tokens=()).fingerprint()[:16]
        '7134f2f6aad6ab81'
        """
        merges = [[a, b, new] for (a, b), new in self.merges.items()]
        data = [self.pattern, self.byte_ids, merges, sorted(self.special_tokens.items())]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()

    # -- training -----------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        *,
        pattern: str = GPT2_PATTERN,
        workers: int = 0,
        progress: bool | None = None,
        core: Literal["auto", "c", "python"] = "auto",
    ) -> Tokenizer:
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `texts` (an iterable of documents).

        Each document is split on its own (pieces never span two documents); the
        input is streamed, so an iterator over a large corpus is fine (see
        `iter_file_text`). Words are counted once, on `workers` processes (0: all
        cores); the merge loop then updates pair counts incrementally. Ties go to
        the smallest pair of ids, so the result does not depend on the order of
        the documents.
        """
        if vocab_size < 256 + len(special_tokens):
            raise GPT2Error(
                f"vocab_size {vocab_size} is too small: it needs 256 byte tokens + {len(special_tokens)} special token(s)"
            )
        counts = count_words(texts, pattern, workers, progress)
        if not counts:
            raise GPT2Error("the training corpus is empty: give it some text")
        return cls.from_word_counts(counts, vocab_size, special_tokens, pattern=pattern, progress=progress, core=core)

    @classmethod
    def from_word_counts(
        cls,
        counts: dict[str, int],
        vocab_size: int,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        *,
        pattern: str = GPT2_PATTERN,
        progress: bool | None = None,
        core: Literal["auto", "c", "python"] = "auto",
    ) -> Tokenizer:
        """The merge loop of `train`, on already counted pieces."""
        target = vocab_size - len(special_tokens)
        vocab = [bytes([b]) for b in range(256)]
        id_of = {v: i for i, v in enumerate(vocab)}
        words = [_replace_surrogates(w).encode("utf-8") for w in counts]
        state = _pair_counts(words, list(counts.values()), core)
        merges = []
        with _progress(total=target - 256, desc="merging", unit="tok", progress=progress) as bar:
            while len(vocab) < target:
                best = state.best()
                if best is None:
                    log.warning("the corpus ran out of pairs after %d merges; the vocabulary is smaller than asked", len(merges))
                    break
                a, b, _ = best
                token = vocab[a] + vocab[b]
                new = id_of.get(token)
                if new is None:  # the usual case; a pair can also spell an existing token (then reuse its id)
                    new = len(vocab)
                    vocab.append(token)
                    id_of[token] = new
                    bar.update(1)
                state.merge(a, b, new)
                merges.append((a, b, new))
        specials = {}
        for s in special_tokens:
            specials[s] = len(vocab)
            vocab.append(s.encode("utf-8"))
        return cls(vocab, merges, specials, pattern=pattern)

    # -- encoding -----------------------------------------------------------

    def _bpe(self, piece: str) -> list[int]:
        """Encode one pre-tokenised piece: apply merges, earliest learned first (OpenAI's encoder.py)."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = [self.byte_ids[b] for b in piece.encode("utf-8")]
        ranks = self.ranks
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if pair not in ranks:
                break
            ids = _merge(ids, pair, self.merges[pair])
        if len(self._cache) < 1 << 18:
            self._cache[piece] = ids
        return ids

    def encode_ordinary_python(self, text: str) -> list[int]:
        """The reference implementation of `encode_ordinary`, in plain Python."""
        text = _replace_surrogates(text)
        ids: list[int] = []
        for piece in self._regex.findall(text):
            ids.extend(self._bpe(piece))
        return ids

    @property
    def engine(self):
        """The tiktoken Encoding built from these merges, or None when it would not give the same ids.

        tiktoken ranks a pair by the id of the token it spells; that equals the
        merge order when every merged token comes from exactly one merge and ids
        grow with merge order, which holds for OpenAI's files and for
        vocabularies trained here unless a merge re-spelled an existing token.
        """
        if not self._engine_built:
            self._engine_built = True
            news = list(self.merges.values())
            consistent = len(set(news)) == len(news) and all(x < y for x, y in zip(news, news[1:]))
            if consistent:
                try:
                    import tiktoken

                    specials = set(self.special_tokens.values())
                    ranks = {self.vocab[i]: i for i in range(self.n_vocab) if i not in specials}
                    self._engine = tiktoken.Encoding(
                        name=f"gpt2-bpe-{self.n_vocab}", pat_str=self.pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens
                    )
                except (ImportError, ValueError) as e:  # no tiktoken, or a pattern its regex engine rejects
                    log.debug("tiktoken engine unavailable (%s); using the Python encoder", e)
            else:
                log.debug("vocabulary has merges that re-spell tokens; using the Python encoder")
        return self._engine if self.fast else None

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, treating special-token strings as ordinary text."""
        engine = self.engine
        if engine is not None:
            return engine.encode_ordinary(text)  # replaces lone surrogates itself
        return self.encode_ordinary_python(text)

    def _special_sets(self, allowed_special, disallowed_special) -> tuple[set[str], set[str]]:
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise GPT2Error(f"{sorted(unknown)[0]!r} is not a special token of this tokenizer (it has {sorted(self.special_tokens)})")
        disallowed = set(self.special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        return allowed, disallowed

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Encode `text` to token ids, handling special tokens as tiktoken does.

        Text that spells a special token is an error unless the token is in
        `allowed_special` (then it becomes that token) or excluded from
        `disallowed_special` (then it is encoded as ordinary text). So a
        document that merely contains the characters "<|endoftext|>" is never
        silently given the real separator.
        """
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        for s in disallowed:
            if s in text:
                raise GPT2Error(
                    f"the text contains the special token {s!r}: pass allowed_special={{{s!r}}} to encode it as that "
                    f"token, or use encode_ordinary() to encode it as plain text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        engine = self.engine
        if engine is not None:
            return engine.encode(text, allowed_special=allowed, disallowed_special=())
        ids: list[int] = []
        split = regex.compile("(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")")
        for i, part in enumerate(split.split(text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary_python(part))
        return ids

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int = 0,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        """`encode` each text on `num_threads` threads (0: one per core; the engine releases the GIL).

        Long texts are cut at safe points (see `_safe_cut`) into parts of about
        1 MB that are encoded in parallel and joined, so even a single large
        document keeps every core busy; the ids are the same as `encode`'s.
        """
        engine = self.engine
        workers = num_threads or os.cpu_count() or 1
        if engine is None or workers == 1:
            return [self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special) for t in texts]
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        for t in texts:
            for s in disallowed:
                if s in t:
                    self.encode(t, allowed_special=allowed)  # raises the usual message
        # the cut points are safe for GPT-2's pattern, and special tokens never contain a space
        cut = self.pattern == GPT2_PATTERN and not any(_SPACE.search(s) for s in allowed)
        # tasks of about `size` characters: whole small texts grouped, large ones cut
        size = 1 << 18
        tasks: list[list[tuple[int, str]]] = [[]]
        filled = 0
        for k, t in enumerate(texts):
            for part in _safe_chunks(t, size) if cut and len(t) > size else (t,):
                if filled >= size:
                    tasks.append([])
                    filled = 0
                tasks[-1].append((k, part))
                filled += len(part)
        if allowed:
            encode = functools.partial(engine.encode, allowed_special=allowed, disallowed_special=())
        else:
            encode = engine.encode_ordinary

        def run(task: list[tuple[int, str]]) -> list[list[int]]:
            return [encode(part) for _, part in task]

        from concurrent.futures import ThreadPoolExecutor

        out: list[list[int]] = [[] for _ in texts]
        with ThreadPoolExecutor(workers) as pool:
            for task, results in zip(tasks, pool.map(run, tasks)):
                for (k, _), ids in zip(task, results):
                    out[k].extend(ids)
        return out

    # -- decoding -----------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= self.n_vocab):
            bad = next(i for i in ids if not 0 <= i < self.n_vocab)
            raise GPT2Error(f"token id {bad} is outside this tokenizer's vocabulary (0..{self.n_vocab - 1})")
        engine = self.engine
        if engine is not None:
            return engine.decode_bytes(ids)
        return b"".join(self.vocab[i] for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (a token sequence cut mid-character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for ids arriving one at a time that only emits complete characters."""
        return StreamDecoder(self)

    # -- files --------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write bpe.json (the project's format) and OpenAI's encoder.json + vocab.bpe into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        own = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "byte_ids": self.byte_ids,
            "merges": [[a, b, new] for (a, b), new in self.merges.items()],
            "special_tokens": self.special_tokens,
        }
        write_atomic(directory / "bpe.json", json.dumps(own, ensure_ascii=False))
        self.save_openai(directory)
        return directory

    def save_openai(self, directory: str | Path) -> None:
        """Write OpenAI's encoder.json and vocab.bpe (what Hugging Face calls vocab.json and merges.txt)."""
        directory = Path(directory)
        b2u = bytes_to_unicode()
        specials = set(self.special_tokens.values())

        def name(i: int) -> str:
            return self.vocab[i].decode("utf-8") if i in specials else "".join(b2u[b] for b in self.vocab[i])

        encoder = {name(i): i for i in range(self.n_vocab)}
        if len(encoder) != self.n_vocab:
            raise GPT2Error("two tokens have the same bytes; OpenAI's encoder.json cannot represent this vocabulary")
        merges = "".join(f"{name(a)} {name(b)}\n" for a, b in self.merges)
        write_atomic(directory / "encoder.json", json.dumps(encoder, ensure_ascii=False))
        write_atomic(directory / "vocab.bpe", "#version: 0.2\n" + merges)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a directory holding bpe.json, encoder.json + vocab.bpe, or vocab.json + merges.txt (or one bpe.json file)."""
        path = Path(path)
        if path.is_file() and path.suffix == ".json":
            return cls._load_own(path)
        if not path.is_dir():
            raise GPT2Error(f"tokenizer directory {path} does not exist")
        if (path / "bpe.json").is_file():
            return cls._load_own(path / "bpe.json")
        from gpt2.gpt1_tokenizer import Gpt1Tokenizer, is_gpt1_files

        if is_gpt1_files(path):  # GPT-1's word-level BPE (merges with `</w>`), not GPT-2's byte-level one
            return Gpt1Tokenizer.load(path)
        for enc, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
            if (path / enc).is_file() and (path / merges).is_file():
                return cls.load_openai(path / enc, path / merges)
        raise GPT2Error(f"{path} holds no tokenizer: expected bpe.json, encoder.json + vocab.bpe, or vocab.json + merges.txt")

    @classmethod
    def _load_own(cls, file: Path) -> Tokenizer:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT_NAME:
                raise GPT2Error(f"{file} is not a {FORMAT_NAME} file")
            if data.get("version") != FORMAT_VERSION:
                raise GPT2Error(f"{file} has format version {data.get('version')}; this release reads version {FORMAT_VERSION}")
            byte_ids = data["byte_ids"]
            merges = [tuple(m) for m in data["merges"]]
            specials = data["special_tokens"]
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GPT2Error(f"{file} is not valid JSON ({e})") from None
        except (KeyError, TypeError, ValueError) as e:
            raise GPT2Error(f"{file} is malformed ({type(e).__name__}: {e})") from None
        n = 256 + len(merges) + len(specials)
        vocab: list[bytes | None] = [None] * n
        try:
            for b, i in enumerate(byte_ids):
                vocab[i] = bytes([b])
            for a, b, new in merges:
                if vocab[a] is None or vocab[b] is None:
                    raise GPT2Error(f"{file}: merge ({a}, {b}) uses a token that is not defined before it")
                if vocab[new] is None:
                    vocab[new] = vocab[a] + vocab[b]
            for s, i in specials.items():
                vocab[i] = s.encode("utf-8")
        except (IndexError, TypeError, ValueError):
            raise GPT2Error(f"{file}: a token id is out of range for {n} tokens") from None
        if None in vocab:
            raise GPT2Error(f"{file}: token id {vocab.index(None)} is never defined (the counts do not add up)")
        return cls(vocab, merges, specials, byte_ids, data.get("pattern", GPT2_PATTERN))

    @classmethod
    def load_openai(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> Tokenizer:
        """Read OpenAI's files, checking that they describe one consistent vocabulary."""
        encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
        try:
            encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
            lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
        except FileNotFoundError as e:
            raise GPT2Error(f"{e.filename} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GPT2Error(f"{encoder_json} is not valid JSON ({e})") from None
        if not isinstance(encoder, dict) or not all(isinstance(k, str) and type(v) is int for k, v in encoder.items()):
            raise GPT2Error(f"{encoder_json} must map token strings to integer ids")
        n = len(encoder)
        ids = set(encoder.values())
        if len(ids) != n or min(ids) != 0 or max(ids) != n - 1:
            missing = next(i for i in range(n) if i not in ids)
            raise GPT2Error(f"{encoder_json}: ids must be 0..{n - 1} without gaps or repeats (id {missing} is missing)")
        b2u = bytes_to_unicode()
        u2b = {u: b for b, u in b2u.items()}
        vocab: list[bytes | None] = [None] * n
        byte_ids = []
        for b in range(256):
            u = b2u[b]
            if u not in encoder:
                raise GPT2Error(f"{encoder_json} lacks the token {u!r} for byte {b}")
            byte_ids.append(encoder[u])
            vocab[encoder[u]] = bytes([b])
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = []
        seen = set()
        for lineno, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise GPT2Error(f"{vocab_bpe} line {lineno}: expected two tokens separated by one space, got {line!r}")
            for token in (*parts, parts[0] + parts[1]):
                if token not in encoder:
                    raise GPT2Error(f"{vocab_bpe} line {lineno}: {token!r} is not in {encoder_json.name}; the files do not belong together")
            a, b, new = encoder[parts[0]], encoder[parts[1]], encoder[parts[0] + parts[1]]
            if (a, b) in seen:
                raise GPT2Error(f"{vocab_bpe} line {lineno}: the merge {line!r} appears twice")
            seen.add((a, b))
            try:
                vocab[new] = bytes(u2b[c] for c in parts[0] + parts[1])
            except KeyError:
                raise GPT2Error(f"{vocab_bpe} line {lineno}: {line!r} has a character outside OpenAI's byte alphabet") from None
            merges.append((a, b, new))
        specials = {}
        for s, i in encoder.items():
            if vocab[i] is None:
                if not (s.startswith("<|") and s.endswith("|>")):
                    orphans = sum(v is None for v in vocab)
                    raise GPT2Error(
                        f"{encoder_json} has {orphans} token(s) that no merge in {vocab_bpe.name} produces (e.g. {s!r}); "
                        f"the files do not belong together (is {vocab_bpe.name} truncated?)"
                    )
                specials[s] = i
                vocab[i] = s.encode("utf-8")
        return cls(vocab, merges, specials, byte_ids)

    @classmethod
    def gpt2(cls, directory: str | Path | None = None) -> Tokenizer:
        """OpenAI's GPT-2 tokenizer (50,257 tokens) from `directory`, or from the user's cache, downloading it once."""
        if directory is not None:
            return cls.load(directory)
        cache = download.cache_dir() / "gpt2_bpe"
        for name, (url, sha256) in GPT2_FILES.items():
            download.fetch(url, sha256, cache / name, what=f"GPT-2 {name}")
        return cls.load_openai(cache / "encoder.json", cache / "vocab.bpe")


class StreamDecoder:
    """Turns ids arriving one at a time into text, holding back an incomplete UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def _replace_surrogates(text: str) -> str:
    """Lone surrogates (not valid Unicode, not encodable as UTF-8) become U+FFFD, as in tiktoken."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """'gpt2' -> OpenAI's tokenizer (cached download); anything else is a tokenizer directory or bpe.json."""
    if str(spec) == "gpt2":
        return Tokenizer.gpt2()
    path = Path(spec)
    if not path.exists():
        raise GPT2Error(
            f"tokenizer {spec} does not exist: pass a directory written by `gpt2 tokenizer train`, one with "
            f"encoder.json + vocab.bpe, or 'gpt2' for OpenAI's"
        )
    return Tokenizer.load(path)


# ----------------------------------------------------------------------------
# Command-line entry points


def stats_line(tokenizer: Tokenizer, n_bytes: int, ids: Sequence[int] | Counter) -> str:
    counts = ids if isinstance(ids, Counter) else Counter(ids)
    n_tokens = sum(counts.values())
    per = n_bytes / n_tokens if n_tokens else float("nan")
    return (
        f"{n_bytes:,} bytes -> {n_tokens:,} tokens ({per:.3f} bytes/token); "
        f"{len(counts):,} of {tokenizer.n_vocab:,} token ids used ({100 * len(counts) / tokenizer.n_vocab:.1f}% of the vocabulary)"
    )


def train_command(cfg) -> Tokenizer:
    """`gpt2 tokenizer train`."""
    out = Path(cfg.out)
    model = next((out / f for f in ("model.json", "config.json", "hparams.json") if (out / f).exists()), None)
    if model is not None:  # the new files would silently take the place of that model's own tokenizer
        raise GPT2Error(f"{out} holds a model ({model.name}); a tokenizer written there would replace the model's own: choose another --out")
    existing = [out / f for f in ("bpe.json", "encoder.json", "vocab.bpe") if (out / f).exists()]
    if existing and not cfg.force:
        raise GPT2Error(f"{existing[0]} already exists; choose another --out or pass --force to overwrite it")
    for path in cfg.input:
        if not Path(path).is_file():
            raise GPT2Error(f"input file {path} does not exist" if not Path(path).exists() else f"{path} is not a file")
    t0 = time.perf_counter()
    counts = count_words(iter_file_text(cfg.input), GPT2_PATTERN, cfg.workers)
    if not counts:
        raise GPT2Error(f"the training corpus ({', '.join(map(str, cfg.input))}) is empty: give it some text")
    tok = Tokenizer.from_word_counts(counts, cfg.vocab_size, cfg.special_tokens)
    seconds = time.perf_counter() - t0
    tok.save(out)
    n_bytes = sum(len(w.encode("utf-8")) * c for w, c in counts.items())
    used: Counter = Counter()
    for word, c in counts.items():
        for i in tok._bpe(word):
            used[i] += c
    log.info("learned %d merges from %s in %.1f s; wrote %s", len(tok.merges), _size(n_bytes), seconds, out)
    log.info("on the training text: %s", stats_line(tok, n_bytes, used))
    return tok


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"


def encode_command(cfg) -> list[int]:
    """`gpt2 tokenizer encode`."""
    from gpt2.config import check_output_file

    check_output_file(cfg.output, cfg.force)
    tok = load_tokenizer(cfg.tokenizer)
    if cfg.text is not None:
        text = cfg.text
    elif cfg.input is not None:
        text = read_text(cfg.input)
    else:
        text = read_stdin()
    if cfg.special == "allow":
        ids = tok.encode(text, allowed_special="all")
    elif cfg.special == "ordinary":
        ids = tok.encode_ordinary(text)
    else:
        for s in tok.special_tokens:
            if s in text:
                raise GPT2Error(
                    f"the text contains the special token {s!r}: choose --special allow to encode it as that token, "
                    f"or --special ordinary to encode it as plain text"
                )
        ids = tok.encode_ordinary(text)
    if cfg.output is not None and Path(cfg.output).suffix == ".npy":
        import numpy as np

        np.save(cfg.output, np.asarray(ids, dtype=np.uint16 if tok.n_vocab <= 1 << 16 else np.uint32))
    elif cfg.output is not None:
        write_atomic(Path(cfg.output), " ".join(map(str, ids)) + "\n")
    else:
        sys.stdout.write(" ".join(map(str, ids)) + "\n")
    log.info("%s", stats_line(tok, len(text.encode("utf-8", "surrogatepass")), ids))
    return ids


def decode_command(cfg) -> str:
    """`gpt2 tokenizer decode`."""
    from gpt2.config import check_output_file

    check_output_file(cfg.output, cfg.force)
    tok = load_tokenizer(cfg.tokenizer)
    if cfg.ids is not None:
        ids = cfg.ids
    elif cfg.input is not None and Path(cfg.input).suffix == ".npy":
        import numpy as np

        try:
            array = np.load(cfg.input, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise GPT2Error(f"cannot read {cfg.input} as a .npy array of ids ({e})") from None
        if not np.issubdtype(array.dtype, np.integer):
            raise GPT2Error(f"{cfg.input} holds {array.dtype} values; expected integer ids (as `gpt2 tokenizer encode` writes)")
        ids = array.reshape(-1).tolist()
    else:
        try:
            raw = read_text(cfg.input) if cfg.input is not None else read_stdin()
        except GPT2Error as e:
            if "not UTF-8" not in str(e):
                raise
            raise GPT2Error(f"{cfg.input or 'standard input'} is not text: expected whitespace-separated integer ids or a .npy array") from None
        try:
            ids = [int(x) for x in raw.split()]
        except ValueError as e:
            raise GPT2Error(f"expected whitespace-separated integer ids ({e})") from None
    data = tok.decode_bytes(ids)  # the bytes the ids stand for, exactly: a file encoded and decoded comes back unchanged
    if cfg.output is not None:
        write_atomic(Path(cfg.output), data)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return data.decode("utf-8", "replace")
