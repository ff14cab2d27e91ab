"""`gpt2 webtext fetch` against a loopback server that serves the real pages of ../shared/datasets/web_pages,
well and badly on purpose (tests/webtext_server.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, SHARED
from gpt2.config import WebTextFetchConfig
from gpt2.errors import GPT2Error
from gpt2.webtext.extract import decode_html, iter_responses
from gpt2.webtext.fetch import fetch
from webtext_server import Server, load_pages

PAGES = load_pages(SHARED / "web_pages")


@pytest.fixture(scope="module")
def server():
    with Server([body for _, body in PAGES], slow=0.15) as s:
        yield s


def fast(**kw) -> dict:
    """Settings for tests: short timeouts and no politeness delay."""
    return {"per_host_delay": 0.0, "connect_timeout": 2, "read_timeout": 0.5, "total_timeout": 5, "backoff": 0.05,
            "max_bytes": 2_000_000, "max_redirects": 3, "retries": 1, "workers": 1, **kw}


def warc_pages(out) -> dict[str, bytes]:
    pages = {}
    for path in sorted(out.glob("fetch-*.warc.gz")):
        for r in iter_responses(path):
            assert r["url"] not in pages, f"{r['url']} written twice"
            pages[r["url"]] = r["body"]
    return pages


def test_fetch_handles_every_kind_of_misbehaviour(server, tmp_path):
    b = server.base
    cases = {
        f"{b}/page/1": "ok", f"{b}/page/2": "ok",
        f"{b}/slow/3": "timeout",  # 8 pieces 0.15 s apart: fine for the read timeout, not for --total-timeout 0.8 below
        f"{b}/retry-after/4": "ok", f"{b}/flaky/5": "ok", f"{b}/error/6": "http 500",
        f"{b}/redirect/2/7": "ok", f"{b}/redirect/5/8": "too many redirects", f"{b}/loop/9": "redirect loop",
        f"{b}/to-wikipedia": "wikipedia after redirect", f"{b}/private/10": "robots.txt",
        f"{b}/big": "too large", f"{b}/image": "not html", f"{b}/cut/11": "cut connection",
        f"{b}/latin1-no-charset": "ok", f"{b}/latin1-wrong": "ok", f"{b}/missing": "http 404",
    }
    (tmp_path / "urls.txt").write_text("\n".join(cases) + "\nnot a url\n# a comment\n")
    stats = fetch(WebTextFetchConfig(links=[tmp_path / "urls.txt"], out=tmp_path / "out", **fast(total_timeout=0.8)))
    log = {json.loads(line)["url"]: json.loads(line)["error"] or "ok" for line in open(tmp_path / "out" / "fetch-urls.log.jsonl")}
    assert log == cases
    assert stats["invalid_lines"] == 1 and stats["pages"] == sum(v == "ok" for v in cases.values())
    pages = warc_pages(tmp_path / "out")
    assert pages[f"{b}/page/1"] == PAGES[1][1] and pages[f"{b}/redirect/2/7"] == PAGES[7][1]  # bodies byte for byte
    assert server.hits["/retry-after/4"] == 2 and server.hits["/flaky/5"] == 2 and server.hits["/error/6"] == 2  # one retry
    assert server.hits["/robots.txt"] == 1  # once per host
    for path in ("/latin1-no-charset", "/latin1-wrong"):  # stored as sent; decoded right whatever the header says
        assert "Le café de la gare" in decode_html(pages[b + path], "text/html; charset=utf-8")
    assert "/private/10" not in server.hits and "/redirect/5/8" in server.hits


def test_retry_after_is_waited_for_and_limits_are_kept(server, tmp_path):
    urls = [f"{server.base}/page/{i}" for i in range(20, 26)] + [f"{server.base}/retry-after/26"]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    t0 = time.perf_counter()
    fetch(WebTextFetchConfig(links=[tmp_path / "urls.txt"], out=tmp_path / "out", **fast(per_host_delay=0.1, max_per_host=1)))
    elapsed = time.perf_counter() - t0
    assert len(warc_pages(tmp_path / "out")) == 7
    assert server.hits["/retry-after/26"] == 2
    assert elapsed >= 1.0  # Retry-After: 1 was waited for (and 9 requests 0.1 s apart to one host take 0.8 s)


def test_unreachable_proxy_and_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "urls.txt").write_text("http://example.com/\n")
    with pytest.raises(GPT2Error, match="proxy http://127.0.0.1:9 is unreachable.*--proxy"):
        fetch(WebTextFetchConfig(links=[tmp_path / "urls.txt"], out=tmp_path / "out", proxy="http://127.0.0.1:9", **fast()))
    with pytest.raises(GPT2Error, match="links file .*nope.txt does not exist"):
        fetch(WebTextFetchConfig(links=[tmp_path / "nope.txt"], out=tmp_path / "out", **fast()))


def test_kill_9_then_rerun_loses_and_duplicates_nothing(server, tmp_path):
    urls = [f"{server.base}/slow/{i}" for i in range(30, 42)] + [f"{server.base}/page/{i}" for i in range(42, 60)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "gpt2", "webtext", "fetch", "--links", str(tmp_path / "urls.txt"), "--out", str(out),
            "--per-host-delay", "0.05", "--read-timeout", "5", "--max-per-host", "2", "--workers", "1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "GPT2_OFFLINE": "1"})
    log = out / "fetch-urls.log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "fetch-urls.warc.gz").exists()  # it was cut short
    with open(out / "fetch-urls.warc.gz.part", "ab") as f:
        f.write(b"\x1f\x8b half a record written when the process died")
    done_before = {json.loads(line)["url"] for line in log.read_text().splitlines()}
    hits_before = dict(server.hits)
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, "GPT2_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    pages = warc_pages(out)
    assert set(pages) == set(urls)
    assert all(pages[u] == PAGES[int(u.rsplit("/", 1)[1])][1] for u in urls)
    refetched = {p for p in server.hits if server.hits[p] > hits_before.get(p, 0)}
    assert not {u.removeprefix(server.base) for u in done_before} & refetched  # finished pages were not fetched again


def test_a_shard_finished_but_for_its_statistics_is_completed_without_fetching(server, tmp_path):
    urls = [f"{server.base}/page/{i}" for i in range(70, 75)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    cfg = WebTextFetchConfig(links=[tmp_path / "urls.txt"], out=tmp_path / "out", **fast())
    fetch(cfg)
    before = warc_pages(tmp_path / "out")
    (tmp_path / "out" / "fetch-urls.stats.json").unlink()  # as if killed between the WARC's rename and the statistics
    hits = sum(server.hits.get(f"/page/{i}", 0) for i in range(70, 75))
    stats = fetch(cfg)
    assert stats["pages"] == 5 and warc_pages(tmp_path / "out") == before
    assert sum(server.hits.get(f"/page/{i}", 0) for i in range(70, 75)) == hits
