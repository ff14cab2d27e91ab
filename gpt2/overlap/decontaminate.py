"""Decontamination: remove the text of training documents that overlaps evaluation sets, before training.

The GPT-2 paper (section 4) measures overlap; GPT-3 (Brown et al. 2020,
appendix C) removes it, by this rule, implemented here with every number a
parameter (`Rule`):

- an n-gram is 13 normalised words (the normalisation of gpt2/overlap/ngrams.py);
- each n-gram of a training document that occurs in a test set is cut out
  together with 200 characters on either side of it; what remains of the
  document is a list of pieces;
- pieces shorter than 200 characters are dropped;
- a document cut into more than 10 pieces is dropped whole;
- test n-grams found in more than 10 training documents are ignored (common
  phrases, legal boilerplate: not contamination). This needs a first pass
  over the training data (`common_ngrams`); `gpt2 prepare --decontaminate`
  skips it.

`decontaminate(documents, index)` takes any iterable of documents and yields
the kept pieces, counting what it removed, so another pipeline can call it as
a stage. Test n-grams are held exactly (sorted 64-bit keys: test sets are
small). A document is cut in its NFC form, which is the document itself
unless it holds decomposed characters.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2.errors import GPT2Error
from gpt2.overlap.documents import iter_documents, list_inputs
from gpt2.overlap.ngrams import distinct, ngram_keys, word_spans
from gpt2.overlap.testsets import TestSet, file_test_set, task_names, task_test_set

log = logging.getLogger(__name__)

BATCH_CHARS = 1 << 21


@dataclass(frozen=True)
class Rule:
    """GPT-3's decontamination rule (appendix C), every number adjustable."""

    n: int = 13
    """words per n-gram"""
    window: int = 200
    """characters removed on either side of each n-gram found"""
    min_piece: int = 200
    """pieces shorter than this are dropped"""
    max_pieces: int = 10
    """a document cut into more pieces than this is dropped whole"""


@dataclass
class Removed:
    """What `decontaminate` read, kept and removed."""

    documents: int = 0
    chars: int = 0
    contaminated: int = 0
    """documents with at least one test n-gram"""
    hits: int = 0
    """test n-grams found (occurrences)"""
    dropped_documents: int = 0
    """documents cut into more than max_pieces pieces"""
    dropped_pieces: int = 0
    """pieces shorter than min_piece"""
    kept_pieces: int = 0
    kept_chars: int = 0

    def summary(self) -> str:
        removed = self.chars - self.kept_chars
        share = 100 * removed / self.chars if self.chars else 0.0
        return (
            f"{self.documents:,} documents read, {self.contaminated:,} with test n-grams ({self.hits:,} found); "
            f"{self.dropped_documents:,} dropped whole, {self.dropped_pieces:,} short pieces dropped; "
            f"{self.kept_pieces:,} pieces kept; {removed:,} of {self.chars:,} characters removed ({share:.3f}%)"
        )

    def add(self, other: Removed) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class NgramIndex:
    """The distinct n-gram keys of the test sets, for exact lookups."""

    def __init__(self, keys: np.ndarray, n: int):
        self.keys = distinct(keys)
        self.n = n

    @classmethod
    def of(cls, texts: list[str], n: int) -> NgramIndex:
        return cls(ngram_keys(texts, n)[0], n)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys

    def without(self, keys: np.ndarray) -> NgramIndex:
        return NgramIndex(self.keys[~np.isin(self.keys, keys)], self.n)

    def __len__(self) -> int:
        return len(self.keys)


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    batch, chars = [], 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def common_ngrams(documents: Iterable[str], index: NgramIndex, max_documents: int) -> np.ndarray:
    """The test n-grams found in more than `max_documents` of the documents (GPT-3 ignores those)."""
    counts = np.zeros(len(index), dtype=np.int64)
    for batch in _batches(documents):
        keys, offsets = ngram_keys(batch, index.n)
        hit = index.contains(keys)
        if not hit.any():
            continue
        owner = np.repeat(np.arange(len(batch)), np.diff(offsets))[hit]
        where = np.searchsorted(index.keys, keys[hit])
        pairs = distinct(owner.astype(np.uint64) * np.uint64(len(index)) + where.astype(np.uint64))  # each (document, n-gram) once
        np.add.at(counts, (pairs % np.uint64(len(index))).astype(np.int64), 1)
    return index.keys[counts > max_documents]


def cut(text: str, hit_starts: np.ndarray, rule: Rule) -> tuple[list[str], int, bool]:
    """(kept pieces, short pieces dropped, whether the document is dropped whole) of one document whose
    n-grams starting at word numbers `hit_starts` are in a test set."""
    text, starts, ends = word_spans(text)
    if hit_starts[-1] + rule.n > len(starts):
        raise RuntimeError("word_spans and ngram_keys disagree on the words of a document")
    lo = np.maximum(starts[hit_starts] - rule.window, 0)
    hi = np.minimum(ends[hit_starts + rule.n - 1] + rule.window, len(text))
    pieces, at = [], 0
    for a, b in zip(lo.tolist(), hi.tolist()):  # windows in order of their start; merge the overlapping ones
        if a > at:
            pieces.append(text[at:a])
        at = max(at, b)
    if at < len(text):
        pieces.append(text[at:])
    if len(pieces) > rule.max_pieces:
        return [], 0, True
    kept = [p for p in pieces if len(p) >= rule.min_piece]
    return kept, len(pieces) - len(kept), False


def pieces(documents: Iterable[str], index: NgramIndex, rule: Rule = Rule(), removed: Removed | None = None) -> Iterator[list[str]]:
    """For each document, in order, the list of its kept pieces: [document] if it holds no test n-gram, [] if
    it is dropped whole. `removed` (if given) counts what was read and removed."""
    if index.n != rule.n:
        raise ValueError(f"the test n-grams are {index.n}-grams, the rule asks for {rule.n}-grams")
    stats = removed if removed is not None else Removed()
    for batch in _batches(documents):
        keys, offsets = ngram_keys(batch, rule.n)
        hit = index.contains(keys)
        for i, doc in enumerate(batch):
            stats.documents += 1
            stats.chars += len(doc)
            found = np.flatnonzero(hit[offsets[i] : offsets[i + 1]])
            if not len(found):
                kept = [doc]
            else:
                stats.contaminated += 1
                stats.hits += len(found)
                kept, short, dropped = cut(doc, found, rule)
                stats.dropped_pieces += short
                stats.dropped_documents += dropped
            stats.kept_pieces += len(kept)
            stats.kept_chars += sum(len(p) for p in kept)
            yield kept


def decontaminate(documents: Iterable[str], index: NgramIndex, rule: Rule = Rule(), removed: Removed | None = None) -> Iterator[str]:
    """The kept pieces of `documents`, each a document of its own (GPT-3's rule; see the module's docstring)."""
    for kept in pieces(documents, index, rule, removed):
        yield from kept


# ----------------------------------------------------------------------------
# test sets, the command, and `gpt2 prepare --decontaminate`


def test_ngrams(test_sets: list[TestSet], n: int) -> NgramIndex:
    """The n-grams of every document of the test sets."""
    index = NgramIndex.of([d for ts in test_sets for d in ts.documents], n)
    if not len(index):
        raise GPT2Error(f"the test sets ({', '.join(ts.name for ts in test_sets)}) hold no {n}-grams to remove")
    return index


@functools.lru_cache(maxsize=4)
def for_tasks(tasks: tuple[str, ...], n: int, data_dir: Path | None) -> NgramIndex:
    """The n-grams of evaluation tasks (names or groups), read as `gpt2 eval` reads them (built once per process)."""
    return test_ngrams([task_test_set(t, data_dir) for t in task_names(list(tasks))], n)


def decontaminate_command(cfg) -> dict:
    """`gpt2 overlap decontaminate`: write the kept pieces of cfg.input as JSON lines; returns the counts."""
    rule = Rule(cfg.n, cfg.window, cfg.min_piece, cfg.max_pieces)
    splits = tuple(cfg.splits)
    inputs = list_inputs(cfg.input, splits)
    sets = [task_test_set(t, cfg.data_dir) for t in task_names(cfg.tasks)] + [file_test_set(p, cfg.jsonl_field) for p in cfg.test_input]
    index = test_ngrams(sets, cfg.n)
    log.info("%s distinct %d-grams in %s", f"{len(index):,}", cfg.n, ", ".join(ts.name for ts in sets))
    total = sum(i.size for i in inputs)

    def documents(desc: str) -> Iterator[tuple[int, Iterator[str]]]:
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, disable=None) as bar:
            for k, inp in enumerate(inputs):
                yield k, iter_documents(inp, cfg.jsonl_field, splits)
                bar.update(inp.size)

    common = 0
    if cfg.max_doc_frequency:
        everything = (text for _, docs in documents("counting test n-grams") for text in docs)
        frequent = common_ngrams(everything, index, cfg.max_doc_frequency)
        common = len(frequent)
        index = index.without(frequent)
        log.info("ignoring %s test %d-grams found in more than %d training documents", f"{common:,}", cfg.n, cfg.max_doc_frequency)
    out = Path(cfg.out)
    part = out.with_name(out.name + ".part")
    removed = Removed()
    with open(part, "w", encoding="utf-8") as f:
        for k, docs in documents("decontaminating"):
            for d, kept in enumerate(pieces(docs, index, rule, removed)):
                f.writelines(
                    json.dumps({"text": text, "source": str(inputs[k].path), "document": d, "piece": j}, ensure_ascii=False) + "\n"
                    for j, text in enumerate(kept)
                )
    os.replace(part, out)
    stats = {"rule": asdict(rule), "test_sets": [ts.name for ts in sets], "test_ngrams": len(index), "ignored_common_ngrams": common,
             "max_doc_frequency": cfg.max_doc_frequency, **asdict(removed)}
    stats_path = out.with_name(out.name + ".stats.json")
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (counts in %s): %s", out, stats_path, removed.summary())
    return stats


class Decontaminated:
    """A document source (gpt2/data/documents.py) with the evaluation sets' text cut out: what `gpt2 prepare
    --decontaminate TASKS` encodes. Each kept piece is a document of its own, with its document's id (so the
    pieces of one web page stay in one split); `removed` counts the last pass over the source."""

    def __init__(self, source, cfg):
        self.source = source
        self.tasks, self.n = list(cfg.decontaminate), cfg.decontaminate_n
        self.index, self.rule = for_tasks(tuple(self.tasks), self.n, cfg.decontaminate_data_dir), Rule(n=self.n)
        self.removed = Removed()

    def __iter__(self):
        from gpt2.data.documents import Document

        self.removed = Removed()
        for doc, kept in _with_pieces(self.source, lambda doc: doc.text, self.index, self.rule, self.removed):
            for piece in kept:
                yield Document(piece, doc.id)

    def inputs(self) -> list[dict]:
        return self.source.inputs()

    def settings(self) -> dict:
        # recorded only when decontaminating, so that the fingerprints of other datasets stay as they were
        return {**self.source.settings(), "decontaminate": {"tasks": self.tasks, "n": self.n}}


def decontaminate_shard(item: tuple[Path, Path], tasks: tuple[str, ...], n: int, data_dir: Path | None) -> dict:
    """A WebText stage on one shard of documents (`gpt2 webtext build` with decontaminate.tasks): each document's
    kept pieces, written as documents with its other fields (its URL keeps them in one split); the counts."""
    from gpt2.webtext.shards import read_jsonl, write_json, write_jsonl

    shard, target = item
    index, rule, removed = for_tasks(tuple(tasks), n, data_dir), Rule(n=n), Removed()

    def rows():
        for row, kept in _with_pieces(read_jsonl(shard), lambda row: row["text"], index, rule, removed):
            for piece in kept:
                yield {**row, "text": piece}

    write_jsonl(target, rows())
    counts = asdict(removed)
    write_json(target.with_name(target.name + ".stats.json"), counts)  # beside its shard: a resumed stage adds them all up
    return counts


def _with_pieces(items, text, index: NgramIndex, rule: Rule, removed: Removed):
    """(item, its kept pieces) for each item of a stream, the texts cut in batches (one item at a time would
    give up `pieces`' batched n-gram hashing)."""
    from collections import deque

    waiting: deque = deque()

    def texts():
        for item in items:
            waiting.append(item)
            yield text(item)

    for kept in pieces(texts(), index, rule, removed):
        yield waiting.popleft(), kept
