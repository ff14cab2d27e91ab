"""`gpt2 webtext fetch`: links -> the raw HTML responses, in WARC files.

GPT-2 paper, section 2.1: the pages behind the Reddit links were downloaded
(their scraper is not public). Ours is asyncio HTTP (aiohttp) that behaves
as a polite crawler should and never hangs:

- at most `concurrency` connections in all, `max_per_host` to one host, and
  `per_host_delay` seconds between two requests to a host;
- robots.txt honoured, fetched once per host (RFC 9309: a 4xx robots.txt
  allows everything, an unreachable one or a 5xx forbids everything);
- connect, read and total timeouts; retries with exponential backoff after
  timeouts, cut connections, 429, 500, 502, 503 and 504, waiting as long as
  a `Retry-After` header asks (up to `max_retry_after`);
- bodies above `max_bytes` dropped, only HTML kept (`text/html`,
  `application/xhtml+xml`, or an untyped body that starts like HTML),
  at most `max_redirects` redirects, followed one by one, each target checked
  against the blocklist, Wikipedia (links.py) and its robots.txt before it is
  requested;
- TLS certificates verified, an identifying User-Agent, an optional proxy.

Responses are written as WARC records (warcio), gzip-compressed one by one, so
extraction can be re-run without fetching again. Each shard of links gives one
`fetch-NNNNN.warc.gz`. While a shard is fetched its WARC file grows as
`....warc.gz.part`, and each finished URL is appended to `....log.jsonl` with
the WARC's length after it. A re-run after kill -9 cuts the WARC back to the
last logged length (dropping a record written but not logged) and fetches only
the URLs the log lacks: nothing is lost, no URL is written twice.

With the local engine every shard is fetched in one event loop in this
process, so the limits hold for the whole run; with Dask each shard is a task
(links shards are cut by host, so a host's limits still hold).
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import logging
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from tqdm import tqdm

from gpt2.errors import GPT2Error
from gpt2.webtext.engine import open_engine
from gpt2.webtext.links import blocked, normalize_url
from gpt2.webtext.shards import StageDir, list_shards, open_lines, write_json

log = logging.getLogger(__name__)

LINK_SUFFIXES = (".jsonl", ".jsonl.zst", ".txt")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
HTML_TYPES = ("text/html", "application/xhtml+xml")
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309: parse at least 500 KiB


@dataclass
class Link:
    url: str
    karma: int | None = None


class Failed(Exception):
    """A page that is not fetched, and why (the kind counted in the statistics)."""

    def __init__(self, kind: str, retry: bool = False, wait: float | None = None):
        super().__init__(kind)
        self.kind, self.retry, self.wait = kind, retry, wait


# ----------------------------------------------------------------------------
# inputs


def read_links(path: Path) -> tuple[list[Link], int]:
    """The links of a links shard (JSON lines with `url`, `karma`) or a text file of URLs; and how many lines were invalid."""
    links: dict[str, Link] = {}
    invalid = 0
    for line in open_lines(path):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if line.startswith(b"{"):
            try:
                row = json.loads(line)
                url, karma = normalize_url(row["url"]), row.get("karma")
            except (ValueError, KeyError, TypeError, AttributeError):
                url, karma = None, None
        else:
            url, karma = normalize_url(line.decode("utf-8", "replace")), None
        if url is None:
            invalid += 1
        elif url not in links:
            links[url] = Link(url, karma if isinstance(karma, int) else None)
    return list(links.values()), invalid


def shard_name(source: Path) -> str:
    """links-00003.jsonl -> fetch-00003; urls.txt -> fetch-urls."""
    stem = source.name.split(".")[0]
    return "fetch-" + stem.removeprefix("links-")


def check_proxy(proxy: str | None, timeout: float) -> None:
    """A one-line error, before any work, if the proxy does not accept connections."""
    if proxy is None:
        return
    parts = urlsplit(proxy)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise GPT2Error(f"the proxy {proxy} is unreachable ({e}); check --proxy, or leave it out") from None


# ----------------------------------------------------------------------------
# the crawler


class _Host:
    """One host's politeness: a connection limit, a delay between requests, its robots.txt."""

    def __init__(self, max_per_host: int):
        self.slots = asyncio.Semaphore(max_per_host)
        self.lock = asyncio.Lock()
        self.next_time = 0.0
        self.robots: asyncio.Future | None = None


class Crawler:
    """Fetches pages with the limits of a `WebTextFetch` config; `get(link)` returns the response or raises `Failed`."""

    def __init__(self, cfg):
        import aiohttp

        self.cfg = cfg
        self.aiohttp = aiohttp
        self.hosts: dict[str, _Host] = {}
        self.slots = asyncio.Semaphore(cfg.concurrency)
        timeout = aiohttp.ClientTimeout(total=cfg.total_timeout, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
        self.session = aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.max_per_host, ssl=True),
            headers={"User-Agent": cfg.user_agent, "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"},
            auto_decompress=True,
            trust_env=False,
        )

    async def close(self) -> None:
        await self.session.close()

    def _host(self, host: str) -> _Host:
        if host not in self.hosts:
            self.hosts[host] = _Host(self.cfg.max_per_host)
        return self.hosts[host]

    async def _polite(self, host: _Host) -> None:
        """Wait for this host's next turn (per_host_delay after the previous request started)."""
        async with host.lock:
            now = time.monotonic()
            if host.next_time > now:
                await asyncio.sleep(host.next_time - now)
            host.next_time = time.monotonic() + self.cfg.per_host_delay

    async def _request(self, url: str, limit: int) -> tuple[int, str, dict, bytes]:
        """One GET, no redirect followed: status, URL, headers, body (at most `limit` bytes, else Failed)."""
        aiohttp = self.aiohttp
        try:
            async with self.session.get(url, allow_redirects=False, proxy=self.cfg.proxy) as resp:
                headers = {k: v for k, v in resp.headers.items()}
                length = resp.content_length
                if length is not None and length > limit:
                    raise Failed("too large")
                if resp.status != 200:
                    return resp.status, str(resp.url), headers, b""
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > limit:
                        raise Failed("too large")
                return resp.status, str(resp.url), headers, bytes(body)
        except Failed:
            raise
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError):
            raise Failed("tls") from None
        except aiohttp.ClientHttpProxyError:
            raise Failed("proxy refused") from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlRedirectClientError):
            raise Failed("invalid url") from None
        except asyncio.TimeoutError:
            raise Failed("timeout", retry=True) from None
        except aiohttp.ClientConnectorDNSError:
            raise Failed("dns") from None
        except aiohttp.ClientConnectorError:
            raise Failed("connect", retry=True) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            raise Failed("cut connection", retry=True) from None
        except aiohttp.ClientError as e:
            raise Failed(f"http error ({type(e).__name__})") from None

    async def _robots(self, scheme: str, host_name: str, host: _Host) -> RobotFileParser | bool:
        """robots.txt of a host, once: a parser, or True (everything allowed) / False (nothing)."""
        if host.robots is None:
            host.robots = asyncio.get_running_loop().create_future()
            try:
                async with host.slots:
                    await self._polite(host)
                    status, _, _, body = await self._request(f"{scheme}://{host_name}/robots.txt", ROBOTS_MAX_BYTES)
                if 300 <= status < 500:  # RFC 9309: unavailable (4xx; here also a redirect, not followed) allows all
                    result: RobotFileParser | bool = True
                elif status == 200:
                    result = RobotFileParser()
                    result.parse(body.decode("utf-8", "replace").splitlines())
                else:
                    result = False
            except Failed as e:
                result = e.kind == "too large"  # an oversized robots.txt is ignored; an unreachable one forbids
            host.robots.set_result(result)
        return await host.robots

    async def _allowed(self, url: str) -> _Host:
        """The host of `url`, after checking that its robots.txt lets us fetch `url`."""
        parts = urlsplit(url)
        host = self._host(parts.netloc)
        if self.cfg.robots:
            robots = await self._robots(parts.scheme, parts.netloc, host)
            if robots is False or (robots is not True and not robots.can_fetch(self.cfg.user_agent, url)):
                raise Failed("robots.txt")
        return host

    async def _fetch_once(self, url: str) -> tuple[int, str, dict, bytes]:
        """GET `url` with retries (backoff, Retry-After) on timeouts, cut connections and 429/5xx."""
        cfg = self.cfg
        attempt = 0
        while True:
            host = await self._allowed(url)
            try:
                async with self.slots, host.slots:
                    await self._polite(host)
                    status, final, headers, body = await self._request(url, cfg.max_bytes)
                if status in RETRY_STATUS:
                    raise Failed(f"http {status}", retry=True, wait=_retry_after(headers.get("Retry-After")))
                return status, final, headers, body
            except Failed as e:
                if not e.retry or attempt >= cfg.retries:
                    raise
                wait = e.wait if e.wait is not None else cfg.backoff * 2**attempt
                if wait > cfg.max_retry_after:
                    raise Failed(f"{e.kind} (Retry-After {wait:.0f} s)") from None
                attempt += 1
                await asyncio.sleep(wait)

    async def get(self, link: Link) -> tuple[str, int, dict, bytes]:
        """The page of a link: (final URL, status, headers, body). Redirects are followed one by one, each
        target checked against the blocklist, Wikipedia and its robots.txt before it is requested."""
        url, seen = link.url, {link.url}
        for _ in range(self.cfg.max_redirects + 1):
            status, final, headers, body = await self._fetch_once(url)
            if status in (301, 302, 303, 307, 308) and headers.get("Location"):
                target = normalize_url(urljoin(url, headers["Location"]))
                if target is None:
                    raise Failed("invalid redirect")
                reason = blocked(target)
                if reason is not None:
                    raise Failed(f"{reason} after redirect")
                if target in seen:
                    raise Failed("redirect loop")
                seen.add(target)
                url = target
                continue
            if status != 200:
                raise Failed(f"http {status}")
            if not _is_html(headers.get("Content-Type"), body):
                raise Failed("not html")
            return final, status, headers, body
        raise Failed("too many redirects")


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number, or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_html(content_type: str | None, body: bytes) -> bool:
    if content_type:
        return content_type.split(";")[0].strip().lower() in HTML_TYPES
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


# ----------------------------------------------------------------------------
# WARC output, resumable


class _ShardWriter:
    """The WARC file of one shard of links, and its log of finished URLs."""

    def __init__(self, out_dir: Path, source: Path):
        name = shard_name(source)
        self.final = out_dir / f"{name}.warc.gz"
        self.part = out_dir / f"{name}.warc.gz.part"
        self.log_path = out_dir / f"{name}.log.jsonl"
        self.stats_path = out_dir / f"{name}.stats.json"
        self.done: dict[str, dict] = {}

    def open(self) -> None:
        """Read the log of an interrupted run and cut the WARC file back to its last logged record."""
        end = 0
        if self.log_path.exists():
            lines = self.log_path.read_bytes().split(b"\n")
            good = []
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a line cut by kill -9: everything after it is dropped too
                good.append(line)
                self.done[entry["url"]] = entry
                end = entry["end"]
            with open(self.log_path, "wb") as f:
                f.write(b"".join(line + b"\n" for line in good))
        if not self.part.exists() and self.final.exists():  # killed after the rename, before the statistics
            os.replace(self.final, self.part)
        if not self.part.exists() and end:
            raise GPT2Error(f"{self.log_path} lists fetched pages but {self.part} is gone; delete the log to fetch the shard again")
        with open(self.part, "ab") as f:
            f.truncate(end)
        self.warc = open(self.part, "ab")
        self.log = open(self.log_path, "ab")

    def write(self, link: Link, result: tuple | None, kind: str | None) -> None:
        from warcio.statusandheaders import StatusAndHeaders
        from warcio.warcwriter import WARCWriter

        if result is not None:
            final, status, headers, body = result
            kept = [(k, v) for k, v in headers.items() if k.lower() not in ("content-encoding", "transfer-encoding", "content-length")]
            kept.append(("Content-Length", str(len(body))))
            http = StatusAndHeaders(f"{status} OK", kept, protocol="HTTP/1.1")
            warc_headers = {"WARC-WebText-Link": link.url}
            if link.karma is not None:
                warc_headers["WARC-WebText-Karma"] = str(link.karma)
            writer = WARCWriter(self.warc, gzip=True)
            record = writer.create_warc_record(final, "response", payload=io.BytesIO(body), http_headers=http, warc_headers_dict=warc_headers)
            writer.write_record(record)
            self.warc.flush()
        entry = {"url": link.url, "end": self.warc.tell(), "error": kind}
        self.log.write(json.dumps(entry).encode() + b"\n")
        self.log.flush()
        self.done[link.url] = entry

    def finish(self, stats: dict) -> None:
        for f in (self.warc, self.log):
            os.fsync(f.fileno())
            f.close()
        os.replace(self.part, self.final)
        write_json(self.stats_path, stats)


async def _fetch_shards(sources: list[Path], out_dir: Path, cfg) -> list[dict]:
    """Fetch every shard in one event loop (shared limits); returns each shard's statistics."""
    crawler = Crawler(cfg)
    results: list[dict | None] = [None] * len(sources)
    jobs = []
    for i, source in enumerate(sources):
        writer = _ShardWriter(out_dir, source)
        if writer.final.exists() and writer.stats_path.exists():
            results[i] = json.loads(writer.stats_path.read_text(encoding="utf-8"))
            continue
        links, invalid = read_links(source)
        if cfg.limit is not None:
            links = links[: cfg.limit]
        writer.open()
        jobs.append((i, writer, [link for link in links if link.url not in writer.done], len(links), invalid))
    total = sum(len(todo) for _, _, todo, _, _ in jobs)
    errors: Counter = Counter()
    n_bytes = 0
    bar = tqdm(total=total, unit="page", desc="fetching", file=sys.stderr, disable=None, smoothing=0.05)

    async def one(writer: _ShardWriter, link: Link) -> None:
        nonlocal n_bytes
        try:
            result, kind = await crawler.get(link), None
            n_bytes += len(result[3])
        except Failed as e:
            result, kind = None, e.kind
            errors[kind] += 1
        writer.write(link, result, kind)
        bar.update(1)
        bar.set_postfix_str(f"{n_bytes / 1e6:.1f} MB, errors: " + (", ".join(f"{k} {v}" for k, v in errors.most_common(4)) or "none"))

    try:
        for i, writer, todo, n_links, invalid in jobs:
            # links are queued host by host (shards are sorted by URL), so interleave hosts to keep connections busy
            await asyncio.gather(*(one(writer, link) for link in _interleave_hosts(todo)))
            kinds = Counter(e["error"] or "ok" for e in writer.done.values())
            stats = {"links": n_links, "invalid": invalid, "pages": kinds.pop("ok", 0), "errors": dict(sorted(kinds.items())),
                     "bytes": writer.warc.tell()}
            writer.finish(stats)
            results[i] = stats
    finally:
        bar.close()
        await crawler.close()
    return results  # type: ignore[return-value]


def _interleave_hosts(links: list[Link]) -> list[Link]:
    by_host: dict[str, list[Link]] = {}
    for link in links:
        by_host.setdefault(urlsplit(link.url).netloc, []).append(link)
    queues = list(by_host.values())
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def fetch_shard(source: Path, out_dir: Path, cfg) -> dict:
    """One shard of links -> its WARC file (a task of the Dask engine)."""
    return asyncio.run(_fetch_shards([source], out_dir, cfg))[0]


def fetch(cfg, engine=None) -> dict:
    """`gpt2 webtext fetch`: returns the statistics it writes to OUT/stats.json.

    `engine`: an engine to run on (build shares one among its stages); by default the config's, opened here.
    """
    t0 = time.perf_counter()
    sources = list_shards(cfg.links, LINK_SUFFIXES, "links file")
    check_proxy(cfg.proxy, cfg.connect_timeout)
    out = StageDir(cfg.out, "fetch")
    if getattr(engine, "name", cfg.engine if not cfg.scheduler else "dask") == "local":
        results = asyncio.run(_fetch_shards(sources, out.path, cfg))
    else:
        with open_engine(cfg, engine) as engine:
            results = engine.map(partial(fetch_shard, out_dir=out.path, cfg=cfg), sources, desc="fetching shards")
    errors: Counter = Counter()
    for r in results:
        errors.update(r["errors"])
    seconds = time.perf_counter() - t0
    stats = {
        "stage": "fetch",
        "links": sum(r["links"] for r in results),
        "invalid_lines": sum(r["invalid"] for r in results),
        "pages": sum(r["pages"] for r in results),
        "errors": dict(errors.most_common()),
        "warc_bytes": sum(r["bytes"] for r in results),
        "seconds": round(seconds, 3),
    }
    out.write_stats(stats)
    log.info("fetch: %s links -> %s pages (%.1f MB of WARC) in %.1f s; errors: %s", f"{stats['links']:,}", f"{stats['pages']:,}",
             stats["warc_bytes"] / 1e6, seconds, ", ".join(f"{k} {v:,}" for k, v in errors.most_common()) or "none")
    return stats
