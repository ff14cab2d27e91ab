"""WebText corpus building: our stages against datatrove's, and each stage's own speed.

    python bench/bench_webtext.py                      # everything
    python bench/bench_webtext.py --part pipeline      # or: quality, links, fetch, dask

quality:  main-text extraction on the 300 real pages of ../shared/datasets/web_pages: the share of the
          strings each page's text must contain that it does, of those it must not that it does not,
          and ms per page, for trafilatura, resiliparse and newspaper4k (if installed).
pipeline: documents/s for extract + clean + dedup on the same WARC files (the 300 pages and 60 edited
          copies under other URLs, in 4 files), ours (trafilatura; language ID with every language
          kept, Gopher and C4 rules; exact + MinHash LSH 14 x 8 on 5-grams) against datatrove (its
          Trafilatura extractor, GopherRepetitionFilter + GopherQualityFilter, its four-stage MinHash
          dedup with the same 14 x 8 on 5-grams), on 1 and 2 workers. datatrove's language filter is
          left out: its fastText model is downloaded at run time.
links:    the links stage on copies of the two real Pushshift dumps: MB/s of .xz input and of JSON.
fetch:    pages/s from the loopback test server (tests/webtext_server.py) at 1, 16 and 64 connections.
dask:     the Dask engine (a 2-worker LocalCluster, started inside the timing) against the local pool,
          extract + clean + dedup on the same input.

Contenders alternate within each round; medians of --rounds rounds are reported (the machine is shared).
Needs: pip install 'gpt2[webtext]' 'datatrove[processing]'.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import lzma
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))

from gpt2 import config as C  # noqa: E402
from gpt2.webtext.clean import clean  # noqa: E402
from gpt2.webtext.dedup import dedup  # noqa: E402
from gpt2.webtext.extract import decode_html, extract, extract_page  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def pages() -> list[tuple[str, bytes, dict]]:
    meta = json.loads((SHARED / "web_pages" / "evaldata.json").read_text(encoding="utf-8"))
    return [(url, gzip.decompress((SHARED / "web_pages" / "pages" / e["file"]).read_bytes()), e) for url, e in meta.items()]


# ----------------------------------------------------------------------------


def part_quality(args) -> dict:
    results = {}
    extractors = ["trafilatura", "resiliparse"]
    try:
        import newspaper  # noqa: F401

        extractors.append("newspaper")
    except ImportError:
        print("newspaper4k is not installed: skipped")
    data = pages()
    for extractor in extractors:
        found = absent = n_with = n_without = empty = 0
        seconds = 0.0
        for url, body, e in data:
            html = decode_html(body)
            t0 = time.perf_counter()
            try:
                page = extract_page(html, url, extractor)
            except Exception:  # counted as an empty page, as a run would drop it
                page = None
            seconds += time.perf_counter() - t0
            text = page["text"] if page else ""
            empty += page is None
            found += sum(s in text for s in e["with"])
            absent += sum(s not in text for s in e["without"])
            n_with += len(e["with"])
            n_without += len(e["without"])
        results[extractor] = {"with": found / n_with, "without": absent / n_without, "ms_per_page": 1000 * seconds / len(data),
                              "empty": empty, "n_with": n_with, "n_without": n_without}
        r = results[extractor]
        print(f"{extractor:12s} with {r['with']:.3f} ({found}/{n_with})  without {r['without']:.3f} ({absent}/{n_without})  "
              f"empty {empty}  {r['ms_per_page']:.1f} ms/page")
    return results


# ----------------------------------------------------------------------------


def make_warcs(folder: Path, n_files: int = 4) -> int:
    """The 300 pages plus 60 copies with 1% of the words changed, under other URLs, in n_files WARC files."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng = random.Random(0)
    data = [(url, body) for url, body, _ in pages()]
    for url, body in data[:60]:
        words = body.split(b" ")
        for i in rng.sample(range(len(words)), len(words) // 100):
            words[i] = b"river"
        data.append((url.rstrip("/") + "/copy", b" ".join(words)))
    rng.shuffle(data)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        with open(folder / f"fetch-{f:05d}.warc.gz", "wb") as out:
            writer = WARCWriter(out, gzip=True)
            for url, body in data[f::n_files]:
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
                writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                                              warc_headers_dict={"WARC-WebText-Karma": "3"}))
    return len(data)


def all_languages() -> list[str]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return sorted(set(LanguageIdentifier.from_model_file(MODEL_FILE).nb_classes))


def ours(warcs: Path, work: Path, workers: int, engine: str = "local") -> int:
    e = {"workers": workers, "engine": engine}
    extract(C.WebTextExtractConfig(warc=[warcs], out=work / "extract", **e))
    clean(C.WebTextCleanConfig(input=[work / "extract"], out=work / "clean", languages=all_languages(), min_language_score=0.0, **e))
    stats = dedup(C.WebTextDedupConfig(input=[work / "clean"], out=work / "dedup", **e))
    return stats["kept"]


def theirs(warcs: Path, work: Path, workers: int) -> int:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    tasks = 4
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    logs = str(work / "logs")

    def run(name, pipeline, n_tasks):
        LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks), logging_dir=f"{logs}/{name}",
                              skip_completed=False).run()

    run("extract", [WarcReader(str(warcs)), Trafilatura(timeout=30.0), GopherRepetitionFilter(), GopherQualityFilter(),
                    JsonlWriter(str(work / "docs"))], tasks)
    run("signatures", [JsonlReader(str(work / "docs")), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)], tasks)
    run("buckets", [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
        config.num_buckets)
    run("cluster", [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config)], 1)
    run("filter", [JsonlReader(str(work / "docs")), MinhashDedupFilter(input_folder=str(work / "remove")),
                   JsonlWriter(str(work / "unique"))], tasks)
    return sum(1 for p in (work / "unique").rglob("*.jsonl.gz") for _ in gzip.open(p))


def part_pipeline(args) -> dict:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    root = Path(tempfile.mkdtemp(prefix="bench-webtext-"))
    n = make_warcs(root / "warc")
    print(f"{n} pages in 4 WARC files")
    results = {}
    for workers in (1, 2):
        times = {"ours": [], "datatrove": []}
        kept = {}
        for r in range(args.rounds):
            order = [("ours", ours), ("datatrove", theirs)] if r % 2 == 0 else [("datatrove", theirs), ("ours", ours)]
            for name, fn in order:
                work = root / f"{name}-{workers}-{r}"
                t0 = time.perf_counter()
                kept[name] = fn(root / "warc", work, workers)
                times[name].append(time.perf_counter() - t0)
                shutil.rmtree(work)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[workers] = {"seconds": times, "median": med, "kept": kept, "docs_per_s": {k: n / v for k, v in med.items()},
                            "ratio": med["datatrove"] / med["ours"]}
        print(f"{workers} worker(s): ours {n / med['ours']:.1f} docs/s ({med['ours']:.1f} s, {kept['ours']} kept), "
              f"datatrove {n / med['datatrove']:.1f} docs/s ({med['datatrove']:.1f} s, {kept['datatrove']} kept): "
              f"ours/datatrove {results[workers]['ratio']:.2f}x  (runs: {times})")
    shutil.rmtree(root)
    return results


# ----------------------------------------------------------------------------


def part_links(args) -> dict:
    from gpt2.webtext.links import links

    root = Path(tempfile.mkdtemp(prefix="bench-links-"))
    (root / "dumps").mkdir()
    copies = 30
    json_bytes = 0
    for name in ("RS_v2_2005-06.xz", "RS_v2_2005-07.xz"):
        json_bytes += len(lzma.open(SHARED / "pushshift" / name).read()) * copies
        for i in range(copies):
            shutil.copy(SHARED / "pushshift" / name, root / "dumps" / f"{i:02d}-{name}")
    xz_bytes = sum(p.stat().st_size for p in (root / "dumps").iterdir())
    results = {}
    for workers in (1, 2):
        times = []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            links(C.WebTextLinksConfig(input=[root / "dumps"], out=root / f"out-{workers}-{r}", workers=workers))
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results[workers] = {"seconds": med, "xz_MB_s": xz_bytes / med / 1e6, "json_MB_s": json_bytes / med / 1e6}
        print(f"links, {workers} worker(s): {xz_bytes / 1e6:.1f} MB of .xz ({json_bytes / 1e6:.1f} MB of JSON) in {med:.2f} s: "
              f"{results[workers]['xz_MB_s']:.1f} MB/s compressed, {results[workers]['json_MB_s']:.1f} MB/s of JSON")
    shutil.rmtree(root)
    return results


def part_fetch(args) -> dict:
    from gpt2.webtext.fetch import fetch
    from webtext_server import Server

    bodies = [body for _, body, _ in pages()]
    root = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    results = {}
    with Server(bodies) as server:
        (root / "urls.txt").write_text("\n".join(f"{server.base}/page/{i}" for i in range(len(bodies))) + "\n")
        for connections in (1, 16, 64):
            rates = []
            for r in range(args.rounds):
                out = root / f"out-{connections}-{r}"
                t0 = time.perf_counter()
                stats = fetch(C.WebTextFetchConfig(links=[root / "urls.txt"], out=out, concurrency=connections, max_per_host=connections,
                                                   per_host_delay=0.0, workers=1))
                rates.append(stats["pages"] / (time.perf_counter() - t0))
                shutil.rmtree(out)
            results[connections] = statistics.median(rates)
            print(f"fetch, {connections} connection(s): {results[connections]:.0f} pages/s ({len(bodies)} pages, "
                  f"{sum(map(len, bodies)) / 1e6:.1f} MB, loopback)")
    shutil.rmtree(root)
    return results


def part_dask(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    n = make_warcs(root / "warc")
    times = {"local": [], "dask": []}
    for r in range(args.rounds):
        for engine in (("local", "dask") if r % 2 == 0 else ("dask", "local")):
            work = root / f"{engine}-{r}"
            t0 = time.perf_counter()
            ours(root / "warc", work, 2, engine)
            times[engine].append(time.perf_counter() - t0)
            shutil.rmtree(work)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"engine, 2 workers, extract + clean + dedup of {n} pages: local {med['local']:.1f} s, dask {med['dask']:.1f} s "
          f"(overhead {med['dask'] - med['local']:+.1f} s, {med['dask'] / med['local']:.2f}x)  runs: {times}")
    shutil.rmtree(root)
    return {"median": med, "seconds": times}


PARTS = {"quality": part_quality, "links": part_links, "fetch": part_fetch, "pipeline": part_pipeline, "dask": part_dask}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(machine())
    results = {"machine": machine()}
    for name, fn in PARTS.items():
        if args.part in (name, "all"):
            print(f"== {name}")
            results[name] = fn(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
