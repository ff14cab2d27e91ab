"""`gpt2 webtext build`: every WebText stage in order, then token shards and a report.

GPT-2 paper, section 2.1 end to end: Reddit dumps -> links -> pages -> main
text -> cleaned -> de-duplicated documents, then `gpt2 prepare` (through its
documents stage, gpt2/data/documents.py) turns them into token shards with 5%
held out by a keyed hash of each document's URL (section 3: the held-out
split of WebText): a page's split depends on its URL, not on its text or the
order of the shards, so rebuilding from the same dumps gives the same split.

OUT holds one folder per stage (links/, fetch/, extract/, clean/, dedup/), then
tokens/ (the dataset `gpt2 train` reads) and report.md with report.json,
languages.png and lengths.png. Each stage resumes by itself (per shard), and a
stage whose stats.json exists is finished and skipped (if what shapes its
output is unchanged: SHAPED_BY), so the same command continues an interrupted
build.

The stages are the list STAGES: a stage reads the folder of the one before and
writes its own. With decontaminate.tasks, a decontaminate/ stage follows
(GPT-3's 13-gram rule against those evaluation sets, gpt2/overlap); another
stage would be one more `Stage` in that list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from gpt2 import config as C
from gpt2.data.documents import Document
from gpt2.errors import GPT2Error
from gpt2.webtext.engine import make_engine
from gpt2.webtext.shards import STATS, list_shards, read_jsonl, write_json

log = logging.getLogger(__name__)


def _engine(cfg: C.WebTextBuildConfig) -> dict:
    return {"engine": cfg.engine, "workers": cfg.workers, "scheduler": cfg.scheduler}


def _fields(section: object) -> dict:
    return {k: getattr(section, k) for k in section.__dataclass_fields__}


def _links(cfg: C.WebTextBuildConfig, previous: Path | None, out: Path, engine) -> dict:
    from gpt2.webtext.links import links

    return links(C.WebTextLinksConfig(input=cfg.input, out=out, **_fields(cfg.links), **_engine(cfg)), engine)


def _fetch(cfg: C.WebTextBuildConfig, previous: Path, out: Path, engine) -> dict:
    from gpt2.webtext.fetch import fetch

    return fetch(C.WebTextFetchConfig(links=[previous], out=out, **_fields(cfg.fetch), **_engine(cfg)), engine)


def _extract(cfg: C.WebTextBuildConfig, previous: Path, out: Path, engine) -> dict:
    from gpt2.webtext.extract import extract

    return extract(C.WebTextExtractConfig(warc=[previous], out=out, **_fields(cfg.extract), **_engine(cfg)), engine)


def _clean(cfg: C.WebTextBuildConfig, previous: Path, out: Path, engine) -> dict:
    from gpt2.webtext.clean import clean

    return clean(C.WebTextCleanConfig(input=[previous], out=out, **_fields(cfg.clean), **_engine(cfg)), engine)


def _dedup(cfg: C.WebTextBuildConfig, previous: Path, out: Path, engine) -> dict:
    from gpt2.webtext.dedup import dedup

    return dedup(C.WebTextDedupConfig(input=[previous], out=out, **_fields(cfg.dedup), **_engine(cfg)), engine)


def _decontaminate(cfg: C.WebTextBuildConfig, previous: Path, out: Path, engine) -> dict:
    """GPT-3's 13-gram rule against the chosen evaluation sets (gpt2/overlap/decontaminate.py), shard by shard."""
    from functools import partial

    from gpt2.overlap.decontaminate import decontaminate_shard
    from gpt2.webtext.shards import StageDir

    d = cfg.decontaminate
    folder = StageDir(out, "decontaminate", {"tasks": list(d.tasks), "n": d.n})
    shards = list_shards([previous], DOC_SUFFIXES, "document shard")
    todo = [(s, folder / s.name) for s in shards if not (folder / (s.name + ".stats.json")).exists()]
    engine.map(partial(decontaminate_shard, tasks=tuple(d.tasks), n=d.n, data_dir=d.data_dir), todo, desc="decontaminate")
    stats = {"tasks": list(d.tasks), "n": d.n, "shards": len(shards)}
    for s in shards:  # every shard's counts, those of an earlier, interrupted run included
        for key, value in json.loads((folder / (s.name + ".stats.json")).read_text(encoding="utf-8")).items():
            stats[key] = stats.get(key, 0) + value
    stats["kept"] = sum(1 for s in shards for _ in read_jsonl(folder / s.name))
    stats["dropped"] = {"documents cut into too many pieces": stats.get("dropped_documents", 0),
                        "pieces too short": stats.get("dropped_pieces", 0)}
    folder.write_stats(stats)
    return stats


@dataclass(frozen=True)
class Stage:
    name: str  # also its folder in OUT
    # (config, the previous stage's folder, its folder, the shared engine) -> its statistics
    run: Callable[[C.WebTextBuildConfig, Path | None, Path, object], dict]
    label: str  # what it keeps, for the report
    kept: str = "kept"  # the key of its stats that counts what it keeps
    dropped: str = "dropped"  # the key of its stats that counts what it drops, by reason


STAGES: list[Stage] = [
    Stage("links", _links, "links with enough karma", kept="links"),
    Stage("fetch", _fetch, "pages fetched", kept="pages", dropped="errors"),
    Stage("extract", _extract, "documents extracted", kept="documents"),
    Stage("clean", _clean, "documents cleaned"),
    Stage("dedup", _dedup, "unique documents"),
]
DOC_SUFFIXES = (".jsonl", ".jsonl.zst")
DECONTAMINATE = Stage("decontaminate", _decontaminate, "documents without evaluation text")


def stages(cfg: C.WebTextBuildConfig) -> list[Stage]:
    """The stages of a build: STAGES, then decontamination if evaluation sets are named (decontaminate.tasks)."""
    return STAGES + ([DECONTAMINATE] if cfg.decontaminate.tasks else [])


class WebTextDocuments:
    """The final documents as `gpt2 prepare` reads them (gpt2.data.documents.Documents): text, with the URL as id."""

    def __init__(self, folder: Path):
        self.files = [p for p in list_shards([folder], DOC_SUFFIXES, "document shard") if p.name.startswith("docs-")]

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            for doc in read_jsonl(path):
                if doc["text"].strip():
                    yield Document(doc["text"], doc["url"])

    def inputs(self) -> list[dict]:
        return [{"path": str(p), "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in self.files]

    def settings(self) -> dict:
        return {"text_documents": "file", "jsonl_field": "text", "id_field": "url"}


def make_tokens(cfg: C.WebTextBuildConfig, documents: Path, out: Path) -> dict:
    """The final documents -> token shards with the held-out split by URL (gpt2 prepare's function)."""
    from gpt2.data.prepare import prepare

    p = cfg.prepare
    prep = C.PrepareConfig(input=[documents], out=out, tokenizer=p.tokenizer, val_fraction=p.val_fraction, seed=p.seed,
                           shard_tokens=p.shard_tokens, id_field="url", workers=cfg.workers)
    return prepare(prep, WebTextDocuments(documents))


# ----------------------------------------------------------------------------
# the report


def _top_domains(folder: Path, n: int = 25) -> list[tuple[str, int]]:
    domains: Counter = Counter()
    for path in WebTextDocuments(folder).files:
        for doc in read_jsonl(path):
            domains[urlsplit(doc["url"]).hostname or ""] += 1
    return domains.most_common(n)


def _plots(out: Path, clean_stats: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    languages = list(clean_stats.get("languages", {}).items())[:20]
    if languages:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar([k for k, _ in languages], [v for _, v in languages])
        ax.set_ylabel("documents (before cleaning)")
        ax.set_title("Languages of the extracted documents (py3langid)")
        fig.tight_layout()
        fig.savefig(out / "languages.png", dpi=100)
        plt.close(fig)
        made.append("languages.png")
    lengths = clean_stats.get("log2_words", {})
    if lengths:
        bins = sorted(int(k) for k in lengths)
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar([f"{2**b:,}" for b in bins], [lengths[str(b)] for b in bins])
        ax.set_xlabel("words (at least)")
        ax.set_ylabel("documents kept")
        ax.set_title("Document lengths after cleaning")
        fig.tight_layout()
        fig.savefig(out / "lengths.png", dpi=100)
        plt.close(fig)
        made.append("lengths.png")
    return made


def write_report(out: Path, stats: dict[str, dict], manifest: dict, final: Path) -> dict:
    """report.json and report.md: counts per stage, drops by reason, plots, top domains."""
    links = stats["links"]
    rows = [("Reddit submissions", links["submissions"], "")]
    for stage in STAGES + ([DECONTAMINATE] if DECONTAMINATE.name in stats else []):
        s = stats[stage.name]
        dropped = dict(s[stage.dropped])
        if stage.name == "links":
            dropped[f"below {links['min_karma']} karma ({links['karma']})"] = links[f"below_{links['min_karma']}_karma"]
        rows.append((f"{stage.name}: {stage.label}", s[stage.kept], ", ".join(f"{k} {v:,}" for k, v in dropped.items() if v)))
    splits = manifest["splits"]
    plots = _plots(out, stats.get("clean", {}))
    domains = _top_domains(final)
    report = {"stages": stats, "tokens": {s: {k: splits[s][k] for k in ("documents", "tokens", "bytes")} for s in splits},
              "top_domains": domains, "plots": plots}
    write_json(out / "report.json", report)
    lines = ["# WebText build report", "", "| stage | kept | dropped, by reason |", "|---|---:|---|"]
    lines += [f"| {name} | {n:,} | {why or '-'} |" for name, n, why in rows]
    lines += ["", "| split | documents | tokens | bytes |", "|---|---:|---:|---:|"]
    lines += [f"| {s} | {splits[s]['documents']:,} | {splits[s]['tokens']:,} | {splits[s]['bytes']:,} |" for s in splits]
    lines += ["", "## Top domains", "", "| domain | documents |", "|---|---:|"] + [f"| {d} | {n:,} |" for d, n in domains]
    lines += [""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "Seconds per stage: " + ", ".join(f"{k} {v.get('seconds', 0):.1f}" for k, v in stats.items()), ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return report


# ----------------------------------------------------------------------------
# the command


# What shapes each stage's output, as fields of the build's config ("links.min_karma"; "input": the dumps). A stage
# finished before is skipped only if these are what they were; how a stage ran (workers, timeouts, ...) may change.
SHAPED_BY = {
    "links": ("input", "links.min_karma", "links.karma", "links.shards", "links.compress"),
    "fetch": ("fetch.limit", "fetch.robots", "fetch.max_bytes", "fetch.max_redirects"),
    "extract": ("extract.extractor", "extract.compress"),
    "clean": ("clean.languages", "clean.min_language_score", "clean.min_words", "clean.max_words", "clean.rules", "clean.compress"),
    "dedup": ("dedup.exact", "dedup.near", "dedup.ngram", "dedup.bands", "dedup.rows", "dedup.seed", "dedup.compress"),
    "decontaminate": ("decontaminate.tasks", "decontaminate.n"),
}


_UNSET = object()


def _setting(config: dict, dotted: str) -> object:
    for key in dotted.split("."):
        config = config.get(key, _UNSET) if isinstance(config, dict) else _UNSET
    return config


def _shaping(config: dict, field: str, cfg: C.WebTextBuildConfig) -> object:
    """A setting of SHAPED_BY as written in a build's config.toml, comparable across runs: the dumps as resolved
    paths; a field the file leaves out as its default (TOML cannot hold None; a field newer than the file)."""
    value = _setting(config, field)
    if field == "input":
        return sorted(str(Path(p).resolve()) for p in value)
    if value is _UNSET:
        section, name = field.split(".")
        return C.to_dict(type(getattr(cfg, section))())[name]
    return value


def check_stages_on_disk(cfg: C.WebTextBuildConfig, out: Path, run: list[Stage]) -> None:
    """Refuse to continue a build whose stages were made (or begun) with other settings, or out of order.

    OUT/config.toml (written by the build before) says how the stages on disk were made; a stage finished after
    one that is not (its input deleted, to be made again) would be stale."""
    finished = [(out / s.name / STATS).exists() for s in run]
    for i, stage in enumerate(run):
        if finished[i] and not all(finished[:i]):
            missing = run[finished.index(False)].name
            raise GPT2Error(f"{out / stage.name} is finished but {out / missing}, before it, is not: delete {out / stage.name} "
                            f"(and the stages after it) so that it is made again from the new {missing}, or give a new --out")
    try:
        before = C.load_toml(out / "config.toml")
    except (OSError, C.ConfigError):
        return  # no build wrote here before, or stages run one by one: nothing to compare
    now = C.to_dict(cfg)
    for i, stage in enumerate(run):
        if not (out / stage.name).is_dir() or not any((out / stage.name).iterdir()):
            continue
        for field in SHAPED_BY.get(stage.name, ()):
            if _setting(before, field.split(".")[0]) is _UNSET:
                continue  # a section the old file does not have: not recorded
            old, new = _shaping(before, field, cfg), _shaping(now, field, cfg)
            if old != new:
                later = [s.name for s in run[i + 1 :]]
                raise GPT2Error(f"{out / stage.name} was made with {field}={old!r}, not {new!r}: delete {out / stage.name}"
                                + (f" and the stages after it ({', '.join(later)})" if later else "")
                                + " to make them again with the new setting, or give a new --out")


def build(cfg: C.WebTextBuildConfig) -> dict:
    """`gpt2 webtext build`: returns the report it writes to OUT/report.json."""
    t0 = time.perf_counter()
    if cfg.decontaminate.tasks:  # an unknown task or a missing evaluation set is said now, not after hours of fetching
        from gpt2.overlap.decontaminate import for_tasks

        for_tasks(tuple(cfg.decontaminate.tasks), cfg.decontaminate.n, cfg.decontaminate.data_dir)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise GPT2Error(f"--out {out} is a file; give a folder")
    known = {s.name for s in STAGES} | {DECONTAMINATE.name, "tokens", "report.md", "report.json", "languages.png", "lengths.png", "config.toml"}
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in known)
        if foreign:
            raise GPT2Error(f"--out {out} holds {foreign[0]}, which `gpt2 webtext build` did not write; give a new or empty folder")
    run = stages(cfg)
    check_stages_on_disk(cfg, out, run)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(C.to_toml(cfg), encoding="utf-8")
    stats: dict[str, dict] = {}
    previous: Path | None = None
    with tqdm(total=len(run) + 1, unit="stage", desc="webtext", file=sys.stderr, disable=None) as bar, make_engine(cfg) as engine:
        for stage in run:
            folder = out / stage.name
            done = folder / STATS
            if done.exists():
                stats[stage.name] = json.loads(done.read_text(encoding="utf-8"))
                log.info("%s: finished before, skipped", stage.name)
            else:
                bar.set_postfix_str(stage.name)
                stats[stage.name] = stage.run(cfg, previous, folder, engine)
            previous = folder
            bar.update(1)
        if stats[run[-1].name].get("kept") == 0:
            raise GPT2Error(f"no document is left after the {run[-1].name} stage; see the stats.json of each stage in {out}")
        bar.set_postfix_str("tokens")
        manifest = make_tokens(cfg, previous, out / "tokens")
        bar.update(1)
    report = write_report(out, stats, manifest, previous)
    log.info("webtext build: %s documents, %s training + %s held-out tokens in %s (%.0f s); report: %s",
             f"{manifest['documents']['total']:,}", f"{manifest['splits']['train']['tokens']:,}", f"{manifest['splits']['val']['tokens']:,}",
             out / "tokens", time.perf_counter() - t0, out / "report.md")
    return report
