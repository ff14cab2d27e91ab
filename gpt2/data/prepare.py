"""`gpt2 prepare`: documents -> token ids -> uint16 shards, with a held-out split.

Documents come from a document source (documents.py): by default the input
files, where each line of a .jsonl file (its `text` field) is a document and a
text file is one document, or one per paragraph or per line (--text-documents);
the WebText builder (gpt2/webtext/build.py) hands over its own. Each document
is encoded on its own (on every core) and preceded by <|endoftext|>, GPT-2's
separator, then appended to its split (see shards.py).

The held-out split (GPT-2 paper section 3: 5% of WebText) is chosen by a keyed
hash of each document's id if it has one (WebText: its URL), else of its text:
the round(val_fraction * N) documents with the smallest hashes. The fraction
is exact, it does not depend on the order of the inputs, and copies of one
document always land in the same split, so no held-out text is also trained
on verbatim.

Re-running is cheap and safe. The output is identified by a fingerprint of
the inputs' contents (sha256), the tokenizer and the settings: the same command
on a finished dataset does nothing; on one that was interrupted it keeps the
finished shards (each records where in the document stream it ends) and
encodes only what is missing; on a different dataset it refuses, unless
--force, and it never deletes files it did not write. A shard found missing or
truncated is encoded again from that point on; --force rebuilds everything
(the cure for a shard damaged in a way its size does not show).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    TOKEN_DTYPE,
    read_manifest,
    shard_tokens,
    write_manifest,
    write_shard,
)
from gpt2.data.documents import Documents, FileDocuments, iter_documents, list_inputs  # noqa: F401 (the last two: part of this module's API)
from gpt2.errors import GPT2Error
from gpt2.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

BATCH_CHARS = 1 << 22  # text handed to the encoder at once: large enough to keep every core busy


def _doc_key(text: str, seed: int) -> int:
    """A keyed 64-bit hash of a document: its place in the held-out draw."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def _fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _difference(old: dict, new: dict) -> str:
    """Which part of two dataset identities differs, in words."""
    if old.get("inputs") != new.get("inputs"):
        return "its input files differ"
    if old.get("tokenizer") != new.get("tokenizer"):
        return "it was encoded with a different tokenizer"
    for key, value in new.get("settings", {}).items():
        if old.get("settings", {}).get(key) != value:
            return f"it was made with {key}={old.get('settings', {}).get(key)!r}, not {value!r}"
    return "its manifest differs"


# ----------------------------------------------------------------------------
# the command


class _Split:
    """Tokens waiting to be written to one split's next shard, and where they came from."""

    def __init__(self, name: str, shards: list[dict]):
        self.name = name
        self.shards = shards  # finished shards (from an interrupted run, or written now)
        self.resume = tuple(shards[-1]["next"]) if shards else (0, 0)  # (document, token) to continue from
        self.pieces: list[tuple[int, int, np.ndarray]] = []  # (document index, offset of the piece in it, tokens)
        self.buffered = 0
        self.documents = 0
        self.bytes = 0

    def add(self, doc: int, offset: int, tokens: np.ndarray) -> None:
        if len(tokens):
            self.pieces.append((doc, offset, tokens))
            self.buffered += len(tokens)

    def cut(self, n: int, last_doc: int) -> tuple[np.ndarray, list[int]]:
        """Take the first n buffered tokens; also return where the rest of the stream begins."""
        taken, out = 0, []
        while taken < n:
            doc, offset, tokens = self.pieces[0]
            take = min(n - taken, len(tokens))
            out.append(tokens[:take])
            taken += take
            if take < len(tokens):
                self.pieces[0] = (doc, offset + take, tokens[take:])
            else:
                self.pieces.pop(0)
        self.buffered -= n
        nxt = [self.pieces[0][0], self.pieces[0][1]] if self.pieces else [last_doc + 1, 0]
        return np.concatenate(out), nxt


def _default_documents(cfg) -> Documents:
    """The files of cfg.input, with the text of the --decontaminate evaluation sets cut out if asked
    (GPT-3's 13-gram rule, gpt2/overlap/decontaminate.py)."""
    documents = FileDocuments.from_config(cfg)
    if cfg.decontaminate:
        from gpt2.overlap.decontaminate import Decontaminated

        documents = Decontaminated(documents, cfg)
    return documents


def prepare(cfg, documents: Documents | None = None) -> dict:
    """`gpt2 prepare`: returns the manifest of the finished dataset.

    `documents` is where the text comes from (gpt2/data/documents.py); by default the files of `cfg.input`.
    """
    t0 = time.perf_counter()
    out = Path(cfg.out)
    if documents is None:
        documents = _default_documents(cfg)
    tok = load_tokenizer(cfg.tokenizer)
    if tok.eot_token is None:
        raise GPT2Error(f"tokenizer {cfg.tokenizer} has no <|endoftext|> token to separate documents")
    if tok.n_vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise GPT2Error(f"tokenizer {cfg.tokenizer} has {tok.n_vocab:,} tokens; uint16 shards hold ids below 65,536")

    inputs = documents.inputs()
    settings = {"val_fraction": cfg.val_fraction, "seed": cfg.seed, **documents.settings(), "shard_tokens": cfg.shard_tokens}
    identity = {
        "inputs": [[i["sha256"], i["bytes"]] for i in inputs],
        "tokenizer": tok.fingerprint(),
        "settings": settings,
    }
    fingerprint = _fingerprint(identity)

    if out.exists() and not out.is_dir():
        raise GPT2Error(f"--out {out} is a file, not a directory; choose another --out")
    try:
        old = read_manifest(out) if out.is_dir() else None
    except GPT2Error:
        if not cfg.force or not _is_ours(out):
            raise
        old = {}  # our manifest, unreadable: --force replaces the dataset
    replace = old is not None and cfg.force
    if old is not None and old.get("fingerprint") != fingerprint and not replace:
        raise GPT2Error(
            f"{out} already holds a different dataset ({_difference(old['identity'], identity)}); "
            f"choose another --out, or pass --force to replace it"
        )
    if old is None and out.is_dir() and any(out.iterdir()):
        raise GPT2Error(f"{out} exists and is not a dataset directory (no {MANIFEST}); choose a new or empty --out")
    if old is not None and not replace:
        damaged = _keep_intact_shards(out, old)
        if old.get("complete") and not damaged:
            if not (out / "tokenizer").is_dir():
                tok.save(out / "tokenizer")
                log.info("restored the missing tokenizer of %s", out)
            log.info("%s already holds this dataset (%s); nothing to do", out, _summary(old))
            return old

    # read everything once before writing (or deleting) anything: bad input fails here and leaves no trace
    drawn = old["documents"] if old is not None and not replace else _draw_held_out(documents, cfg)
    if replace:
        _remove_dataset(out)
        old = None
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / "tokenizer")
    splits = {s: _Split(s, list(old["splits"][s]["shards"]) if old is not None else []) for s in SPLITS}
    if old is not None:
        log.info("continuing an interrupted run: %d finished shard(s) kept", sum(len(s.shards) for s in splits.values()))
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "complete": False,
        "fingerprint": fingerprint,
        "identity": identity,
        "inputs": inputs,
        "settings": settings,
        "tokenizer": {"dir": "tokenizer", "n_vocab": tok.n_vocab, "eot_token": tok.eot_token, "source": str(cfg.tokenizer)},
        "documents": drawn,
        "splits": {},
    }

    def save(complete: bool = False) -> None:
        manifest["complete"] = complete
        manifest["splits"] = {
            s.name: {
                "documents": s.documents,
                "bytes": s.bytes,
                "tokens": sum(sh["tokens"] for sh in s.shards),
                "shards": s.shards,
            }
            for s in splits.values()
        }
        write_manifest(out, manifest)

    save()
    threshold = drawn["threshold"]
    eot = tok.eot_token
    batch: list[tuple[int, _Split, str, int]] = []
    chars = 0
    last_doc = -1

    def flush() -> None:
        nonlocal chars
        if not batch:
            return
        encoded = tok.encode_batch([text for _, _, text, _ in batch], num_threads=cfg.workers, disallowed_special=())
        for (doc, split, _, skip), ids in zip(batch, encoded):
            tokens = np.empty(len(ids) + 1, dtype=TOKEN_DTYPE)
            tokens[0] = eot
            tokens[1:] = ids
            split.add(doc, skip, tokens[skip:])
            while split.buffered >= cfg.shard_tokens:
                _write(split, split.cut(cfg.shard_tokens, doc))
        batch.clear()
        chars = 0

    def _write(split: _Split, cut: tuple[np.ndarray, list[int]]) -> None:
        tokens, nxt = cut
        name = f"{split.name}_{len(split.shards):06d}.bin"
        write_shard(out / name, tokens)
        split.shards.append({"file": name, "tokens": int(len(tokens)), "next": nxt})
        save()

    with tqdm(total=drawn["total"], unit="doc", desc="encoding", file=sys.stderr, disable=None) as bar:
        doc = -1
        for doc, (text, doc_id) in enumerate(documents):
            split = splits["val" if _held_out(text, doc_id, threshold, cfg.seed) else "train"]
            split.documents += 1
            split.bytes += len(text.encode("utf-8", "surrogatepass"))
            first, offset = split.resume
            if doc >= first:
                batch.append((doc, split, text, offset if doc == first else 0))
                chars += len(text)
                if chars >= BATCH_CHARS:
                    flush()
            bar.update(1)
        flush()
        last_doc = doc
    if last_doc + 1 != drawn["total"]:
        raise GPT2Error(f"the inputs changed while they were read ({drawn['total']:,} documents before, {last_doc + 1:,} now)")
    for split in splits.values():
        if split.buffered:
            _write(split, split.cut(split.buffered, last_doc))
    save(complete=True)
    if getattr(documents, "removed", None) is not None:
        log.info("decontamination (%s, %d-grams): %s", ",".join(cfg.decontaminate), cfg.decontaminate_n, documents.removed.summary())
    log.info("prepared %s: %s in %.1f s", out, _summary(manifest), time.perf_counter() - t0)
    return manifest


def _held_out(text: str, doc_id: str | None, threshold: str | None, seed: int) -> bool:
    """Whether a document belongs to the held-out split: its id's (else its text's) keyed hash is at most the threshold."""
    return threshold is not None and _doc_key(text if doc_id is None else doc_id, seed) <= int(threshold)


def _draw_held_out(documents: Documents, cfg) -> dict:
    """Count the documents and choose the held-out ones: the k smallest keyed hashes (of the ids, else the texts)."""
    keys = []
    with tqdm(unit="doc", desc="reading", file=sys.stderr, disable=None) as bar:
        for text, doc_id in documents:
            keys.append(_doc_key(text if doc_id is None else doc_id, cfg.seed))
            bar.update(1)
    n = len(keys)
    if n == 0:
        raise GPT2Error(f"the inputs ({', '.join(map(str, cfg.input))}) hold no text")
    k = round(cfg.val_fraction * n)
    if cfg.val_fraction > 0 and k == 0:
        if n < 2:
            hint = " (use --text-documents paragraph or line to cut a text file into documents)" if cfg.text_documents == "file" else ""
            raise GPT2Error(f"the inputs hold a single document, so none can be held out{hint}, or pass --val-fraction 0")
        k = 1
    threshold = None
    if k:
        threshold = str(int(np.partition(np.array(keys, dtype=np.uint64), k - 1)[k - 1]))
    return {"total": n, "held_out": k, "threshold": threshold}


def split_documents(cfg, split: str, documents: Documents | None = None) -> Iterator[str]:
    """The documents that `prepare(cfg, documents)` puts in `split` ('train' or 'val'), e.g. to learn a tokenizer
    from the training documents alone."""
    if documents is None:
        documents = _default_documents(cfg)
    threshold = _draw_held_out(documents, cfg)["threshold"]
    for text, doc_id in documents:
        if _held_out(text, doc_id, threshold, cfg.seed) == (split == "val"):
            yield text


SHARD_NAME = re.compile(r"(train|val)_\d{6}\.bin")  # the only names _Split gives its shards


def _is_ours(out: Path) -> bool:
    """Whether `out` holds a manifest that `gpt2 prepare` wrote, even one too damaged to read in full."""
    try:
        return json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _keep_intact_shards(out: Path, manifest: dict) -> bool:
    """Cut each split's list of finished shards at the first one that is missing, truncated or of another
    size than the manifest says, so that encoding continues from there; True if any was cut."""
    damaged = False
    for name in SPLITS:
        shards = manifest["splits"][name]["shards"]
        for i, shard in enumerate(shards):
            try:
                intact = shard_tokens(out / shard["file"]) == shard["tokens"]
            except GPT2Error:
                intact = False
            if not intact:
                log.warning("%s is damaged or missing: encoding again from there", out / shard["file"])
                del shards[i:]
                damaged = True
                break
    if damaged:
        manifest["complete"] = False
    return damaged


def _remove_dataset(out: Path) -> None:
    """Delete what an earlier `gpt2 prepare` wrote in `out`, nothing else: the files named as its shards are
    (whatever the manifest says, so a hand-edited one cannot point elsewhere), their temporary files, the manifest."""
    for path in out.iterdir():
        if path.is_file() and SHARD_NAME.fullmatch(path.name.removesuffix(".tmp")):
            path.unlink()
    (out / MANIFEST).unlink(missing_ok=True)


def _summary(manifest: dict) -> str:
    sp = manifest["splits"]
    docs = manifest["documents"]
    n_tokens = sp["train"]["tokens"] + sp["val"]["tokens"]
    n_bytes = sp["train"]["bytes"] + sp["val"]["bytes"]
    n_shards = len(sp["train"]["shards"]) + len(sp["val"]["shards"])
    return (
        f"{docs['total']:,} documents ({docs['held_out']:,} held out), {sp['train']['tokens']:,} training + "
        f"{sp['val']['tokens']:,} held-out tokens in {n_shards} shard(s), {n_bytes / max(n_tokens, 1):.2f} bytes/token"
    )
