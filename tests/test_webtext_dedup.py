"""`gpt2 webtext dedup` on real page texts with planted copies: exact and near duplicates found, the copy with the
most karma kept; the MinHash estimate against exact Jaccard similarities computed here from the n-gram sets."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from conftest import SHARED
from gpt2.config import WebTextDedupConfig
from gpt2.webtext.dedup import dedup, minhash, normalise
from gpt2.webtext.extract import decode_html, extract_page
from gpt2.webtext.shards import read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Main texts of 40 real pages with at least 300 words (resiliparse: fast)."""
    meta = json.loads((SHARED / "web_pages" / "evaldata.json").read_text(encoding="utf-8"))
    out = []
    for url, e in meta.items():
        page = extract_page(decode_html(gzip.decompress((SHARED / "web_pages" / "pages" / e["file"]).read_bytes())), url, "resiliparse")
        if page and len(page["text"].split()) >= 300 and page["text"] not in out:
            out.append(page["text"])
        if len(out) == 40:
            return out
    raise AssertionError("too few long pages")


def edit(text: str, share: float, rng: random.Random) -> str:
    """The text with a share of its words replaced by others."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), int(share * len(words))):
        words[i] = rng.choice(["apple", "river", "stone", "cloud", "light"])
    return " ".join(words)


def jaccard(a: str, b: str, n: int = 5) -> float:
    def grams(t):
        w = normalise(t)
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def test_minhash_estimates_jaccard_similarity(texts):
    rng = random.Random(0)
    errors = []
    for text in texts[:20]:
        for share in (0.01, 0.05, 0.2):
            other = edit(text, share, rng)
            estimate = float(np.mean(minhash(normalise(text), 5, 112, 1) == minhash(normalise(other), 5, 112, 1)))
            errors.append(abs(estimate - jaccard(text, other)))
    assert max(errors) < 0.16 and np.mean(errors) < 0.05  # 112 functions: one standard deviation is at most 0.047


def test_dedup_keeps_the_copy_with_the_most_karma(texts, tmp_path):
    rng = random.Random(1)
    docs = [{"url": f"http://site{i}.example/a", "text": t, "karma": 10} for i, t in enumerate(texts)]
    planted = {
        "http://copy.example/exact": (0, "  ".join(texts[0].split()) + " !!", 3, "exact"),  # same words: exact
        "http://copy.example/near": (1, edit(texts[1], 0.01, rng), 4, "near"),  # Jaccard about 0.95
        "http://copy.example/better": (2, edit(texts[2], 0.01, rng), 50, "original dropped"),  # more karma: kept
        "http://copy.example/far": (3, edit(texts[3], 0.3, rng), 5, "kept"),  # Jaccard about 0.2: not a duplicate
    }
    for url, (i, text, karma, _) in planted.items():
        docs.append({"url": url, "text": text, "karma": karma})
    rng.shuffle(docs)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "docs-00000.jsonl", docs[:20])
    write_jsonl(tmp_path / "in" / "docs-00001.jsonl", docs[20:])
    stats = dedup(WebTextDedupConfig(input=[tmp_path / "in"], out=tmp_path / "out", workers=1))
    kept = {d["url"] for p in sorted((tmp_path / "out").glob("docs-*.jsonl")) for d in read_jsonl(p)}
    expected = {d["url"] for d in docs} - {"http://copy.example/exact", "http://copy.example/near", "http://site2.example/a"}
    assert kept == expected
    assert stats["dropped"] == {"exact duplicate": 1, "near duplicate": 2} and stats["kept"] == len(docs) - 3
    assert jaccard(texts[3], planted["http://copy.example/far"][1]) < 0.4

    # a re-run after losing an output shard writes the same result
    (tmp_path / "out" / "docs-00001.jsonl").unlink()
    dedup(WebTextDedupConfig(input=[tmp_path / "in"], out=tmp_path / "out", workers=1))
    assert {d["url"] for p in sorted((tmp_path / "out").glob("docs-*.jsonl")) for d in read_jsonl(p)} == expected

    # exact only
    exact = dedup(WebTextDedupConfig(input=[tmp_path / "in"], out=tmp_path / "exact", workers=1, near=False))
    assert exact["dropped"] == {"exact duplicate": 1, "near duplicate": 0}
