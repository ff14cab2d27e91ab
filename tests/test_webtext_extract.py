"""`gpt2 webtext extract` on the 300 real pages of ../shared/datasets/web_pages (PROVENANCE.md): the share of
the strings the main text must contain that it does, of those it must not that it does not; charsets; the
per-page time limit; the stage over WARC files written independently with warcio."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from conftest import SHARED
from gpt2.config import WebTextExtractConfig
from gpt2.errors import GPT2Error
from gpt2.webtext.extract import Watchdog, decode_html, extract, extract_page
from gpt2.webtext.shards import read_jsonl

ROOT = SHARED / "web_pages"
META = json.loads((ROOT / "evaldata.json").read_text(encoding="utf-8"))


def page_bytes(entry: dict) -> bytes:
    return gzip.decompress((ROOT / "pages" / entry["file"]).read_bytes())


def quality(extractor: str, entries: list[tuple[str, dict]]) -> tuple[float, float]:
    found = absent = n_with = n_without = 0
    for url, e in entries:
        try:
            page = extract_page(decode_html(page_bytes(e)), url, extractor)
        except ValueError:  # newspaper4k on a page with control characters; the stage drops such a page
            page = None
        text = page["text"] if page else ""
        found += sum(s in text for s in e["with"])
        absent += sum(s not in text for s in e["without"])
        n_with, n_without = n_with + len(e["with"]), n_without + len(e["without"])
    return found / n_with, absent / n_without


@pytest.mark.parametrize("extractor, min_with, min_without",
                         [("trafilatura", 0.90, 0.85), ("resiliparse", 0.90, 0.65), ("newspaper", 0.70, 0.90)])
def test_main_text_quality_on_real_pages(extractor, min_with, min_without):
    """Every 5th page (60); docs/webtext.md gives all 300 (trafilatura 0.946 / 0.890, resiliparse 0.954 / 0.740,
    newspaper4k 0.760 / 0.936)."""
    with_share, without_share = quality(extractor, list(META.items())[::5])
    assert with_share >= min_with and without_share >= min_without, (with_share, without_share)


def test_charsets_are_detected():
    text = "<html><head><title>Café</title></head><body><p>Der Bär läuft über die Straße, à la française.</p></body></html>"
    assert decode_html(text.encode("utf-8"), "text/html; charset=iso-8859-1") == text  # valid UTF-8 wins over a wrong header
    assert decode_html(text.encode("latin-1"), "text/html; charset=utf-8") == text  # and a wrong UTF-8 header loses
    assert decode_html(text.encode("latin-1"), "text/html") == text
    meta = '<html><head><meta charset="windows-1251"><title>Новости</title></head><body><p>Привет, мир: это страница по-русски.</p></body></html>'
    assert decode_html(meta.encode("cp1251"), None) == meta
    shift_jis = "<html><body><p>" + "日本語のテキストです。これは長い文章で、文字コードの判定に使われます。" * 5 + "</p></body></html>"
    assert decode_html(shift_jis.encode("shift_jis"), None) == shift_jis  # no charset anywhere: detected


def test_a_page_over_the_time_limit_is_dropped_and_the_worker_restarted():
    url, e = next(iter(META.items()))
    html = decode_html(page_bytes(e))
    dog = Watchdog("trafilatura", timeout=0.001)
    try:
        first = dog.extract(html, url)  # the first page of a worker may also import the extractor
        second = dog.extract(html, url)  # no real page is extracted in a millisecond
        third = dog.extract(html, url)  # a new worker
    finally:
        dog.close()
    reference = extract_page(html, url, "trafilatura")
    assert first == (reference, None) and second == (None, "timeout") and third == (reference, None)


def write_warc(path, pages: list[tuple[str, bytes, str | None]]) -> None:
    """A WARC file written with warcio directly, as another crawler would."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body, ctype in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", ctype)] if ctype else [], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers,
                                                          warc_headers_dict={"WARC-WebText-Karma": "7"}))


def test_extract_stage_over_warc_files(tmp_path):
    entries = list(META.items())[:12]
    (tmp_path / "warc").mkdir()
    write_warc(tmp_path / "warc" / "fetch-00000.warc.gz", [(u, page_bytes(e), "text/html") for u, e in entries[:6]])
    write_warc(tmp_path / "warc" / "fetch-00001.warc.gz", [(u, page_bytes(e), None) for u, e in entries[6:]])
    stats = extract(WebTextExtractConfig(warc=[tmp_path / "warc"], out=tmp_path / "docs", workers=2))
    docs = {d["url"]: d for p in sorted((tmp_path / "docs").glob("docs-*.jsonl")) for d in read_jsonl(p)}
    assert stats["pages"] == 12 and stats["documents"] == len(docs) == 12
    for url, e in entries:
        assert docs[url]["text"] == extract_page(decode_html(page_bytes(e)), url, "trafilatura")["text"]
        assert docs[url]["karma"] == 7 and docs[url]["extractor"] == "trafilatura"
    # a damaged WARC file is a one-line error
    data = (tmp_path / "warc" / "fetch-00001.warc.gz").read_bytes()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "fetch-00002.warc.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GPT2Error, match="not a readable WARC file"):
        extract(WebTextExtractConfig(warc=[tmp_path / "bad"], out=tmp_path / "docs2", workers=1))
