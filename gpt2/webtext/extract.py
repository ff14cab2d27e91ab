"""`gpt2 webtext extract`: WARC files -> documents, the main text of each HTML page.

GPT-2 paper, section 2.1: "we use a combination of the Dragnet and Newspaper
content extractors". Dragnet is unmaintained; we use trafilatura by
default, the leader of the public
main-text extraction benchmarks, with newspaper4k (the maintained Newspaper)
and resiliparse (much faster, less precise) as options. docs/webtext.md gives
each one's measured quality on real pages.

Each page is decoded before extraction: valid UTF-8 is UTF-8 (a wrong header
is common, valid UTF-8 by chance is not), else the charset of the HTTP header,
else that of a <meta> tag, else charset-normalizer's guess (windows-1252 when
it reads about as well: the web's default for unlabelled pages).

No page can hang the run: pages are extracted in a worker process, one at a
time, and a page that takes longer than `page_timeout` seconds is dropped and
its worker killed and started again (lxml and the extractors run C code that a
signal or a thread cannot interrupt).

Output per WARC file: `docs-NNNNN.jsonl[.zst]`, rows sorted by URL, with
`url` (the Reddit link), `final_url`, `text`, `title`, `karma`, `fetched`
(the WARC date) and `extractor`; `stats.json` counts pages, documents and
failures by kind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from html import unescape
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.webtext.engine import open_engine
from gpt2.webtext.shards import StageDir, list_shards, shard_suffix, write_json, write_jsonl

log = logging.getLogger(__name__)

WARC_SUFFIXES = (".warc.gz", ".warc")
EXTRACTORS = ("trafilatura", "resiliparse", "newspaper")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_FRAME = struct.Struct("<I")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


# ----------------------------------------------------------------------------
# one page


def _codec(name: str | None) -> str | None:
    import codecs

    if not name:
        return None
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """The text of an HTML body: UTF-8 if valid, else the header's charset, else a <meta> charset, else a guess.

    >>> decode_html("café".encode("latin-1"), "text/html; charset=utf-8")  # a wrong header
    'café'
    """
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    header = re.search(r"charset\s*=\s*([^\s;]+)", content_type or "", re.IGNORECASE)
    meta = _META_CHARSET.search(body[:8192])
    for name in (header.group(1) if header else None, meta.group(1).decode("ascii", "replace") if meta else None):
        codec = _codec(name)
        if codec and codec != "utf-8":
            try:
                return body.decode(codec)
            except UnicodeDecodeError:
                continue
    return body.decode(_guess_charset(body), "replace")


def _guess_charset(body: bytes) -> str:
    """charset-normalizer's guess, except that windows-1252 (the web's default for unlabelled pages, WHATWG
    Encoding) is preferred when it reads about as well as the best guess: short Western texts fit several codecs."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(body[:200_000]))
    if not matches:
        return "cp1252"
    best = min(m.chaos for m in matches)
    for m in matches:
        if m.encoding in ("cp1252", "latin_1", "iso8859_15") and m.chaos <= best + 0.02:
            return "cp1252"
    return min(matches, key=lambda m: m.chaos).encoding


def html_title(html: str) -> str | None:
    """The text of a page's <title>, entities decoded and whitespace collapsed."""
    m = _TITLE.search(html, 0, 200_000)
    return " ".join(unescape(m.group(1)).split()) or None if m else None


def extract_page(html: str, url: str, extractor: str) -> dict | None:
    """{"text", "title"} of one page's main content by `extractor`, or None if it has none."""
    if extractor == "trafilatura":
        import trafilatura
        from trafilatura.settings import use_config

        global _TRAFILATURA_CONFIG
        if _TRAFILATURA_CONFIG is None:
            _TRAFILATURA_CONFIG = use_config()
            _TRAFILATURA_CONFIG.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")  # the worker's watchdog bounds the time instead
        # without trafilatura's metadata (dates, authors, ...): it costs a third more time; the title is read directly
        doc = trafilatura.bare_extraction(html, url=url, include_comments=False, config=_TRAFILATURA_CONFIG)
        text = doc.get("text") if isinstance(doc, dict) else getattr(doc, "text", None)  # a dict in trafilatura 1.x
        return {"text": text, "title": html_title(html)} if text else None
    if extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        tree = HTMLTree.parse(html)
        text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False, list_bullets=False)
        return {"text": text, "title": tree.title} if text.strip() else None
    if extractor == "newspaper":
        try:
            import newspaper
        except ImportError:
            raise GPT2Error("--extractor newspaper needs newspaper4k: pip install 'gpt2-lm[webtext]'") from None
        article = newspaper.Article(url, fetch_images=False)
        article.download(input_html=html)
        article.parse()
        return {"text": article.text, "title": article.title} if article.text.strip() else None
    raise GPT2Error(f"unknown extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}")


_TRAFILATURA_CONFIG = None


# ----------------------------------------------------------------------------
# a worker process with a watchdog


def _send(stream, obj: dict) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def worker_main() -> None:
    """The worker's loop: frames of {"html", "url", "extractor"} in, frames of {"page"} or {"error"} out."""
    fd_in = sys.stdin.buffer.fileno()
    out = sys.stdout.buffer
    while True:
        try:
            (n,) = _FRAME.unpack(_read_exact(fd_in, _FRAME.size))
            job = json.loads(_read_exact(fd_in, n))
        except EOFError:
            return
        try:
            _send(out, {"page": extract_page(job["html"], job["url"], job["extractor"])})
        except Exception as e:  # a page that breaks the extractor is dropped, not the run
            _send(out, {"error": type(e).__name__, "message": str(e)[:300]})


class Watchdog:
    """Extracts pages in a child process; a page over `timeout` seconds gets the child killed and restarted."""

    def __init__(self, extractor: str, timeout: float):
        self.extractor, self.timeout = extractor, timeout
        self.proc: subprocess.Popen | None = None
        self.warm = False  # whether the worker has imported the extractor (its first page pays for that)

    def _start(self) -> None:
        self.warm = False
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from gpt2.webtext.extract import worker_main; worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
            self.proc = None

    def extract(self, html: str, url: str) -> tuple[dict | None, str | None]:
        """(the page, None) or (None, why it failed: 'timeout', 'worker died' or the extractor's exception)."""
        if self.proc is None:
            self._start()
        try:
            _send(self.proc.stdin, {"html": html, "url": url, "extractor": self.extractor})
            fd = self.proc.stdout.fileno()
            ready, _, _ = select.select([fd], [], [], self.timeout + (0 if self.warm else 60))
            if not ready:
                self._kill()
                return None, "timeout"
            (n,) = _FRAME.unpack(_read_exact(fd, _FRAME.size))
            reply = json.loads(_read_exact(fd, n))
            self.warm = True
        except (EOFError, BrokenPipeError, OSError):
            self._kill()
            return None, "worker died"
        if "error" in reply:
            log.debug("%s: %s: %s", url, reply["error"], reply["message"])
            return None, f"extractor error ({reply['error']})"
        return reply["page"], None


# ----------------------------------------------------------------------------
# one WARC file


def iter_responses(path: Path) -> Iterator[dict]:
    """The HTTP responses of a WARC file: url, link, karma, date, content type and body."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    try:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "response":
                    continue
                headers = record.rec_headers
                karma = headers.get_header("WARC-WebText-Karma")
                response = {
                    "final_url": headers.get_header("WARC-Target-URI"),
                    "url": headers.get_header("WARC-WebText-Link") or headers.get_header("WARC-Target-URI"),
                    "karma": int(karma) if karma and karma.lstrip("-").isdigit() else None,
                    "fetched": headers.get_header("WARC-Date"),
                    "content_type": record.http_headers.get_header("Content-Type") if record.http_headers else None,
                    "body": record.content_stream().read(),
                }
                if getattr(record.raw_stream, "limit", 0) > 0:  # the record's block ends before its Content-Length
                    raise EOFError(f"the record of {headers.get_header('WARC-Target-URI')} is cut short")
                yield response
    except (ArchiveLoadFailed, EOFError, OSError, ValueError) as e:
        raise GPT2Error(f"{path} is not a readable WARC file ({e}); fetch it again") from None


def docs_name(warc: Path) -> str:
    """fetch-00003.warc.gz -> docs-00003."""
    return "docs-" + warc.name.split(".")[0].removeprefix("fetch-")


def extract_shard(warc: Path, out_dir: Path, extractor: str, page_timeout: float, compress: bool) -> dict:
    """One WARC file -> its documents; returns counts (a shard already done is not redone)."""
    name = docs_name(warc)
    target = out_dir / f"{name}{shard_suffix(compress)}"
    stats_path = out_dir / f"{name}.stats.json"
    if target.exists() and stats_path.exists():
        return json.loads(stats_path.read_text(encoding="utf-8"))
    counts: Counter = Counter()
    docs = []
    watchdog = Watchdog(extractor, page_timeout)
    try:
        for response in iter_responses(warc):
            counts["pages"] += 1
            html = decode_html(response.pop("body"), response.pop("content_type"))
            page, error = watchdog.extract(html, response["final_url"] or response["url"])
            if error is not None:
                counts[error] += 1
                continue
            if page is None:
                counts["no main text"] += 1
                continue
            docs.append({**response, "title": page["title"], "text": page["text"], "extractor": extractor})
    finally:
        watchdog.close()
    docs.sort(key=lambda d: d["url"])
    counts["documents"] = write_jsonl(target, docs)
    write_json(stats_path, dict(counts))
    return dict(counts)


def extract(cfg, engine=None) -> dict:
    """`gpt2 webtext extract`: returns the statistics it writes to OUT/stats.json.

    `engine`: an engine to run on (build shares one among its stages); by default the config's, opened here.
    """
    t0 = time.perf_counter()
    warcs = list_shards(cfg.warc, WARC_SUFFIXES, "WARC file")
    if cfg.extractor == "newspaper":
        try:
            import newspaper  # noqa: F401
        except ImportError:
            raise GPT2Error("--extractor newspaper needs newspaper4k: pip install 'gpt2-lm[webtext]'") from None
    out = StageDir(cfg.out, "extract", {"extractor": cfg.extractor, "compress": cfg.compress})
    with open_engine(cfg, engine) as engine:
        results = engine.map(
            partial(extract_shard, out_dir=out.path, extractor=cfg.extractor, page_timeout=cfg.page_timeout, compress=cfg.compress),
            warcs, desc="extracting",
        )
    counts: Counter = Counter()
    for r in results:
        counts.update(r)
    seconds = time.perf_counter() - t0
    stats = {
        "stage": "extract",
        "extractor": cfg.extractor,
        "pages": counts.pop("pages", 0),
        "documents": counts.pop("documents", 0),
        "dropped": dict(counts.most_common()),
        "seconds": round(seconds, 3),
    }
    out.write_stats(stats)
    log.info("extract (%s): %s pages -> %s documents in %.1f s; dropped %s", cfg.extractor, f"{stats['pages']:,}",
             f"{stats['documents']:,}", seconds, ", ".join(f"{k} {v:,}" for k, v in counts.most_common()) or "none")
    return stats
