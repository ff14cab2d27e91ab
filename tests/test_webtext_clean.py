"""`gpt2 webtext clean`: each rule on documents made to fail it alone, and language identification on real pages."""

from __future__ import annotations

import gzip
import json
from urllib.parse import urlsplit

import pytest

from conftest import SHARED
from gpt2.config import WebTextCleanConfig
from gpt2.webtext.clean import clean, identify_language
from gpt2.webtext.extract import decode_html, extract_page
from gpt2.webtext.shards import read_jsonl, write_jsonl

SENTENCE = "The river that runs past the old mill has been a place of work and rest for the people of the valley. "
GOOD = SENTENCE * 6


def make(text: str) -> dict:
    return {"url": f"http://example.org/{abs(hash(text)) % 10**9}", "text": text, "karma": 3}


CASES = {
    None: GOOD,
    "language": "Der Fluss, der an der alten Mühle vorbeifließt, war für die Menschen des Tals ein Ort der Arbeit. " * 6,
    "too short": SENTENCE,
    "mean word length": "The antidisestablishmentarianism characteristically overcomplicated institutionalisation and " * 12,
    "symbols": " ".join(["#tag the word of it and that"] * 40),
    "bullet lines": "\n".join(f"- the item {i} of the list and the rest that goes with it" for i in range(20)),
    "ellipsis lines": "\n".join(f"The story of the day and the night that came with it, number {i} ..." for i in range(20)),
    "non-alphabetic": GOOD + " " + " ".join(["1234 3456 5678 7890 1122"] * 14),
    "no stop words": "Rivers run past mills; people work, rest, sing, dance, eat, sleep. " * 12,
    "repeated lines": "\n".join([SENTENCE] * 4 + [f"Another line number {i} of the text and the rest." for i in range(5)]),
    "lorem ipsum": GOOD + " Lorem ipsum dolor sit amet, and the rest of the text.",
}


def test_each_rule_drops_what_it_names(tmp_path):
    (tmp_path / "in").mkdir()
    docs = [make(text) for text in CASES.values()]
    write_jsonl(tmp_path / "in" / "docs-00000.jsonl", docs)
    stats = clean(WebTextCleanConfig(input=[tmp_path / "in"], out=tmp_path / "out", workers=1))
    assert stats["dropped"] == {reason: 1 for reason in CASES if reason is not None}
    kept = list(read_jsonl(tmp_path / "out" / "docs-00000.jsonl"))
    assert [d["text"] for d in kept] == [GOOD]
    assert kept[0]["language"] == "en" and kept[0]["words"] == len(GOOD.split())
    assert stats["languages"]["de"] == 1
    # without the quality rules only language and length count
    loose = clean(WebTextCleanConfig(input=[tmp_path / "in"], out=tmp_path / "loose", workers=1, rules=False))
    assert loose["dropped"] == {"language": 1, "too short": 1}
    # German only
    german = clean(WebTextCleanConfig(input=[tmp_path / "in"], out=tmp_path / "de", workers=1, languages=["de"], min_words=10))
    assert german["kept"] == 1


def test_language_of_real_text():
    """Pages of German hosts (.de, .at) are German; passages of an English novel (Botchan) are English."""
    meta = json.loads((SHARED / "web_pages" / "evaldata.json").read_text(encoding="utf-8"))
    german = []
    for url, e in meta.items():
        if (urlsplit(url).hostname or "").endswith((".de", ".at")) and len(german) < 20:
            html = decode_html(gzip.decompress((SHARED / "web_pages" / "pages" / e["file"]).read_bytes()))
            page = extract_page(html, url, "resiliparse")
            if page and len(page["text"].split()) >= 50:
                german.append(identify_language(page["text"])[0])
    assert len(german) == 20 and german.count("de") >= 18, german
    words = (SHARED / "botchan" / "botchan.txt").read_text(encoding="utf-8").split()
    passages = [" ".join(words[i : i + 200]) for i in range(2000, 2000 + 20 * 200, 200)]
    assert [identify_language(p)[0] for p in passages] == ["en"] * 20


@pytest.mark.parametrize("bad", ["not json\n", '{"url": "x"}\n'])
def test_foreign_shards_are_one_line_errors(tmp_path, bad):
    from gpt2.errors import GPT2Error

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs-00000.jsonl").write_text(bad)
    with pytest.raises(GPT2Error, match="docs-00000.jsonl"):
        clean(WebTextCleanConfig(input=[tmp_path / "in"], out=tmp_path / "out", workers=1))
