"""`gpt2 overlap report`: how much of each test set is in the training data (GPT-2 paper, section 4, Table 6).

For every test set (evaluation tasks read as `gpt2 eval` reads them, or other
files; gpt2/overlap/testsets.py) the n-grams of its documents are looked up
in a Bloom filter of the training set's n-grams:

    OUT/overlap.json           per test set: n-grams, found, percentage (of all n-grams and of the distinct ones),
                               the same in its own training split (--own-train), per-example summaries, and
                               the metrics of a `gpt2 eval` run on all / clean / dirty examples (--results)
    OUT/overlap.md             the same laid out like Table 6, the paper's numbers beside ours
    OUT/examples/NAME.jsonl    each example's overlap: {"index", "ngrams", "found", "overlap"} (fraction found)
    OUT/overlap_histogram.png  the distribution of per-example overlap

Percentages count n-gram occurrences: an n-gram that appears twice in a
test set counts twice (the paper does not say; the share of distinct
n-grams is reported as well). An example is clean when none of its n-grams
is found and dirty when more than --dirty-threshold (15%, the paper's
LAMBADA analysis) are; an example of fewer than n words has no n-grams and
is clean.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gpt2
from gpt2.errors import GPT2Error
from gpt2.overlap import bloom as B
from gpt2.overlap import subsets
from gpt2.overlap.documents import iter_documents, list_inputs
from gpt2.overlap.ngrams import distinct, ngram_keys
from gpt2.overlap.testsets import TestSet, file_test_set, task_names, task_test_set

log = logging.getLogger(__name__)

FORMAT = "gpt2-overlap-report"
FORMAT_VERSION = 1
HISTOGRAM = "overlap_histogram.png"

# Table 6 of the paper: % of the test set's 8-grams found in WebText train, and in the test set's own training split.
PAPER_TABLE6 = {
    "ptb": ("PTB", 0.88, 2.67),
    "wikitext2": ("WikiText-2", 1.63, 0.66),
    "enwik8": ("enwik8", 6.31, 7.50),
    "text8": ("text8", 3.94, 2.34),
    "wikitext103": ("WikiText-103", 2.42, 9.09),
    "1bw": ("1BW", 3.75, 13.19),
}
# the paper's per-example findings (section 4)
PAPER_EXAMPLES = {
    "lambada": "average overlap 1.2%; excluding every example with any overlap: accuracy 63.2% -> 62.9%",
    "wsc273": "10 of 273 schemata with any overlap",
    "coqa": "about 15% of the news documents (the news domain only) are in WebText",
}


@dataclass
class Overlap:
    """The n-grams of a list of texts and which of them a filter holds."""

    keys: np.ndarray
    offsets: np.ndarray
    found: np.ndarray

    @classmethod
    def of(cls, texts: list[str], n: int, lookup) -> Overlap:
        keys, offsets = ngram_keys(texts, n)
        return cls(keys, offsets, lookup(keys))

    def totals(self, lookup) -> dict:
        """n-grams and found, counted per occurrence and per distinct n-gram."""
        unique = distinct(self.keys)
        found_distinct = int(lookup(unique).sum()) if len(unique) else 0
        return {
            "ngrams": len(self.keys),
            "found": int(self.found.sum()),
            "percent": _percent(int(self.found.sum()), len(self.keys)),
            "distinct_ngrams": len(unique),
            "distinct_found": found_distinct,
            "distinct_percent": _percent(found_distinct, len(unique)),
        }

    def per_text(self) -> tuple[np.ndarray, np.ndarray]:
        """(n-grams, found) of each text."""
        counts = np.diff(self.offsets)
        owner = np.repeat(np.arange(len(counts)), counts)
        return counts, np.bincount(owner, weights=self.found, minlength=len(counts)).astype(np.int64)


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _fractions(ngrams: np.ndarray, found: np.ndarray) -> np.ndarray:
    return np.divide(found, ngrams, out=np.zeros(len(ngrams)), where=ngrams > 0)


# ----------------------------------------------------------------------------
# lookups: a filter file, or the exact n-grams of a training split


class ExactSet:
    """The distinct n-gram keys of some text, for exact lookups (a sorted array, 8 bytes per n-gram)."""

    def __init__(self, keys: np.ndarray):
        self.keys = distinct(keys)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys


def _is_filter(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(B.MAGIC)) == B.MAGIC
    except (IsADirectoryError, FileNotFoundError):
        return False


def own_train_lookup(spec: str, n: int, jsonl_field: str, verify: bool):
    """NAME=FILE -> (NAME, description, lookup): FILE is a filter of `gpt2 overlap build`, or training text whose
    n-grams are held exactly."""
    name, _, path = spec.partition("=")
    path = Path(path.strip())
    if _is_filter(path):
        f = B.open_filter(path, n=n, verify=verify)
        return name.strip(), {"path": str(path), "kind": "bloom filter", "ngrams": f.header["ngrams"]}, f.contains
    keys = [ngram_keys([d], n)[0] for inp in list_inputs([path]) for d in iter_documents(inp, jsonl_field)]
    exact = ExactSet(np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64))
    if not len(exact.keys):
        raise GPT2Error(f"--own-train {spec}: {path} holds no {n}-grams")
    total = sum(len(k) for k in keys)
    return name.strip(), {"path": str(path), "kind": "exact", "ngrams": total, "distinct": len(exact.keys)}, exact.contains


# ----------------------------------------------------------------------------
# clean and dirty examples of a `gpt2 eval` run


def _load_samples(results_dir: Path, task: str, record: dict) -> list[dict]:
    path = results_dir / "tasks" / f"{task}-{record.get('cache_key')}.samples.jsonl"
    if not path.is_file():
        raise GPT2Error(f"{path} is missing")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GPT2Error(f"{path} is not JSON lines ({e})") from None


def clean_dirty(results_dir: Path, results: dict, ts: TestSet, fractions: np.ndarray, threshold: float) -> dict:
    """The task's metrics recomputed on all, clean (no overlap) and dirty (> threshold) examples of the run,
    or {"skipped": why}."""
    record = results["tasks"][ts.name]
    ours = sorted(s["sha256"] for s in ts.sources)
    theirs = sorted(d["sha256"] for d in record["datasets"])
    if ours != theirs:
        return {"skipped": "the run read other dataset files (sha256 differ)"}
    try:
        samples = _load_samples(results_dir, ts.name, record)
    except GPT2Error as e:
        return {"skipped": str(e)}
    if missing := subsets.missing_fields(ts.name, samples):
        return {"skipped": f"its per-example records lack {', '.join(missing)} (written by an older gpt2 eval: run it again with --force)"}
    first = sum(int(results.get("settings", {}).get(k, default)) for k, default in ts.first_scored.items())
    if len(samples) != record["n_examples"] or first + len(samples) > len(fractions):
        return {"skipped": f"{len(samples)} per-example records do not match the task's {record['n_examples']} examples"}
    scored = fractions[first : first + len(samples)]
    out = {"first_example": first}
    for subset, keep in (("all", np.ones(len(scored), bool)), ("clean", scored == 0), ("dirty", scored > threshold)):
        chosen = [s for s, k in zip(samples, keep) if k]
        out[subset] = {"examples": len(chosen), "metrics": subsets.recompute(ts.name, chosen, record) if chosen else {}}
    out["reported"] = {m["id"]: m["value"] for m in record["metrics"] if m["id"] in out["all"]["metrics"]}
    off = [k for k, v in out["reported"].items() if not math.isclose(v, out["all"]["metrics"][k], rel_tol=1e-9, abs_tol=1e-9)]
    if off:
        log.warning("%s: %s recomputed on all examples differ from what gpt2 eval reported", ts.name, ", ".join(off))
    return out


# ----------------------------------------------------------------------------
# the command


def _test_sets(cfg) -> list[TestSet]:
    sets = [task_test_set(name, cfg.data_dir) for name in task_names(cfg.tasks)]
    sets += [file_test_set(path, cfg.jsonl_field) for path in cfg.input]
    names = [t.name for t in sets]
    if len(set(names)) != len(names):
        raise GPT2Error(f"two test sets are named {next(n for n in names if names.count(n) > 1)!r}; rename one of the --input files")
    return sets


def report_command(cfg) -> dict:
    """`gpt2 overlap report`: write overlap.json, overlap.md, examples/*.jsonl and the histogram to cfg.out."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise GPT2Error(f"--out {out} is a file; give a directory")
    existing = [p.name for p in (out / "overlap.json", out / "overlap.md", out / HISTOGRAM, out / "examples") if p.exists()]
    if existing and not cfg.force:
        raise GPT2Error(f"--out {out} already holds {', '.join(existing)}; pass --force to replace them, or choose another --out")
    bloom = B.open_filter(cfg.filter, n=cfg.n, verify=cfg.verify)
    n = bloom.header["n"]
    results = None
    if cfg.results is not None:
        from gpt2.evaluate.report import load_results

        results = load_results(cfg.results)
    own = dict((name, (info, lookup)) for name, info, lookup in (own_train_lookup(s, n, cfg.jsonl_field, cfg.verify) for s in cfg.own_train))
    sets = _test_sets(cfg)
    if unknown := sorted(set(own) - {t.name for t in sets}):
        raise GPT2Error(f"--own-train names {unknown[0]!r}, which is not among the test sets ({', '.join(t.name for t in sets)})")

    report = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpt2": gpt2.__version__,
        "filter": {"path": str(cfg.filter), **{k: bloom.header.get(k) for k in (
            "n", "m", "k", "ngrams", "distinct", "fp_rate", "expected_fp_rate", "measured_fp_rate", "random_queries", "inputs")}},
        "dirty_threshold": cfg.dirty_threshold,
        "results": str(cfg.results) if cfg.results is not None else None,
        "test_sets": {},
    }
    per_example: dict[str, np.ndarray] = {}
    (out / "examples").mkdir(parents=True, exist_ok=True)
    for ts in sets:
        docs = Overlap.of(ts.documents, n, bloom.contains)
        entry = {"title": ts.title, "kind": ts.kind, "sources": ts.sources, "documents": len(ts.documents), **docs.totals(bloom.contains)}
        if ts.name in own:
            info, lookup = own[ts.name]
            entry["own_train"] = {**info, **Overlap.of(ts.documents, n, lookup).totals(lookup)}
        if ts.name in PAPER_TABLE6:
            _, webtext, own_split = PAPER_TABLE6[ts.name]
            entry["paper"] = {"webtext_train_percent": webtext, "own_train_percent": own_split}
        if ts.examples is not None:
            ex = docs if ts.examples is ts.documents else Overlap.of(ts.examples, n, bloom.contains)
            counts, found = ex.per_text()
            fractions = _fractions(counts, found)
            per_example[ts.name] = fractions
            path = out / "examples" / f"{ts.name}.jsonl"
            _write(path, "".join(json.dumps({"index": i, "ngrams": int(c), "found": int(f), "overlap": float(x)}) + "\n"
                                 for i, (c, f, x) in enumerate(zip(counts, found, fractions))))
            with_ngrams = counts > 0
            entry["examples"] = {
                "count": len(counts),
                "without_ngrams": int((~with_ngrams).sum()),
                "mean_overlap_percent": 100 * float(fractions[with_ngrams].mean()) if with_ngrams.any() else None,
                "any_overlap": int((found > 0).sum()),
                "dirty": int((fractions > cfg.dirty_threshold).sum()),
                "max_overlap_percent": 100 * float(fractions.max()) if len(fractions) else None,
                "file": str(path.relative_to(out)),
            }
            if ts.name in PAPER_EXAMPLES:
                entry["examples"]["paper"] = PAPER_EXAMPLES[ts.name]
            if results is not None and ts.name in results["tasks"] and ts.name in subsets.RECOMPUTE:
                entry["clean_dirty"] = clean_dirty(Path(cfg.results), results, ts, fractions, cfg.dirty_threshold)
        report["test_sets"][ts.name] = entry
        log.info("%s: %s of %s %d-grams found (%s)", ts.name, f"{entry['found']:,}", f"{entry['ngrams']:,}", n, _fmt_pct(entry["percent"]))
    _write(out / "overlap.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write(out / "overlap.md", markdown(report))
    if per_example:
        histogram(per_example, cfg.dirty_threshold, out / HISTOGRAM)
    log.info("wrote %s, %s%s", out / "overlap.json", out / "overlap.md", f" and {out / HISTOGRAM}" if per_example else "")
    return report


def _write(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


# ----------------------------------------------------------------------------
# Markdown and the histogram


def _fmt_pct(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}%"


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def markdown(report: dict) -> str:
    f = report["filter"]
    n = f["n"]
    inputs = f.get("inputs") or {}
    lines = [
        f"# {n}-gram overlap with the training data",
        "",
        f"Filter `{f['path']}`: the {n}-grams of {inputs.get('count', '?')} input(s) ({inputs.get('bytes', 0):,} bytes): "
        f"{f['ngrams']:,} {n}-grams, {f['distinct']:,} distinct, in {f['m']:,} bits with k = {f['k']} "
        f"({f['m'] / max(f['distinct'], 1):.2f} bits per distinct {n}-gram); false-positive rate {f['fp_rate']:g} by design, "
        f"{f['expected_fp_rate']:.2g} expected at this fill"
        + (f", {f['measured_fp_rate']:.2g} measured on {f['random_queries']:,} random strings." if f.get("measured_fp_rate") is not None else "."),
        "",
        f"## Table 6 layout: % of each test set's {n}-grams found",
        "",
        "Occurrences are counted (a repeated n-gram counts each time); the share of distinct n-grams follows in",
        "brackets. *Paper* columns: GPT-2 paper Table 6 (8-grams; WebText train, and the test set's own training split).",
        "",
        f"| Test set | {n}-grams | in the filter | in its own training split | WebText train *paper* | own training split *paper* |",
        "|---|---|---|---|---|---|",
    ]
    sets = report["test_sets"]
    for name, e in sets.items():
        own = e.get("own_train")
        paper = e.get("paper", {})
        lines.append(
            f"| {e['title']} | {e['ngrams']:,} | {_fmt_pct(e['percent'])} ({_fmt_pct(e['distinct_percent'])}) | "
            + (f"{_fmt_pct(own['percent'])} ({_fmt_pct(own['distinct_percent'])})" if own else "—")
            + f" | {_fmt_pct(paper.get('webtext_train_percent'))} | {_fmt_pct(paper.get('own_train_percent'))} |"
        )
    for name, (title, webtext, own_split) in PAPER_TABLE6.items():
        if name not in sets:
            lines.append(f"| {title} | — | — | — | {_fmt_pct(webtext)} | {_fmt_pct(own_split)} |")
    lines.append("")

    with_examples = {k: e for k, e in sets.items() if "examples" in e}
    if with_examples:
        t = report["dirty_threshold"]
        lines += [
            "## Overlap per example",
            "",
            f"An example's overlap is the share of its {n}-grams found; *dirty* means above {100 * t:g}%.",
            "Files: `examples/NAME.jsonl`; distribution: `overlap_histogram.png`.",
            "",
            f"| Test set | examples | mean overlap | with any overlap | dirty (> {100 * t:g}%) | max overlap | *paper* |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, e in with_examples.items():
            x = e["examples"]
            lines.append(
                f"| {e['title']} | {x['count']:,} | {_fmt_pct(x['mean_overlap_percent'])} | {x['any_overlap']:,} | {x['dirty']:,} | "
                f"{_fmt_pct(x['max_overlap_percent'])} | {x.get('paper', '')} |"
            )
        lines.append("")

    judged = {k: e["clean_dirty"] for k, e in sets.items() if "clean_dirty" in e}
    if judged:
        lines += [
            f"## Metrics on all, clean and dirty examples (`{report['results']}`)",
            "",
            "Recomputed from the run's per-example records: *clean* examples have no overlap, *dirty* ones more than",
            f"{100 * report['dirty_threshold']:g}%. The paper: LAMBADA accuracy 63.2% on all examples, 62.9% without any overlap.",
            "",
            "| Test set | metric | all | clean | dirty | reported by gpt2 eval |",
            "|---|---|---|---|---|---|",
        ]
        for name, c in judged.items():
            title = sets[name]["title"]
            if "skipped" in c:
                lines.append(f"| {title} | skipped: {c['skipped']} | | | | |")
                continue
            for mid, value in c["all"]["metrics"].items():
                cells = [f"{_fmt(c[s]['metrics'].get(mid))} ({c[s]['examples']:,})" for s in ("all", "clean", "dirty")]
                lines.append(f"| {title} | {mid} | " + " | ".join(cells) + f" | {_fmt(c['reported'].get(mid))} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def histogram(fractions: dict[str, np.ndarray], threshold: float, path: Path) -> Path:
    """One panel per test set: how many examples have each overlap (5% bins, log scale); the dirty threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(fractions))
    rows = math.ceil(len(fractions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, x) in zip(axes.flat, fractions.items()):
        percent = 100 * x
        ax.hist(percent[percent > 0], bins=np.arange(0, 105, 5), color="C0")
        ax.axvline(100 * threshold, color="C3", linestyle="--", linewidth=1)
        if (percent > 0).any():
            ax.set_yscale("log")
        ax.set_xlim(0, 100)
        ax.set_title(f"{name}: {int((x == 0).sum()):,} of {len(x):,} without overlap", fontsize=9)
        ax.set_xlabel("n-grams found (%)")
        ax.set_ylabel("examples")
    for ax in list(axes.flat)[len(fractions) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
