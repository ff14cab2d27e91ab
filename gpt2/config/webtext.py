"""Settings of the WebText commands (gpt2 webtext ...): each stage's, and the whole build's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt2.config.core import check_seed, opt
from gpt2.errors import ConfigError


# ---- WebText corpus building (gpt2 webtext ...) -----------------------------------
#
# Each stage has a settings class (what shapes its output, also a section of `gpt2 webtext build`'s
# config) and a command class that adds its input and output folders and the engine.


@dataclass(kw_only=True)
class WebTextEngine:
    """Where a stage runs: a process pool here, or a Dask cluster (gpt2/webtext/engine.py)."""

    engine: Literal["local", "dask"] = opt("local", "local: a process pool on this machine; dask: a Dask cluster (a new "
                                                    "LocalCluster, or --scheduler)")
    workers: int = opt(0, "processes (local pool, or LocalCluster workers); 0: one per CPU core")
    scheduler: str | None = opt(None, "address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786 (implies --engine dask)")

    def check_engine(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 (one per core) or more, got {self.workers}")
        if self.scheduler is not None and not self.scheduler.strip():
            raise ConfigError("--scheduler must not be empty; give tcp://HOST:8786, or leave it out")


@dataclass(kw_only=True)
class WebTextLinks:
    """Which Reddit links are kept (GPT-2 paper section 2.1: outbound links with at least 3 karma)."""

    min_karma: int = opt(3, "keep URLs whose karma is at least this (the paper: 3)")
    karma: Literal["max", "sum"] = opt("max", "karma of a URL posted several times: the best post's score, or the sum")
    shards: int = opt(16, "link shards written (the unit of work of every later stage)")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        if self.shards < 1 or self.shards > 100_000:
            raise ConfigError(f"links.shards must be between 1 and 100,000, got {self.shards}")


@dataclass(kw_only=True)
class WebTextFetch:
    """How pages are downloaded: politely, in bounded time and size, with retries."""

    concurrency: int = opt(64, "connections open at once, in all")
    max_per_host: int = opt(2, "connections open at once to one host")
    per_host_delay: float = opt(1.0, "seconds between two requests to one host")
    connect_timeout: float = opt(10.0, "seconds to connect")
    read_timeout: float = opt(20.0, "seconds without a byte of the response")
    total_timeout: float = opt(60.0, "seconds for a whole response")
    retries: int = opt(2, "retries after a timeout, a cut connection, 429, 500, 502, 503 or 504 (with backoff; Retry-After honoured)")
    backoff: float = opt(1.0, "seconds before the first retry, doubled each time")
    max_retry_after: float = opt(120.0, "give up on a page whose Retry-After asks for longer than this")
    max_bytes: int = opt(5_000_000, "largest body read; bigger pages are dropped")
    max_redirects: int = opt(5, "redirects followed")
    robots: bool = opt(True, "honour robots.txt (fetched once per host)")
    user_agent: str = opt("gpt2-webtext/0.1 (language-model corpus research)", "the User-Agent sent; add a way to contact you")
    proxy: str | None = opt(None, "HTTP proxy for every request, e.g. http://127.0.0.1:3128")
    limit: int | None = opt(None, "fetch at most this many URLs per shard (a trial run)")

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_per_host < 1:
            raise ConfigError("--concurrency and --max-per-host must be at least 1")
        for name in ("per_host_delay", "backoff", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.retries < 0 or self.max_redirects < 0:
            raise ConfigError("--retries and --max-redirects must be 0 or more")
        if self.max_bytes < 1024:
            raise ConfigError(f"--max-bytes must be at least 1024, got {self.max_bytes}")
        if self.proxy is not None and not self.proxy.startswith(("http://", "https://")):
            raise ConfigError(f"--proxy must be an http:// or https:// URL, got {self.proxy!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be positive, got {self.limit}")
        if not self.user_agent.strip():
            raise ConfigError("--user-agent must not be empty: sites should know who is asking")


@dataclass(kw_only=True)
class WebTextExtract:
    """How the main text is taken out of each page."""

    extractor: Literal["trafilatura", "resiliparse", "newspaper"] = opt(
        "trafilatura", "trafilatura (best on public benchmarks), resiliparse (fast) or newspaper (newspaper4k, the paper's Newspaper)"
    )
    page_timeout: float = opt(30.0, "seconds one page may take; a page that takes longer is dropped (its worker is restarted)")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        if self.page_timeout <= 0:
            raise ConfigError(f"--page-timeout must be positive, got {self.page_timeout}")


@dataclass(kw_only=True)
class WebTextClean:
    """Language identification, length bounds and heuristic quality rules (gpt2/webtext/clean.py lists them)."""

    languages: list[str] = opt(["en"], "keep documents in these languages (ISO 639-1; the paper: English only)")
    min_language_score: float = opt(0.65, "the language identifier's probability the document needs")
    min_words: int = opt(50, "fewest words in a document")
    max_words: int = opt(100_000, "most words in a document")
    rules: bool = opt(True, "apply the quality rules (Gopher / C4 style); off: only language and length")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        if not self.languages or any(len(x) not in (2, 3) or not x.isalpha() for x in self.languages):
            raise ConfigError(f"--languages takes ISO 639 codes such as en, de; got {' '.join(self.languages) or 'none'}")
        if not 0.0 <= self.min_language_score <= 1.0:
            raise ConfigError(f"--min-language-score must be in [0, 1], got {self.min_language_score}")
        if self.min_words < 0 or self.max_words < max(self.min_words, 1):
            raise ConfigError(f"--min-words ({self.min_words}) and --max-words ({self.max_words}) must satisfy 0 <= min <= max")


@dataclass(kw_only=True)
class WebTextDedup:
    """Exact and near-duplicate removal: MinHash LSH over word n-grams, the copy with the most karma kept."""

    exact: bool = opt(True, "drop documents whose normalised text is the same")
    near: bool = opt(True, "drop near-duplicates found by MinHash LSH")
    ngram: int = opt(5, "words per shingle (FineWeb: 5)")
    bands: int = opt(14, "LSH bands (FineWeb: 14)")
    rows: int = opt(8, "MinHash values per band (FineWeb: 8); two documents of Jaccard similarity s share a band with "
                       "probability 1 - (1 - s^rows)^bands")
    seed: int = opt(1, "seeds the MinHash functions")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise ConfigError("--ngram, --bands and --rows must be at least 1")
        if self.bands * self.rows > 1024:
            raise ConfigError(f"--bands x --rows ({self.bands * self.rows}) must be at most 1024 hash functions")


@dataclass(kw_only=True)
class WebTextLinksConfig(WebTextEngine, WebTextLinks):
    """`gpt2 webtext links`: Pushshift submission dumps -> links with at least 3 karma (JSON lines + stats.json)."""

    input: list[Path] = opt(help="Pushshift RS_* dumps (.zst, .xz, .bz2, .gz or .jsonl), or folders of them")
    out: Path = opt(help="folder for links-NNNNN.jsonl and stats.json (new, empty, or an interrupted run's)")

    def __post_init__(self) -> None:
        WebTextLinks.__post_init__(self)
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one dump")


@dataclass(kw_only=True)
class WebTextFetchConfig(WebTextEngine, WebTextFetch):
    """`gpt2 webtext fetch`: download the pages of links shards (or of a file of URLs, one per line) into WARC files."""

    links: list[Path] = opt(help="the output folder of `gpt2 webtext links`, links shards, or text files of URLs (one per line)")
    out: Path = opt(help="folder for the WARC files (fetch-NNNNN.warc.gz) and stats.json")

    def __post_init__(self) -> None:
        WebTextFetch.__post_init__(self)
        self.check_engine()
        if not self.links:
            raise ConfigError("--links needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextExtractConfig(WebTextEngine, WebTextExtract):
    """`gpt2 webtext extract`: WARC files -> documents (JSON lines of url, text, title, karma, ...)."""

    warc: list[Path] = opt(help="the output folder of `gpt2 webtext fetch`, or .warc / .warc.gz files")
    out: Path = opt(help="folder for docs-NNNNN.jsonl and stats.json")

    def __post_init__(self) -> None:
        WebTextExtract.__post_init__(self)
        self.check_engine()
        if not self.warc:
            raise ConfigError("--warc needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextCleanConfig(WebTextEngine, WebTextClean):
    """`gpt2 webtext clean`: keep the documents in the chosen languages that pass the length and quality rules."""

    input: list[Path] = opt(help="the output folder of `gpt2 webtext extract`, or its shards")
    out: Path = opt(help="folder for the kept documents and stats.json (drops by rule)")

    def __post_init__(self) -> None:
        WebTextClean.__post_init__(self)
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextDedupConfig(WebTextEngine, WebTextDedup):
    """`gpt2 webtext dedup`: drop exact and near-duplicate documents, keeping the copy with the most karma."""

    input: list[Path] = opt(help="the output folder of `gpt2 webtext clean` (or extract), or its shards")
    out: Path = opt(help="folder for the unique documents and stats.json")

    def __post_init__(self) -> None:
        WebTextDedup.__post_init__(self)
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextPrepare:
    """The token shards made from the final documents (`gpt2 prepare`), with the held-out split by URL."""

    tokenizer: str = opt("gpt2", "tokenizer directory, or 'gpt2' for OpenAI's GPT-2 tokenizer")
    val_fraction: float = opt(0.05, "fraction of documents held out, chosen by a keyed hash of the URL (the paper: 5%)")
    seed: int = opt(1337, "keys the hash that chooses the held-out documents")
    shard_tokens: int = opt(100_000_000, "tokens per shard file")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"prepare.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens < 1024:
            raise ConfigError(f"prepare.shard_tokens must be at least 1024, got {self.shard_tokens}")


@dataclass(kw_only=True)
class WebTextDecontaminate:
    """Removing the evaluation sets' text from the final documents (GPT-3's 13-gram rule; gpt2 overlap decontaminate)."""

    tasks: list[str] = opt([], "evaluation tasks or groups whose text is cut out, e.g. paper (empty: no such stage)")
    n: int = opt(13, "words per n-gram of the rule (GPT-3: 13)")
    data_dir: Path | None = opt(None, "folder of local copies of the evaluation datasets (as gpt2 eval --data-dir)")

    def __post_init__(self) -> None:
        self.tasks = [t.strip() for item in self.tasks for t in str(item).split(",") if t.strip()]
        if not 1 <= self.n <= 64:
            raise ConfigError(f"decontaminate.n must be between 1 and 64, got {self.n}")


@dataclass(kw_only=True)
class WebTextBuildConfig(WebTextEngine):
    """`gpt2 webtext build`: every stage in order (links, fetch, extract, clean, dedup, with decontaminate.tasks a
    decontaminate stage, then token shards), each resumable,
    then a report (counts per stage, drops by reason, language and length histograms, top domains)."""

    input: list[Path] = opt(help="Pushshift RS_* dumps, or folders of them")
    out: Path = opt(help="folder holding one sub-folder per stage, the token shards (tokens/) and report.md")
    links: WebTextLinks = opt(factory=WebTextLinks)
    fetch: WebTextFetch = opt(factory=WebTextFetch)
    extract: WebTextExtract = opt(factory=WebTextExtract)
    clean: WebTextClean = opt(factory=WebTextClean)
    dedup: WebTextDedup = opt(factory=WebTextDedup)
    decontaminate: WebTextDecontaminate = opt(factory=WebTextDecontaminate)
    prepare: WebTextPrepare = opt(factory=WebTextPrepare)

    def __post_init__(self) -> None:
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one dump")
