"""Overlap benchmark: our Bloom filter against rbloom and an exact Python set, on the same 8-grams.

    python bench/bench_overlap.py                   # everything
    python bench/bench_overlap.py --part filter     # or: text, scale

filter: the 8-grams of every text file of ../shared/datasets (about 3M, 2.75M
  distinct), as this project's 64-bit keys. Each contender stores them all,
  then looks up all of them (present) and 1M random keys (absent): inserts and
  queries per second, bits per distinct n-gram against the bounds at a
  false-positive rate of 1e-8 (log2(1/p) = 26.6 bits for any structure,
  log2(1/p) / ln 2 = 38.3 bits for a Bloom filter), and the measured
  false-positive rate. Ours takes numpy arrays; rbloom (a Rust Bloom filter,
  sized for the same count and rate) and the set take the same keys as Python
  ints, converted beforehand.
text: the whole job on the same shared text, each contender in a fresh process
  (time, and the peak resident memory of its process tree, sampled every
  20 ms): `gpt2 overlap build` with one and two worker processes (both passes:
  counting, then filling), against rbloom and a Python set of the n-grams as
  strings built with the same normalisation in Python (rbloom is given the
  distinct count, so it needs no counting pass).
scale: what grows with the corpus, for the projection to WebText's 40 GB:
  hashing text into keys, and adding and looking up keys in a filter sized for
  200M n-grams (0.96 GB, far larger than the caches).

Each timing is the best of --repeat runs. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

import numpy as np  # noqa: E402

from gpt2.overlap.bloom import BloomFilter  # noqa: E402
from gpt2.overlap.ngrams import ngram_keys, random_keys, words  # noqa: E402

N = 8
FP = 1e-8


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    import rbloom  # noqa: F401
    from importlib.metadata import version

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, rbloom {version('rbloom')}"


def shared_files() -> list[Path]:
    """The text files of ../shared/datasets (not the tokenizer's files, not the compressed ones)."""
    return sorted(p for p in SHARED.rglob("*") if p.is_file() and p.parent.name != "gpt2_bpe"
                  and p.suffix not in (".gz", ".xz", ".bz2", ".zst"))


def texts() -> list[str]:
    return [p.read_bytes().decode("utf-8") for p in shared_files()]


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


# ----------------------------------------------------------------------------
# the filters alone, on the same keys


def bench_filter(args) -> dict:
    import rbloom

    keys, _ = ngram_keys(texts(), N)
    distinct = len(np.unique(keys))
    absent = random_keys(1_000_000, N, seed=0)
    keys_py, absent_py = keys.tolist(), absent.tolist()
    print(f"{len(keys):,} {N}-grams, {distinct:,} distinct; 1,000,000 absent keys", flush=True)
    rows = {}

    def ours():
        bloom = BloomFilter.for_items(distinct, FP)
        t_add, _ = best(lambda: bloom.add(keys), 1)
        t_hit, hit = best(lambda: bloom.contains(keys), 1)
        t_miss, miss = best(lambda: bloom.contains(absent), 1)
        assert hit.all()
        return {"add_s": t_add, "present_s": t_hit, "absent_s": t_miss, "bits": bloom.m, "false_positives": int(miss.sum())}

    def rb():
        bloom = rbloom.Bloom(distinct, FP)
        t_add, _ = best(lambda: bloom.update(keys_py), 1)
        t_hit, hit = best(lambda: [k in bloom for k in keys_py], 1)
        t_miss, miss = best(lambda: [k in bloom for k in absent_py], 1)
        assert all(hit)
        return {"add_s": t_add, "present_s": t_hit, "absent_s": t_miss, "bits": bloom.size_in_bits, "false_positives": sum(miss)}

    def exact():
        before = _rss()
        s: set = set()
        t_add, _ = best(lambda: s.update(keys_py), 1)
        t_hit, hit = best(lambda: [k in s for k in keys_py], 1)
        t_miss, miss = best(lambda: [k in s for k in absent_py], 1)
        assert all(hit)
        # the table's own memory; the int objects are extra (they exist in the caller's list here)
        return {"add_s": t_add, "present_s": t_hit, "absent_s": t_miss, "bits": 8 * sys.getsizeof(s),
                "bits_with_ints": 8 * (sys.getsizeof(s) + 32 * distinct), "rss_growth_mb": (_rss() - before) / 2**20,
                "false_positives": sum(miss)}

    for name, fn in (("ours (numpy)", ours), ("rbloom", rb), ("Python set (exact)", exact)):
        runs = [fn() for _ in range(args.repeat)]
        rows[name] = {k: min(r[k] for r in runs) if k.endswith("_s") else runs[0][k] for k in runs[0]}
        r = rows[name]
        print(f"{name:20s} add {len(keys) / r['add_s'] / 1e6:6.2f} M/s   present {len(keys) / r['present_s'] / 1e6:6.2f} M/s   "
              f"absent {1e6 / r['absent_s'] / 1e6:6.2f} M/s   {r['bits'] / distinct:6.1f} bits/n-gram   "
              f"false positives {r['false_positives']} / 1M", flush=True)
    o, p = rows["ours (numpy)"], rows["rbloom"]
    print(f"ours / rbloom: add {p['add_s'] / o['add_s']:.2f}x, present {p['present_s'] / o['present_s']:.2f}x, "
          f"absent {p['absent_s'] / o['absent_s']:.2f}x faster; bounds: {math.log2(1 / FP):.1f} bits (any), "
          f"{math.log2(1 / FP) / math.log(2):.1f} bits (Bloom)")
    return {"ngrams": len(keys), "distinct": distinct, "rows": rows}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------
# from text to a filter, each contender in its own process


def as_text_files(folder: Path) -> list[Path]:
    """The shared files under .txt names (symbolic links), so that every contender reads each as one document of
    plain text (NQ-open's JSON lines have no "text" field for `gpt2 overlap build` to read)."""
    links = []
    for i, path in enumerate(shared_files()):
        links.append(folder / f"{i:03d}-{path.name}.txt")
        links[-1].symlink_to(path)
    return links


def run_one(which: str, distinct: int, out: Path) -> dict:
    """One contender on the shared text, in this (fresh) process: seconds and peak RSS."""
    files = as_text_files(Path(tempfile.mkdtemp(dir=out.parent)))
    t0 = time.perf_counter()
    if which.startswith("ours"):
        from gpt2.config import OverlapBuildConfig
        from gpt2.overlap.build import build

        workers = int(which.split("-")[1])
        header = build(OverlapBuildConfig(input=files, out=out, workers=workers, random_queries=0, force=True))
        result = {"ngrams": header["ngrams"], "bits": header["m"]}
    else:
        import rbloom

        store = rbloom.Bloom(distinct, FP) if which == "rbloom" else set()
        count = 0
        for path in files:
            w = [x.decode("utf-8") for x in words(path.read_bytes().decode("utf-8"))]
            grams = [" ".join(w[i : i + N]) for i in range(len(w) - N + 1)]
            count += len(grams)
            store.update(grams)
        result = {"ngrams": count, "bits": store.size_in_bits if which == "rbloom" else 8 * sys.getsizeof(store)}
    result["seconds"] = time.perf_counter() - t0
    return result


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        grew, tree = bool(more), tree | more
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def measured(args: list[str]) -> dict:
    """Run a contender in a fresh process; its result with the peak resident memory of its process tree (sampled
    every 20 ms: the worker processes count)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(err)
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": peak / 2**20}


def bench_text(args) -> dict:
    data = texts()
    size = sum(len(t.encode("utf-8")) for t in data)
    keys, _ = ngram_keys(data, N)
    distinct = len(np.unique(keys))
    del keys, data
    print(f"{size / 1e6:.1f} MB of text in {len(shared_files())} files, {distinct:,} distinct {N}-grams", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in ("ours-1", "ours-2", "rbloom", "set"):
            runs = []
            for _ in range(args.repeat):
                runs.append(measured([sys.executable, __file__, "--one", which, "--distinct", str(distinct), "--out", str(Path(tmp) / "f.bloom")]))
            rows[which] = min(runs, key=lambda r: r["seconds"])
            r = rows[which]
            print(f"{which:8s} {r['seconds']:6.2f} s  {size / r['seconds'] / 1e6:5.2f} MB/s  peak RSS {r['peak_rss_mb']:6.0f} MB "
                  f"(all its processes)  {r['bits'] / distinct:.1f} bits/n-gram", flush=True)
    return {"bytes": size, "distinct": distinct, "rows": rows}


def bench_scale(args) -> dict:
    """The two costs that grow with the corpus, for the projection to WebText's size: hashing text into keys (one
    process), and setting / testing bits in a filter much larger than the caches (sized for 200M n-grams, 0.96 GB)."""
    data = texts()
    size = sum(len(t.encode("utf-8")) for t in data)
    t_hash, (keys, _) = best(lambda: ngram_keys(data, N), args.repeat)
    print(f"hashing: {size / t_hash / 1e6:.1f} MB/s of text, {len(keys) / t_hash / 1e6:.2f} M {N}-grams/s (one process)", flush=True)
    bloom = BloomFilter.for_items(200_000_000, FP)
    bloom.bits.fill(0)  # touch every page first: the timing is of the filter, not of page faults
    many = random_keys(10_000_000, N, seed=4)
    t_add, _ = best(lambda: bloom.add(many), 1)
    t_hit, _ = best(lambda: bloom.contains(many), args.repeat)
    absent = random_keys(2_000_000, N, seed=5)
    t_miss, _ = best(lambda: bloom.contains(absent), args.repeat)
    print(f"{bloom.m / 8e9:.2f} GB filter: add {len(many) / t_add / 1e6:.2f} M/s, present {len(many) / t_hit / 1e6:.2f} M/s, "
          f"absent {len(absent) / t_miss / 1e6:.2f} M/s (one process)", flush=True)
    return {"text_bytes": size, "ngrams": len(keys), "hash_s": t_hash, "filter_bytes": bloom.m / 8, "add_per_s": len(many) / t_add,
            "present_per_s": len(many) / t_hit, "absent_per_s": len(absent) / t_miss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["filter", "text", "scale", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--distinct", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.distinct, args.out)))
        return
    print(machine(), flush=True)
    results = {"machine": machine()}
    if args.part in ("filter", "all"):
        results["filter"] = bench_filter(args)
    if args.part in ("text", "all"):
        results["text"] = bench_text(args)
    if args.part in ("scale", "all"):
        results["scale"] = bench_scale(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
