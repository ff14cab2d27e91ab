"""Tokenizer benchmark: encoding throughput and BPE training time against tiktoken, HF tokenizers and rustbpe.

    python bench/bench_tokenizer.py                 # everything
    python bench/bench_tokenizer.py --part encode   # or: train, scale

encode: the text datasets of ../shared/datasets concatenated and repeated to
  ~20 MB, encoded with OpenAI's GPT-2 vocabulary by this project, tiktoken and
  HF `tokenizers`: one thread on the whole text, then batched on all cores (as
  paragraphs, and as one large document). Ids must be identical.
train: learn 8,192 tokens from ~6 MB of shared text (Tiny Shakespeare, Botchan,
  WikiText-2 test+valid, PTB test+valid, LAMBADA) with this project, HF's
  BpeTrainer (ByteLevel) and rustbpe, all from the same in-memory documents.
scale: 50,000 merges on corpora of growing size: the shared text, then the
  Python standard library's sources and docs, then the sources of the installed
  packages (the largest real text on a machine without internet), with time
  against size, ours and HF's.

Each timing is the best of --repeat runs, peers interleaved. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

from gpt2.tokenizer import GPT2_PATTERN, Tokenizer  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    import tiktoken
    import tokenizers

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"tiktoken {tiktoken.__version__}, tokenizers {tokenizers.__version__}"
    )


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


# ----------------------------------------------------------------------------
# encode


def encode_corpus(target_mb: float) -> str:
    files = sorted(p for p in SHARED.rglob("*") if p.is_file() and p.parent.name != "gpt2_bpe")
    # a literal "<|endoftext|>" in the text would make encode() (special tokens disallowed) refuse it
    base = "\n".join(read(p) for p in files).replace("<|endoftext|>", "")
    text = base
    while len(text.encode()) < target_mb * 1e6:
        text += "\n" + base
    return text[: int(target_mb * 1e6)]


def hf_gpt2():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    hf = HFTokenizer(models.BPE.from_file(str(SHARED / "gpt2_bpe" / "encoder.json"), str(SHARED / "gpt2_bpe" / "vocab.bpe")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return hf


def tiktoken_gpt2():
    import hashlib
    import shutil
    import tempfile

    import tiktoken

    from gpt2.tokenizer import GPT2_FILES

    cache = tempfile.mkdtemp()
    for name, (url, _) in GPT2_FILES.items():
        shutil.copy(SHARED / "gpt2_bpe" / name, Path(cache) / hashlib.sha1(url.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    return tiktoken.get_encoding("gpt2")


def bench_encode(args) -> dict:
    text = encode_corpus(args.mb)
    mb = len(text.encode()) / 1e6
    docs = [d for d in text.split("\n\n") if d]
    ours = Tokenizer.load(SHARED / "gpt2_bpe")
    tik = tiktoken_gpt2()
    hf = hf_gpt2()
    threads = os.cpu_count() or 1
    rows = {}

    def record(name, fn, reference=None):
        t, med, ids = best(fn, args.repeat)
        rows[name] = {"seconds": t, "median": med, "MB/s": mb / t}
        if reference is not None:
            rows[name]["identical"] = ids == reference
        return ids

    print(f"encode: {mb:.1f} MB, {len(docs):,} paragraphs; {machine()}", flush=True)
    # one thread, the whole text
    ref = record("tiktoken encode_ordinary, 1 thread", lambda: tik.encode_ordinary(text))
    record("ours encode_ordinary, 1 thread", lambda: ours.encode_ordinary(text), ref)
    record("tiktoken encode (special check), 1 thread", lambda: tik.encode(text), ref)
    record("ours encode (special check), 1 thread", lambda: ours.encode(text), ref)
    record("HF tokenizers encode, 1 thread", lambda: hf.encode(text).ids, ref)
    # batched on all cores: paragraphs, then one large document
    ref_docs = [tik.encode_ordinary(d) for d in docs]
    record(f"tiktoken encode_ordinary_batch paragraphs, {threads} threads", lambda: tik.encode_ordinary_batch(docs, num_threads=threads), ref_docs)
    record(f"ours encode_batch paragraphs, {threads} threads", lambda: ours.encode_batch(docs, num_threads=threads), ref_docs)
    record(f"HF encode_batch paragraphs, {threads} threads", lambda: [e.ids for e in hf.encode_batch(docs)], ref_docs)
    record(f"tiktoken encode_ordinary_batch [20 MB doc], {threads} threads", lambda: tik.encode_ordinary_batch([text], num_threads=threads), [ref])
    record(f"ours encode_batch [20 MB doc], {threads} threads", lambda: ours.encode_batch([text], num_threads=threads), [ref])
    return {"MB": mb, "rows": rows}


def print_encode(result: dict) -> None:
    rows = result["rows"]
    print("\n| encoder | MB/s | best s | identical ids |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['MB/s']:.1f} | {r['seconds']:.2f} | {r.get('identical', 'reference')} |")
    pairs = [
        ("ours encode_ordinary, 1 thread", "tiktoken encode_ordinary, 1 thread"),
        ("ours encode (special check), 1 thread", "tiktoken encode (special check), 1 thread"),
        ("ours encode_ordinary, 1 thread", "HF tokenizers encode, 1 thread"),
    ]
    batch = [k for k in rows if "batch" in k]
    for kind in ("paragraphs", "[20 MB doc]"):
        o = next(k for k in batch if k.startswith("ours") and kind in k)
        pairs += [(o, k) for k in batch if not k.startswith("ours") and kind in k]
    print("\n| ratio (throughput, ours / peer) | |\n|---|---|")
    for a, b in pairs:
        print(f"| {a} / {b} | {rows[a]['MB/s'] / rows[b]['MB/s']:.2f}x |")


# ----------------------------------------------------------------------------
# train


def train_docs() -> list[str]:
    import json as _json

    docs = [
        read(SHARED / "tinyshakespeare" / "input.txt"),
        read(SHARED / "botchan" / "botchan.txt"),
        read(SHARED / "wikitext2_tokens" / "wiki.test.tokens"),
        read(SHARED / "wikitext2_tokens" / "wiki.valid.tokens"),
        read(SHARED / "ptb" / "ptb.test.txt"),
        read(SHARED / "ptb" / "ptb.valid.txt"),
    ]
    docs += [_json.loads(line)["text"] for line in read(SHARED / "lambada" / "lambada_test.jsonl").splitlines()]
    return docs


def train_hf(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(docs, trainer)
    return tok.get_vocab_size()


def train_rustbpe(docs: list[str], vocab_size: int):
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(docs, vocab_size - 1, pattern=GPT2_PATTERN)  # + <|endoftext|>
    return tok.vocab_size + 1


def train_ours(docs: list[str], vocab_size: int):
    return Tokenizer.train(docs, vocab_size, progress=False).n_vocab


def bench_train(args) -> dict:
    docs = train_docs()
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"\ntrain: {args.vocab_size} tokens from {mb:.2f} MB ({len(docs):,} documents); {machine()}", flush=True)
    rows = {}
    for name, fn in (("ours", train_ours), ("HF tokenizers BpeTrainer", train_hf), ("rustbpe", train_rustbpe)):
        t, med, n = best(lambda: fn(docs, args.vocab_size), args.repeat)
        rows[name] = {"seconds": t, "median": med, "vocab": n}
    print("\n| trainer | best s | median s | vocabulary | ours / peer time |\n|---|---|---|---|---|")
    for name, r in rows.items():
        ratio = rows["ours"]["seconds"] / r["seconds"]
        print(f"| {name} | {r['seconds']:.2f} | {r['median']:.2f} | {r['vocab']} | {ratio:.2f} |")
    return {"MB": mb, "rows": rows}


# ----------------------------------------------------------------------------
# scale


def source_texts(root: Path, skip_site_packages: bool) -> list[str]:
    """Text and source files under `root` (real English and code, present on every machine)."""
    out = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".txt", ".rst", ".html", ".md") or not path.is_file():
            continue
        if skip_site_packages and "site-packages" in path.parts:
            continue
        try:
            out.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def bench_scale(args) -> dict:
    shared = [read(p) for p in sorted(SHARED.rglob("*")) if p.is_file() and p.parent.name != "gpt2_bpe"]
    stdlib = source_texts(Path(sysconfig.get_paths()["stdlib"]), skip_site_packages=True)
    packages = source_texts(Path(sysconfig.get_paths()["purelib"]), skip_site_packages=False)
    corpora = {
        "shared datasets": shared,
        "+ Python standard library": shared + stdlib,
        "+ installed packages (torch, transformers, ...)": shared + stdlib + packages,
    }
    print(f"\nscale: 50,000 merges; {machine()}", flush=True)
    rows = {}
    for name, docs in corpora.items():
        mb = sum(len(d.encode()) for d in docs) / 1e6
        t0 = time.perf_counter()
        n = train_ours(docs, 50257)
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_hf(docs, 50257)
        hf = time.perf_counter() - t0
        rows[name] = {"MB": mb, "ours": ours, "hf": hf, "vocab": n}
        print(f"  {name}: {mb:.1f} MB, ours {ours:.1f} s, HF {hf:.1f} s", flush=True)
    print("\n| corpus | MB | ours s | HF tokenizers s | ours / HF time | ours s per MB |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['MB']:.1f} | {r['ours']:.1f} | {r['hf']:.1f} | {r['ours'] / r['hf']:.2f} | {r['ours'] / r['MB']:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "encode", "train", "scale"], default="all")
    parser.add_argument("--mb", type=float, default=20.0, help="size of the encoding corpus")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = {"machine": machine()}
    if args.part in ("all", "encode"):
        results["encode"] = bench_encode(args)
        print_encode(results["encode"])
    if args.part in ("all", "train"):
        results["train"] = bench_train(args)
    if args.part in ("all", "scale"):
        results["scale"] = bench_scale(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
