"""`gpt2 webtext dedup`: exact and near-duplicate removal, keeping the copy with the most karma.

GPT-2 paper, section 2.1: WebText was de-duplicated (the method is not given).
We follow what later open corpora made standard (FineWeb, Penedo et al. 2024):

- exact duplicates: the same text once lower-cased, punctuation removed and
  whitespace collapsed (a 64-bit BLAKE2b of that);
- near duplicates: MinHash over word 5-grams of that normalised text, with
  `bands` x `rows` hash functions (FineWeb's 14 x 8 = 112), and LSH: two
  documents whose signatures agree on every row of some band are duplicates.
  For Jaccard similarity s that happens with probability 1 - (1 - s^8)^14:
  0.9996 at s = 0.9, 0.77 at s = 0.75, 0.05 at s = 0.5, 0.001 at s = 0.3.

Duplicates are joined transitively (union-find), and of each group the
document with the most karma is kept (ties: the smallest URL).

The signatures are datasketch's MinHash (`update_batch`, vectorised): a
NumPy MinHash of our own was only 1.2-1.5x faster on real pages, not enough to
carry our own copy (tests/test_webtext_dedup.py checks the estimate against
exact Jaccard similarities). The band keys and their grouping are ours, so that
the grouping can run on any engine (datasketch's MinHashLSH is an in-memory
index in one process).

Three steps over shards: signatures per shard (a map), the grouping of band
keys (the engine's shuffle; on Dask its own groupby), then each shard written
without its duplicates (a map). `stats.json` counts what each kind dropped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from functools import partial
from pathlib import Path

import numpy as np

from gpt2.errors import GPT2Error
from gpt2.webtext.engine import open_engine
from gpt2.webtext.shards import StageDir, list_shards, read_jsonl, shard_suffix, stable_hash, write_jsonl

log = logging.getLogger(__name__)

DOC_SUFFIXES = (".jsonl", ".jsonl.zst")
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> list[str]:
    """The words of a text as dedup sees them: lower case, punctuation and extra whitespace gone."""
    return _NON_WORD.sub(" ", text.lower()).split()


def exact_key(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def shingles(words: list[str], n: int) -> list[bytes]:
    """The word n-grams of a document (one shingle of all its words if it has fewer than n)."""
    k = min(n, len(words))
    return [" ".join(words[i : i + k]).encode("utf-8", "surrogatepass") for i in range(len(words) - k + 1)] or [b""]


def minhash(words: list[str], n: int, functions: int, seed: int) -> np.ndarray:
    """The MinHash signature (one uint64 per function) of a document's word n-grams, by datasketch."""
    from datasketch import MinHash

    m = MinHash(num_perm=functions, seed=seed)
    m.update_batch(shingles(words, n))
    return m.hashvalues.astype(np.uint64)


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 64-bit key per band: documents that agree on every row of a band share its key."""
    keys = []
    for b in range(bands):
        digest = hashlib.blake2b(signature[b * rows : (b + 1) * rows].tobytes(), digest_size=8, person=b.to_bytes(4, "little"))
        keys.append(int.from_bytes(digest.digest(), "little"))
    return keys


# ----------------------------------------------------------------------------
# step 1 (map): signatures of one shard


def _signature_file(out_dir: Path, shard: Path) -> Path:
    return out_dir / "signatures" / (shard.name.split(".")[0] + ".npz")


def signatures(task: tuple[int, Path], out_dir: Path, settings) -> Path:
    """One shard -> its documents' URLs, karma, exact keys and band keys, saved as .npz (no pickle)."""
    index, shard = task
    target = _signature_file(out_dir, shard)
    if target.exists():
        return target
    urls, karma, exact, bands = [], [], [], []
    for n, doc in enumerate(read_jsonl(shard), 1):
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not isinstance(doc.get("url"), str):
            raise GPT2Error(f"{shard}, line {n}: no 'url' and 'text' strings; give the output of `gpt2 webtext clean` or extract")
        words = normalise(doc["text"])
        urls.append(doc["url"])
        karma.append(doc.get("karma") if isinstance(doc.get("karma"), int) else 0)
        exact.append(exact_key(words))
        bands.append(band_keys(minhash(words, settings.ngram, settings.bands * settings.rows, settings.seed), settings.bands, settings.rows) if settings.near else [])
    tmp = target.with_name(target.name + ".tmp.npz")
    # URLs as UTF-8 bytes and offsets: a NumPy string array would pad every URL to the longest, in UTF-32
    encoded = [u.encode("utf-8", "surrogatepass") for u in urls]
    offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
    np.savez(tmp, url_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8), url_offsets=offsets,
             karma=np.array(karma, dtype=np.int64), exact=np.array(exact, dtype=np.uint64),
             bands=np.array(bands, dtype=np.uint64).reshape(len(urls), settings.bands if settings.near else 0))
    tmp.replace(target)
    return target


def _load(path: Path, bands: bool = True) -> dict:
    with np.load(path, allow_pickle=False) as z:
        sig = {k: z[k] for k in z.files if bands or k != "bands"}
    raw, offsets = sig.pop("url_bytes").tobytes(), sig.pop("url_offsets")
    sig["urls"] = [raw[a:b].decode("utf-8", "surrogatepass") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return sig


# ----------------------------------------------------------------------------
# step 2 (shuffle): documents that share a key


def _key_records(task: tuple[int, Path], partitions: int, exact: bool) -> list:
    """Shuffle map: (partition, (band, key, shard, doc)) for each band key (band -1: the exact key) of a shard."""
    shard, path = task
    sig = _load(path)
    records = []
    for doc in range(len(sig["urls"])):
        keys = ([(-1, int(sig["exact"][doc]))] if exact else []) + [(b, int(k)) for b, k in enumerate(sig["bands"][doc])]
        for band, key in keys:
            records.append((stable_hash(f"{band}:{key}") % partitions, (band, key, shard, doc)))
    return records


def _pairs(partition: int, records: list) -> list:
    """Shuffle reduce: for each key held by several documents, edges joining them: (doc, doc, is_exact)."""
    groups: dict[tuple[int, int], list] = {}
    for band, key, shard, doc in records:
        groups.setdefault((band, key), []).append((shard, doc))
    edges = []
    for (band, _), docs in groups.items():
        if len(docs) > 1:
            docs.sort()
            edges += [(docs[0], other, band == -1) for other in docs[1:]]
    return edges


# ----------------------------------------------------------------------------
# step 3: choose the copies to keep, then write each shard without the others


def choose_drops(edges: list, sigs: list[dict]) -> dict[tuple[int, int], str]:
    """Union-find over the edges; in each group keep the most karma (then the smallest URL); the others are
    dropped as 'exact' duplicates (same normalised text as the kept one) or 'near' duplicates."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in edges:
        ra, rb = find(tuple(a)), find(tuple(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[tuple[int, int], list] = {}
    for doc in list(parent):
        groups.setdefault(find(doc), []).append(doc)
    drops = {}
    for members in groups.values():
        keep = max(members, key=lambda d: (int(sigs[d[0]]["karma"][d[1]]), _neg(sigs[d[0]]["urls"][d[1]])))
        kept_exact = sigs[keep[0]]["exact"][keep[1]]
        for d in members:
            if d != keep:
                drops[d] = "exact" if sigs[d[0]]["exact"][d[1]] == kept_exact else "near"
    return drops


class _neg(str):
    """Reverses string order inside max(): the smallest URL wins a tie."""

    def __lt__(self, other):
        return str.__gt__(self, other)

    def __gt__(self, other):
        return str.__lt__(self, other)


def write_unique(task: tuple[Path, list[int]], out_dir: Path, compress: bool) -> int:
    """One shard without the documents at the given line numbers; returns how many it keeps."""
    shard, dropped = task
    target = out_dir / (shard.name.split(".")[0] + shard_suffix(compress))
    drop = set(dropped)
    return write_jsonl(target, (doc for i, doc in enumerate(read_jsonl(shard)) if i not in drop))


def dedup(cfg, engine=None) -> dict:
    """`gpt2 webtext dedup`: returns the statistics it writes to OUT/stats.json.

    `engine`: an engine to run on (build shares one among its stages); by default the config's, opened here.
    """
    t0 = time.perf_counter()
    shards = [s for s in list_shards(cfg.input, DOC_SUFFIXES, "document shard") if not s.name.startswith("links-")]
    if len({s.name.split(".")[0] for s in shards}) != len(shards):
        raise GPT2Error("two document shards have the same name; give one folder of shards")
    settings = {k: getattr(cfg, k) for k in ("exact", "near", "ngram", "bands", "rows", "seed", "compress")}
    out = StageDir(cfg.out, "dedup", settings)
    (out / "signatures").mkdir(exist_ok=True)
    with open_engine(cfg, engine) as engine:
        sig_paths = engine.map(partial(signatures, out_dir=out.path, settings=cfg), list(enumerate(shards)), desc="signatures")
        edges: list = []
        if cfg.exact or cfg.near:
            partitions = max(1, len(shards))
            for part in engine.shuffle(list(enumerate(sig_paths)), partial(_key_records, partitions=partitions, exact=cfg.exact),
                                       partitions, _pairs, desc="duplicate keys"):
                edges += part
        sigs = [_load(p, bands=False) for p in sig_paths]  # the band keys stay on disk: only the shuffle reads them
        drops = choose_drops(edges, sigs)
        per_shard = [[doc for (s, doc) in drops if s == i] for i in range(len(shards))]
        kept = engine.map(partial(write_unique, out_dir=out.path, compress=cfg.compress), list(zip(shards, per_shard)), desc="writing")
    documents = sum(len(s["urls"]) for s in sigs)
    reasons = list(drops.values())
    seconds = time.perf_counter() - t0
    stats = {"stage": "dedup", "documents": documents, "kept": sum(kept), "dropped": {"exact duplicate": reasons.count("exact"),
             "near duplicate": reasons.count("near")}, "bands": cfg.bands, "rows": cfg.rows, "ngram": cfg.ngram,
             "seconds": round(seconds, 3)}
    out.write_stats(stats)
    log.info("dedup: %s documents -> %s kept in %.1f s; dropped %s exact and %s near duplicates", f"{documents:,}",
             f"{stats['kept']:,}", seconds, f"{reasons.count('exact'):,}", f"{reasons.count('near'):,}")
    return stats
