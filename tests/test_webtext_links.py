"""`gpt2 webtext links` on the two real Pushshift dumps in ../shared/datasets/pushshift.

The kept links are checked against an independent reading of the dumps (lzma + json, the filters and the
karma rule written out plainly here), and bad dumps against their one-line errors or counted skips.
"""

from __future__ import annotations

import bz2
import gzip
import html
import json
import lzma
from collections import defaultdict
from urllib.parse import urlsplit

import pytest

from conftest import SHARED
from gpt2.config import WebTextLinksConfig
from gpt2.errors import GPT2Error
from gpt2.webtext.links import blocked, links, normalize_url
from gpt2.webtext.shards import read_jsonl

DUMPS = SHARED / "pushshift"


def cfg(inputs, out, **kw) -> WebTextLinksConfig:
    return WebTextLinksConfig(input=list(inputs), out=out, workers=1, shards=kw.pop("shards", 4), **kw)


def kept(out) -> dict[str, dict]:
    rows = [r for p in sorted(out.glob("links-*.jsonl*")) for r in read_jsonl(p)]
    assert len({r["url"] for r in rows}) == len(rows)  # no URL in two shards
    return {r["url"]: r for r in rows}


def plain_reading(karma: str = "max", min_karma: int = 3) -> dict[str, int]:
    """The rule written out independently: link posts, not NSFW, http(s), not Wikipedia / images; host in
    lower case, fragment dropped; karma per URL by max or sum."""
    scores = defaultdict(list)
    for name in ("RS_v2_2005-06.xz", "RS_v2_2005-07.xz"):
        for line in lzma.open(DUMPS / name, "rt", encoding="utf-8"):
            post = json.loads(line)
            if post["is_self"] or post["over_18"]:
                continue
            u = urlsplit(html.unescape(post["url"]).strip())
            if u.scheme.lower() not in ("http", "https") or "wikipedia.org" in u.netloc.lower():
                continue
            if u.path.lower().endswith((".jpg", ".jpeg", ".png", ".gif", ".pdf", ".mp3", ".mov", ".avi", ".zip", ".wmv", ".swf", ".mpg")):
                continue
            url = f"{u.scheme.lower()}://{u.netloc.lower()}{u.path or '/'}" + (f"?{u.query}" if u.query else "")
            scores[url].append(post["score"])
    total = {url: (max(s) if karma == "max" else sum(s)) for url, s in scores.items()}
    return {url: k for url, k in total.items() if k >= min_karma}


@pytest.mark.parametrize("karma", ["max", "sum"])
def test_links_of_the_real_dumps_match_a_plain_reading(tmp_path, karma):
    stats = links(cfg([DUMPS], tmp_path / "links", karma=karma))
    got = kept(tmp_path / "links")
    expected = plain_reading(karma)
    assert {u: r["karma"] for u, r in got.items()} == expected
    assert stats["submissions"] == 103 + 1079  # PROVENANCE.md
    assert stats["links"] == len(expected) and stats["dropped"]["wikipedia"] == 1
    assert sum(1 for r in got.values() if r["posts"] > 1) >= 1  # some URLs were posted twice
    # each host lives in one shard, so the per-host limits of fetch hold across workers
    shards = defaultdict(set)
    for p in sorted((tmp_path / "links").glob("links-*.jsonl")):
        for r in read_jsonl(p):
            shards[r["domain"]].add(p.name)
    assert all(len(s) == 1 for s in shards.values())


def test_url_normalisation_and_blocklist():
    assert normalize_url("HTTP://WWW.Example.COM:80/a?utm_source=rss&id=3&fbclid=x#frag") == "http://www.example.com/a?id=3"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/x") == "https://example.com:8443/x"
    assert normalize_url("http://example.com/?a=1&amp;b=2") == "http://example.com/?a=1&b=2"  # the dumps store &amp;
    assert normalize_url("http://bücher.de/") == "http://xn--bcher-kva.de/"
    assert normalize_url("ftp://example.com/file") is None and normalize_url("javascript:alert(1)") is None
    assert normalize_url("/r/programming/comments/x") is None
    assert blocked("https://en.m.wikipedia.org/wiki/X") == "wikipedia"
    assert blocked("https://i.imgur.com/abc") == "blocked domain" and blocked("https://www.youtube.com/watch?v=1") == "blocked domain"
    assert blocked("http://example.com/photo.JPG") == "blocked file type"
    assert blocked("http://notimgur.com/page") is None and blocked("http://example.com/a.b/page") is None


def test_bad_lines_are_counted_and_bad_files_are_one_line_errors(tmp_path):
    good = {"url": "http://example.com/a", "score": 5, "is_self": False, "over_18": False}
    lines = [json.dumps(good), "{not json", json.dumps({"score": 9}), json.dumps([1, 2]),
             json.dumps({**good, "url": "http://example.com/n", "over_18": True}),
             json.dumps({**good, "url": "http://example.com/r", "removed_by_category": "moderator"}),
             json.dumps({**good, "url": "http://example.com/s", "is_self": True})]
    (tmp_path / "RS_x.jsonl").write_text("\n".join(lines) + "\n")
    stats = links(cfg([tmp_path / "RS_x.jsonl"], tmp_path / "out"))
    assert stats["dropped"] == {"missing url or score": 1, "not JSON": 1, "not an object": 1, "nsfw": 1, "removed": 1, "self post": 1}
    assert list(kept(tmp_path / "out")) == ["http://example.com/a"]

    raw = lzma.open(DUMPS / "RS_v2_2005-07.xz").read()
    import zstandard

    for name, data in [("RS_t.xz", (DUMPS / "RS_v2_2005-07.xz").read_bytes()), ("RS_t.bz2", bz2.compress(raw)),
                       ("RS_t.zst", zstandard.ZstdCompressor().compress(raw)), ("RS_t.gz", gzip.compress(raw))]:
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(GPT2Error, match=rf"{name} is truncated or corrupt.*download it again"):
            links(cfg([tmp_path / name], tmp_path / f"out-{name}"))
    (tmp_path / "RS_empty.xz").write_bytes(lzma.compress(b""))
    with pytest.raises(GPT2Error, match="hold no submissions"):
        links(cfg([tmp_path / "RS_empty.xz"], tmp_path / "out-empty"))


def test_compressed_dumps_give_the_same_links_and_reruns_resume(tmp_path):
    import zstandard

    raw = lzma.open(DUMPS / "RS_v2_2005-07.xz").read()
    (tmp_path / "RS_v2_2005-07.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(raw))
    (tmp_path / "RS_v2_2005-06.bz2").write_bytes(bz2.compress(lzma.open(DUMPS / "RS_v2_2005-06.xz").read()))
    links(cfg([DUMPS], tmp_path / "a"))
    links(cfg([tmp_path / "RS_v2_2005-07.zst", tmp_path / "RS_v2_2005-06.bz2"], tmp_path / "b", compress=True))
    assert kept(tmp_path / "a") == kept(tmp_path / "b")

    # an interrupted run: a shard lost, a temporary file left behind; the re-run gives the same links
    (tmp_path / "a" / "links-00002.jsonl").unlink()
    (tmp_path / "a" / "links-00001.jsonl.tmp").write_text("half a line")
    links(cfg([DUMPS], tmp_path / "a"))
    assert kept(tmp_path / "a") == kept(tmp_path / "b")
    with pytest.raises(GPT2Error, match="written with min_karma=3, not 5"):
        links(cfg([DUMPS], tmp_path / "a", min_karma=5))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(GPT2Error, match="holds other files; give a new or empty folder"):
        links(cfg([DUMPS], tmp_path / "other"))
    with pytest.raises(GPT2Error, match="holds the output of `gpt2 webtext links`"):
        from gpt2.config import WebTextCleanConfig
        from gpt2.webtext.clean import clean

        clean(WebTextCleanConfig(input=[tmp_path / "b"], out=tmp_path / "a", workers=1))


def test_zst_dumps_with_a_2_gib_window_are_read(tmp_path):
    """The newer Pushshift dumps are compressed with --long=31: zstandard's default reader refuses them."""
    import io

    import zstandard

    raw = lzma.open(DUMPS / "RS_v2_2005-07.xz").read()
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31, enable_ldm=True)
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(buf, closefd=False) as w:
        w.write(raw)
    (tmp_path / "RS_v2_2005-07.zst").write_bytes(buf.getvalue())
    assert zstandard.get_frame_parameters(buf.getvalue()).window_size == 2**31
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(buf.getvalue())).read()
    links(cfg([tmp_path / "RS_v2_2005-07.zst"], tmp_path / "a"))
    links(cfg([DUMPS / "RS_v2_2005-07.xz"], tmp_path / "b"))
    assert kept(tmp_path / "a") == kept(tmp_path / "b")


def test_links_command_line(cli, tmp_path):
    r = cli("webtext", "links", "--input", str(DUMPS), "--out", str(tmp_path / "l"), "--shards", "2", "--min-karma", "5")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "l" / "stats.json").read_text())["links"] == len(plain_reading(min_karma=5))
    r = cli("webtext", "links", "--input", str(tmp_path / "nope.xz"), "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
