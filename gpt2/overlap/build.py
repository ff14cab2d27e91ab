"""`gpt2 overlap build`: the Bloom filter of a training set's n-grams (GPT-2 paper, section 4).

Two passes over the inputs, each spread over every core (worker processes
normalise and hash batches of documents while the main process reads them):

1. count: every n-gram's key is computed, and the 2^20 smallest distinct keys
   are kept (a "k minimum values" sketch, Bar-Yossef et al. 2002): below 2^20
   distinct n-grams that is the exact count, above it an estimate within
   0.1% (one standard error); the filter is then sized for the estimate plus
   four standard errors, so that the false-positive bound holds;
2. fill: the bits of the keys are set in the memory-mapped file, under one
   lock per stripe of the bit array. The first pass keeps each batch's
   distinct keys while they take less than 1 GiB (134M keys), and then the
   second reads no text; for larger inputs it reads and hashes them again.

The filter is written to FILTER.part and renamed when complete, so FILTER is
never a half-written file. At the end 1M random strings (n random 12-letter
words each) are looked up: the share found is the measured false-positive
rate, reported beside the design's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

import gpt2
from gpt2.errors import GPT2Error
from gpt2.overlap import bloom as B
from gpt2.overlap.documents import Input, iter_documents, list_inputs
from gpt2.overlap.ngrams import distinct, ngram_keys, random_keys

log = logging.getLogger(__name__)

SKETCH = 1 << 20
BATCH_CHARS = 1 << 21  # text per task: large enough that a task's overhead is small, small enough to overlap work
KEEP_KEYS_BYTES = 1 << 30  # the first pass keeps each batch's distinct keys up to this much memory: then the second reads no text


# ----------------------------------------------------------------------------
# batches of documents, and the work done on them in worker processes


def batches(inputs: list[Input], jsonl_field: str, splits: tuple[str, ...]) -> Iterator[tuple[list[str], int]]:
    """(documents, bytes of input they stand for) in order, about BATCH_CHARS characters at a time. The bytes
    are estimated from the characters read, and made exact at the end of each input."""
    docs: list[str] = []
    chars = progress = 0
    for inp in inputs:
        read = 0  # bytes of this input accounted for
        for text in iter_documents(inp, jsonl_field, splits):
            docs.append(text)
            chars += len(text)
            step = min(len(text), inp.size - read)
            read, progress = read + step, progress + step
            if chars >= BATCH_CHARS:
                yield docs, progress
                docs, chars, progress = [], 0, 0
        progress += inp.size - read
    if docs or progress:
        yield docs, progress


_STATE: dict = {}


def _init_worker(locks: list | None) -> None:
    _STATE.clear()
    _STATE["locks"] = locks


def _count(texts: list[str], n: int) -> tuple[int, np.ndarray]:
    """The batch's number of n-grams and its distinct keys (sorted)."""
    keys, _ = ngram_keys(texts, n)
    return len(keys), distinct(keys)


def _bloom(path: str, m: int, k: int) -> B.BloomFilter:
    """The filter file being built, memory-mapped once per worker process."""
    if _STATE.get("file") != (path, m, k):
        _STATE["bloom"], _STATE["file"] = B.attach(Path(path), m, k), (path, m, k)
    return _STATE["bloom"]


def _insert(texts: list[str], n: int, path: str, m: int, k: int) -> int:
    """Set the bits of the batch's n-grams in the filter file at `path`; returns how many there were."""
    keys, _ = ngram_keys(texts, n)
    _bloom(path, m, k).add(distinct(keys), _STATE.get("locks"))  # a repeated n-gram's bits are set once
    return len(keys)


def _insert_keys(keys: np.ndarray, path: str, m: int, k: int) -> int:
    """Set the bits of keys kept from the first pass."""
    _bloom(path, m, k).add(keys, _STATE.get("locks"))
    return len(keys)


class Workers:
    """Worker processes (or, for one worker, the calling process) that run tasks on batches, a bounded
    number at a time, results in order."""

    def __init__(self, workers: int, stripes: int = 16):
        self.workers = workers
        self.pool = None
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")  # no inherited threads or file handles
            locks = [ctx.Lock() for _ in range(stripes)]
            self.pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(locks,))
        else:
            _init_worker(None)

    def map(self, fn: Callable, items: Iterable[tuple[object, int]], *args) -> Iterator[tuple[object, int]]:
        """(fn(payload, *args), size) for each (payload, size), in order."""
        if self.pool is None:
            for payload, size in items:
                yield fn(payload, *args), size
            return
        pending: collections.deque = collections.deque()
        for payload, size in items:
            pending.append((self.pool.submit(fn, payload, *args), size))
            if len(pending) >= 2 * self.workers:
                future, size = pending.popleft()
                yield future.result(), size
        while pending:
            future, size = pending.popleft()
            yield future.result(), size

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        _STATE.clear()


# ----------------------------------------------------------------------------
# the command


class DistinctCount:
    """The number of distinct keys seen, exact below `size`, else estimated from the `size` smallest
    ("k minimum values"): (size - 1) / (the size-th smallest / 2^64), standard error 1 / sqrt(size - 2)."""

    def __init__(self, size: int):
        self.size = size
        self.parts: list[np.ndarray] = []
        self.held = 0
        self.limit: np.uint64 | None = None  # once `size` keys are held, no larger key can be among the smallest

    def add(self, smallest: np.ndarray) -> None:
        """Add a batch's smallest distinct keys (sorted)."""
        if self.limit is not None:
            smallest = smallest[: np.searchsorted(smallest, self.limit, side="right")]
        self.parts.append(smallest)
        self.held += len(smallest)
        if self.held > 2 * self.size:
            self._compact()

    def _compact(self) -> np.ndarray:
        kept = distinct(np.concatenate(self.parts))[: self.size] if self.parts else np.zeros(0, dtype=np.uint64)
        self.parts, self.held = [kept], len(kept)
        if len(kept) == self.size:
            self.limit = kept[-1]
        return kept

    def result(self) -> tuple[int, bool]:
        """(distinct keys, whether that is exact)."""
        kept = self._compact()
        if len(kept) < self.size:
            return len(kept), True
        return round((self.size - 1) * 2.0**64 / (float(kept[-1]) + 1.0)), False


def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, disable=None)


def build(cfg) -> dict:
    """`gpt2 overlap build`: write the filter to cfg.out; returns its header."""
    part = Path(cfg.out).with_name(Path(cfg.out).name + ".part")
    try:
        return _build(cfg, part)
    finally:
        part.unlink(missing_ok=True)  # an interrupted or failed build leaves nothing behind


def _build(cfg, part: Path) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    splits = tuple(cfg.splits)
    inputs = list_inputs(cfg.input, splits)
    total = sum(i.size for i in inputs)
    workers = cfg.workers or os.cpu_count() or 1
    with Workers(workers) as pool:
        ngrams, counter, kept, kept_bytes = 0, DistinctCount(SKETCH), [], 0
        with _bar(total, "counting n-grams") as bar:
            for (count, unique), size in pool.map(_count, batches(inputs, cfg.jsonl_field, splits), cfg.n):
                ngrams += count
                counter.add(unique[:SKETCH])
                if kept is not None:
                    kept.append(unique)
                    kept_bytes += unique.nbytes
                    if kept_bytes > KEEP_KEYS_BYTES:
                        kept = None  # too many to hold: the second pass reads the inputs again
                bar.update(size)
        if ngrams == 0:
            raise GPT2Error(
                f"the inputs ({', '.join(map(str, cfg.input))}) hold no {cfg.n}-grams: no document has {cfg.n} words; "
                f"check the paths (and --jsonl-field), or choose a smaller --n"
            )
        n_distinct, exact = counter.result()
        capacity = n_distinct if exact else math.ceil(n_distinct * (1 + 4 / math.sqrt(SKETCH - 2)))
        m, k = B.design(capacity, cfg.fp_rate)
        log.info("%s %d-grams, %s distinct%s: %s bits (%.1f MB), k = %d", f"{ngrams:,}", cfg.n, f"{n_distinct:,}",
                 "" if exact else " (estimated)", f"{m:,}", m / 8e6, k)
        B.create(part, m, k)  # the workers map the file
        if kept is not None:
            with tqdm(total=sum(len(x) for x in kept), unit="n-gram", unit_scale=True, desc="filling the filter", file=sys.stderr,
                      disable=None) as bar:
                for count, _ in pool.map(_insert_keys, ((x, 0) for x in kept), str(part), m, k):
                    bar.update(count)
        else:
            added = 0
            with _bar(total, "filling the filter") as bar:
                for count, size in pool.map(_insert, batches(inputs, cfg.jsonl_field, splits), cfg.n, str(part), m, k):
                    added += count
                    bar.update(size)
            if added != ngrams:
                raise GPT2Error(f"the inputs changed while they were read ({ngrams:,} {cfg.n}-grams, then {added:,}); build again")
    bloom = B.attach(part, m, k)  # what the workers wrote
    queries = random_keys(cfg.random_queries, cfg.n, seed=0) if cfg.random_queries else np.zeros(0, dtype=np.uint64)
    hits = int(bloom.contains(queries).sum())
    header = {
        "n": cfg.n,
        "ngrams": ngrams,
        "distinct": n_distinct,
        "distinct_exact": exact,
        "capacity": capacity,
        "fp_rate": cfg.fp_rate,
        "expected_fp_rate": B.false_positive_rate(m, k, n_distinct),
        "random_queries": len(queries),
        "random_hits": hits,
        "measured_fp_rate": hits / len(queries) if len(queries) else None,
        "fill": bloom.fill(),
        "inputs": {"count": len(inputs), "bytes": total, "paths": [str(i.path) for i in inputs[:100]],
                   "splits": list(splits), "jsonl_field": cfg.jsonl_field},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpt2": gpt2.__version__,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    header = B.finish(bloom, part, header)
    del bloom
    os.replace(part, out)
    log.info(
        "wrote %s: %s %d-grams (%s distinct) in %s bits = %.2f bits per distinct n-gram, k = %d, %.1f%% of bits set; "
        "false-positive rate: %.2g expected, %d of %s random strings found (%.2g) in %.1f s",
        out, f"{ngrams:,}", cfg.n, f"{n_distinct:,}", f"{m:,}", m / n_distinct, k, 100 * header["fill"],
        header["expected_fp_rate"], hits, f"{len(queries):,}", header["measured_fp_rate"] or 0.0, header["seconds"],
    )
    return header
