"""`gpt2 webtext links`: Reddit submission dumps -> the outbound links with at least 3 karma.

GPT-2 paper, section 2.1: "we scraped all outbound links from Reddit, a social
media platform, which received at least 3 karma". We read Pushshift's monthly
submission dumps (RS_YYYY-MM, one JSON object per line; .zst, .xz, .bz2, .gz or
plain .jsonl) and keep a submission's `url` unless

- it is a self post (`is_self`: its link is the Reddit thread itself),
- it is marked NSFW (`over_18`),
- it was removed (`removed_by_category` or `banned_by` set, or a "[removed]" title),
- its URL is not http(s), or is on the blocklist below, or is on Wikipedia
  (section 2.1: "we removed all Wikipedia documents from WebText", as many
  evaluation sets draw on it).

URLs are normalised so that one page has one URL: scheme and host in lower
case, IDNA for non-ASCII hosts, default ports and fragments dropped, HTML
entities undone (the dumps store `&amp;`), and tracking parameters removed
(`utm_*`, `fbclid`, `gclid`, ... in `TRACKING`). The karma of a URL posted
several times is the `max` of its submissions' scores (or the `sum`), and the
URLs with at least `min_karma` are kept.

Two steps, both over shards: each dump is scanned on its own (a map, in
parallel), then the per-URL totals are made by a shuffle on the hash of the
URL's host (the engine's; on Dask, its own groupby; by host, so that one host's
pages are all in one shard), which writes `links-NNNNN.jsonl[.zst]`
(rows sorted by URL: `url`, `karma`, `posts`, `domain`, `subreddit`,
`created_utc` of the first post) and `stats.json` (counts by reason).
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections import Counter
from functools import partial
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from gpt2.errors import GPT2Error
from gpt2.webtext.engine import open_engine
from gpt2.webtext.shards import StageDir, list_shards, open_lines, read_jsonl, shard_suffix, stable_hash, write_jsonl

log = logging.getLogger(__name__)

DUMP_SUFFIXES = (".zst", ".xz", ".bz2", ".gz", ".jsonl", ".json", ".ndjson")

# Hosts whose pages carry no text worth extracting (images, video, audio, social feeds, link shorteners that
# hide the target, Reddit itself); a URL on the host or any subdomain of it is dropped.
BLOCKED_DOMAINS = (
    "reddit.com", "redd.it", "redditmedia.com", "redditstatic.com", "reddituploads.com",
    "imgur.com", "gfycat.com", "giphy.com", "tenor.com", "flickr.com", "staticflickr.com", "photobucket.com",
    "tinypic.com", "imageshack.us", "500px.com", "deviantart.com", "instagram.com", "pinterest.com",
    "youtube.com", "youtu.be", "vimeo.com", "dailymotion.com", "twitch.tv", "streamable.com", "liveleak.com",
    "vid.me", "gyazo.com", "soundcloud.com", "spotify.com", "bandcamp.com",
    "facebook.com", "fb.com", "twitter.com", "x.com", "t.co", "tiktok.com", "snapchat.com",
    "bit.ly", "goo.gl", "tinyurl.com", "ow.ly",
)
# File types that are not HTML pages.
BLOCKED_EXTENSIONS = frozenset(
    "jpg jpeg png gif gifv webp bmp svg tif tiff ico heic mp4 webm mov avi mkv flv wmv m4v mpg mpeg mp3 ogg oga wav "
    "flac m4a aac pdf ps zip rar 7z gz tgz bz2 xz tar exe msi dmg iso apk deb rpm torrent doc docx ppt pptx xls xlsx "
    "odt swf jar bin csv".split()
)
# Query parameters that only track the click.
TRACKING = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gclsrc|msclkid|mc_cid|mc_eid|igshid|yclid|_ga|_gl|ref_src|ref_url|"
    r"spm|scid|cmpid|ncid|oly_\w+|vero_\w+|__twitter_impression|wt\.mc_id|wt_mc_id|mkt_tok)$",
    re.IGNORECASE,
)


# ----------------------------------------------------------------------------
# one URL


def normalize_url(url: str) -> str | None:
    """The canonical form of an http(s) URL, or None if it is not one.

    >>> normalize_url("HTTP://WWW.Example.COM:80/a/b?utm_source=x&id=3#top")
    'http://www.example.com/a/b?id=3'
    """
    url = html.unescape(url.strip())
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
        return None
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    netloc = host if port in (None, {"http": 80, "https": 443}[scheme]) else f"{host}:{port}"
    # tracking parameters are cut out of the query as written: re-encoding the rest could change what a server sees
    query = "&".join(p for p in parts.query.split("&") if p and not TRACKING.match(unquote_plus(p.split("=", 1)[0])))
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def blocked(url: str) -> str | None:
    """Why a normalised URL is dropped ('wikipedia', 'blocked domain', 'blocked file type'), or None."""
    host = host_of(url)
    if host == "wikipedia.org" or host.endswith(".wikipedia.org"):
        return "wikipedia"
    labels = host.split(".")
    if any(".".join(labels[i:]) in _BLOCKED for i in range(len(labels))):
        return "blocked domain"
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    if "." in last and last.rsplit(".", 1)[-1].lower() in BLOCKED_EXTENSIONS:
        return "blocked file type"
    return None


_BLOCKED = frozenset(BLOCKED_DOMAINS)


# ----------------------------------------------------------------------------
# one submission


def _skip_reason(post: object) -> str | None:
    if not isinstance(post, dict):
        return "not an object"
    if not isinstance(post.get("url"), str) or not isinstance(post.get("score"), int) or isinstance(post.get("score"), bool):
        return "missing url or score"
    if post.get("is_self") or post.get("url", "").startswith("/r/"):
        return "self post"
    if post.get("over_18"):
        return "nsfw"
    if post.get("removed_by_category") or post.get("banned_by") or post.get("title") == "[removed]":
        return "removed"
    return None


def scan_dump(path: Path, out_dir: Path, compress: bool) -> dict:
    """Map step: one dump -> its links with their per-dump karma (max and sum), written as one part file; returns counts."""
    part = out_dir / "parts" / (Path(path).name + shard_suffix(compress))
    counts_file = part.with_name(part.name + ".stats.json")
    if part.exists() and counts_file.exists():  # done before an interruption
        return json.loads(counts_file.read_text(encoding="utf-8"))
    counts: Counter = Counter()
    links: dict[str, list] = {}  # url -> [max score, sum of scores, posts, first created_utc, its subreddit]
    n_bytes = Path(path).stat().st_size
    for line in open_lines(path):
        if not line.strip():
            continue
        counts["submissions"] += 1
        try:
            post = json.loads(line)
        except ValueError:
            counts["dropped: not JSON"] += 1
            continue
        reason = _skip_reason(post)
        url = normalize_url(post["url"]) if reason is None else None
        if reason is None and url is None:
            reason = "not an http(s) URL"
        if reason is None:
            reason = blocked(url)
        if reason is not None:
            counts[f"dropped: {reason}"] += 1
            continue
        score, created = post["score"], post.get("created_utc")
        created = int(created) if isinstance(created, (int, float)) or (isinstance(created, str) and created.isdigit()) else None
        entry = links.get(url)
        if entry is None:
            links[url] = [score, score, 1, created, str(post.get("subreddit") or "")]
        else:
            entry[0] = max(entry[0], score)
            entry[1] += score
            entry[2] += 1
            if created is not None and (entry[3] is None or created < entry[3]):
                entry[3], entry[4] = created, str(post.get("subreddit") or "")
    rows = ({"url": u, "max": e[0], "sum": e[1], "posts": e[2], "created_utc": e[3], "subreddit": e[4]} for u, e in sorted(links.items()))
    write_jsonl(part, rows)
    counts["bytes"] = n_bytes
    counts["links"] = len(links)
    counts_file.write_text(json.dumps(dict(counts)), encoding="utf-8")
    return dict(counts)


def shard_of(url: str, shards: int) -> int:
    """The links shard of a URL: chosen by its host, so that each host is fetched from one shard only and the
    per-host limits of `gpt2 webtext fetch` hold across parallel workers."""
    return stable_hash(host_of(url)) % shards


def _part_records(part: Path, shards: int) -> list:
    """Shuffle map: each row of a part file, keyed by the output shard its URL belongs to."""
    return [(shard_of(row["url"], shards), row) for row in read_jsonl(part)]


def _write_links(partition: int, rows: list[dict], out_dir: Path, karma: str, min_karma: int, compress: bool) -> dict:
    """Shuffle reduce: every part row of the URLs of one output shard -> the shard, with their total karma."""
    merged: dict[str, dict] = {}
    for row in rows:
        m = merged.get(row["url"])
        if m is None:
            merged[row["url"]] = dict(row)
            continue
        m["max"] = max(m["max"], row["max"])
        m["sum"] += row["sum"]
        m["posts"] += row["posts"]
        if row["created_utc"] is not None and (m["created_utc"] is None or row["created_utc"] < m["created_utc"]):
            m["created_utc"], m["subreddit"] = row["created_utc"], row["subreddit"]
    kept = []
    for url in sorted(merged):
        m = merged[url]
        total = m[karma]
        if total >= min_karma:
            kept.append({"url": url, "karma": total, "posts": m["posts"], "domain": host_of(url),
                         "subreddit": m["subreddit"], "created_utc": m["created_utc"]})
    write_jsonl(out_dir / f"links-{partition:05d}{shard_suffix(compress)}", kept)
    return {"urls": len(merged), "kept": len(kept)}


def links(cfg, engine=None) -> dict:
    """`gpt2 webtext links`: returns the statistics it writes to OUT/stats.json.

    `engine`: an engine to run on (build shares one among its stages); by default the config's, opened here.
    """
    t0 = time.perf_counter()
    dumps = list_shards(cfg.input, DUMP_SUFFIXES, "Reddit dump")
    names = [d.name for d in dumps]
    if len(set(names)) != len(names):
        raise GPT2Error("two dumps have the same file name; give each month once")
    out = StageDir(cfg.out, "links", {"karma": cfg.karma, "min_karma": cfg.min_karma, "shards": cfg.shards, "compress": cfg.compress})
    (out / "parts").mkdir(exist_ok=True)
    with open_engine(cfg, engine) as engine:
        scans = engine.map(partial(scan_dump, out_dir=out.path, compress=cfg.compress), dumps, desc="scanning dumps")
        counts: Counter = Counter()
        for c in scans:
            counts.update(c)
        if counts["submissions"] == 0:
            raise GPT2Error(f"the dumps ({', '.join(names)}) hold no submissions; check that they are Pushshift RS_* files")
        parts = [out / "parts" / (name + shard_suffix(cfg.compress)) for name in names]
        reduced = engine.shuffle(
            parts,
            partial(_part_records, shards=cfg.shards),
            cfg.shards,
            partial(_write_links, out_dir=out.path, karma=cfg.karma, min_karma=cfg.min_karma, compress=cfg.compress),
            desc="karma per URL",
        )
    urls = sum(r["urls"] for r in reduced)
    kept = sum(r["kept"] for r in reduced)
    for p in range(cfg.shards):  # shards no URL hashed to are written empty, so every stage sees the same list
        empty = out / f"links-{p:05d}{shard_suffix(cfg.compress)}"
        if not empty.exists():
            write_jsonl(empty, [])
    seconds = time.perf_counter() - t0
    stats = {
        "stage": "links",
        "dumps": names,
        "submissions": counts["submissions"],
        "dropped": {k.removeprefix("dropped: "): v for k, v in sorted(counts.items()) if k.startswith("dropped: ")},
        "unique_urls": urls,
        f"below_{cfg.min_karma}_karma": urls - kept,
        "links": kept,
        "karma": cfg.karma,
        "min_karma": cfg.min_karma,
        "input_bytes": counts["bytes"],
        "seconds": round(seconds, 3),
    }
    out.write_stats(stats)
    log.info("links: %s submissions -> %s unique URLs -> %s with karma >= %d (%s) in %.1f s; dropped %s",
             f"{stats['submissions']:,}", f"{urls:,}", f"{kept:,}", cfg.min_karma, cfg.karma, seconds,
             ", ".join(f"{k} {v:,}" for k, v in stats["dropped"].items()) or "none")
    return stats
