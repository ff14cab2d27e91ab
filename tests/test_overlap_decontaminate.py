"""Decontamination by GPT-3's rule: the pieces equal an independent computation, the piece and document limits,
the document-frequency exemption, `gpt2 overlap decontaminate` and `gpt2 prepare --decontaminate`."""

from __future__ import annotations

import json
import re

import pytest

from conftest import GPT2_BPE, SHARED, read_text
from gpt2.cli import main
from gpt2.evaluate import detokenize
from gpt2.evaluate.datasets import load_lambada
from gpt2.overlap.decontaminate import Removed, Rule, NgramIndex, common_ngrams, decontaminate, pieces

FILLER = read_text(SHARED / "tinyshakespeare" / "input.txt")
PASSAGES = [detokenize.lambada(p) for p in load_lambada(SHARED / "lambada" / "lambada_test.jsonl")]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    monkeypatch.setenv("GPT2_CACHE", str(tmp_path / "cache"))


def spans(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"[^\W_]+", text)]


def expected_pieces(doc: str, tests: list[str], rule: Rule) -> list[str] | None:
    """The rule written out with word tuples: None if the document is dropped whole."""
    test = {tuple(w for w, _, _ in s[i : i + rule.n]) for t in tests for s in [spans(t)] for i in range(len(s) - rule.n + 1)}
    s = spans(doc)
    cuts = [(max(s[i][1] - rule.window, 0), min(s[i + rule.n - 1][2] + rule.window, len(doc)))
            for i in range(len(s) - rule.n + 1) if tuple(w for w, _, _ in s[i : i + rule.n]) in test]
    if not cuts:
        return [doc]
    kept, at = [], 0
    for a, b in cuts:
        if a > at:
            kept.append(doc[at:a])
        at = max(at, b)
    if at < len(doc):
        kept.append(doc[at:])
    return None if len(kept) > rule.max_pieces else [p for p in kept if len(p) >= rule.min_piece]


def test_pieces_equal_the_rule_written_out():
    rule = Rule()
    tests = PASSAGES[:50]
    index = NgramIndex.of(tests, rule.n)
    docs = [
        FILLER[:3000],  # clean
        FILLER[5000:6000] + " " + PASSAGES[3] + " " + FILLER[6000:7000],  # one passage in the middle
        PASSAGES[4] + FILLER[9000:9100],  # at the start, with a short tail (dropped)
        # 12 and 8 hits 800 characters apart, the last at the end: 12 pieces (dropped whole) and 8 pieces (kept)
        " ".join(FILLER[20000 + 900 * i : 20000 + 900 * i + 800] + " " + " ".join(PASSAGES[10 + i].split()[:14]) for i in range(12)),
        " ".join(FILLER[40000 + 900 * i : 40000 + 900 * i + 800] + " " + " ".join(PASSAGES[30 + i].split()[:14]) for i in range(8)),
        FILLER[50000:50300] + " " + PASSAGES[20] + " and " + PASSAGES[21] + " " + FILLER[50300:50500],  # windows that meet
    ]
    removed = Removed()
    got = list(pieces(docs, index, rule, removed))
    for doc, kept in zip(docs, got):
        want = expected_pieces(doc, tests, rule)
        assert kept == (want or []), doc[:80]
    assert got[0] == [docs[0]] and len(got[1]) == 2 and got[3] == [] and len(got[4]) == 8
    assert removed.documents == 6 and removed.contaminated == 5 and removed.dropped_documents == 1
    assert removed.kept_chars == sum(len(p) for k in got for p in k) and removed.dropped_pieces >= 1
    assert list(decontaminate(iter(docs), index, rule)) == [p for k in got for p in k]  # a stage over any iterable


def test_rule_parameters():
    index = NgramIndex.of([PASSAGES[0]], 8)
    doc = FILLER[:1000] + " " + PASSAGES[0] + " " + FILLER[1000:1120]
    at = doc.index(PASSAGES[0])
    first = at + re.search(r"[^\W_]", PASSAGES[0]).start()  # the passage's first and last word
    last = at + max(m.end() for m in re.finditer(r"[^\W_]+", PASSAGES[0]))
    assert list(decontaminate([doc], index, Rule(n=8, window=0, min_piece=0))) == [doc[:first], doc[last:]]
    # 50 characters either side; the tail left (about 70 characters) is under the 100-character minimum
    assert list(decontaminate([doc], index, Rule(n=8, window=50, min_piece=100))) == [doc[: first - 50]]
    assert list(decontaminate([doc], index, Rule(n=8, window=50, min_piece=100, max_pieces=1))) == []  # 2 pieces before the short one goes
    assert list(decontaminate([doc + " " + PASSAGES[0] + FILLER[:500]], index, Rule(n=8, window=0, max_pieces=2))) == []  # 3 pieces
    with pytest.raises(ValueError, match="13-grams"):
        list(pieces([doc], index, Rule()))


def test_common_test_ngrams_are_exempt():
    phrase = "all rights reserved no part of this publication may be reproduced in any form"
    index = NgramIndex.of([phrase + " " + PASSAGES[1]], 13)
    docs = [FILLER[2000 * i : 2000 * i + 900] + " " + phrase + " " + FILLER[2000 * i + 900 : 2000 * i + 1800] for i in range(11)]
    frequent = common_ngrams(docs, index, 10)
    assert len(frequent) == 2  # the phrase's 14 words hold two 13-grams, each in 11 documents
    assert list(decontaminate(docs, index.without(frequent))) == docs
    assert all(phrase not in p for p in decontaminate(docs, index))
    assert len(common_ngrams(docs, index, 11)) == 0


def contaminated_corpus(tmp_path) -> list[str]:
    """60 documents of Shakespeare, every third with a LAMBADA passage inside, as train.jsonl."""
    docs = []
    for i in range(60):
        doc = FILLER[1700 * i : 1700 * i + 1500]
        if i % 3 == 0:
            doc += " " + PASSAGES[i] + " " + FILLER[1700 * i + 1500 : 1700 * i + 1700]
        docs.append(doc)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return docs


def test_command(tmp_path):
    docs = contaminated_corpus(tmp_path)
    assert main(["-q", "overlap", "decontaminate", "--input", str(tmp_path / "train.jsonl"), "--tasks", "lambada",
                 "--data-dir", str(SHARED), "--out", str(tmp_path / "clean.jsonl")]) == 0
    out = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "clean.jsonl.stats.json").read_text())
    assert stats["documents"] == 60 and stats["contaminated"] == 20 and stats["kept_pieces"] == len(out)
    assert stats["rule"] == {"n": 13, "window": 200, "min_piece": 200, "max_pieces": 10}
    everything = NgramIndex.of(PASSAGES, 13)
    assert not any(everything.contains(NgramIndex.of([r["text"]], 13).keys).any() for r in out)  # no LAMBADA 13-gram is left
    assert [r["text"] for r in out if r["document"] % 3] == [d for i, d in enumerate(docs) if i % 3]  # the others untouched
    assert all(r["source"] == str(tmp_path / "train.jsonl") for r in out)
    assert list(decontaminate(docs, NgramIndex.of(PASSAGES, 13))) == [r["text"] for r in out]


def test_bad_input(capsys, tmp_path):
    (tmp_path / "t.txt").write_text("some training text")
    (tmp_path / "short.txt").write_text("too short to hold a thirteen word n-gram")
    for args, fragment in [
        (["--tasks", "lambada"], "lambada-test is not available"),
        (["--test-input", str(tmp_path / "short.txt")], "hold no 13-grams"),
        ([], "--tasks"),
        (["--tasks", "lambada", "--max-pieces", "0"], "--max-pieces"),
    ]:
        code = main(["overlap", "decontaminate", "--input", str(tmp_path / "t.txt"), "--out", str(tmp_path / "o.jsonl"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and fragment in err[-1] and len(err) == 1, err
    assert not (tmp_path / "o.jsonl").exists()


def test_prepare_option(tmp_path):
    from gpt2.data.shards import TokenDataset

    docs = contaminated_corpus(tmp_path)
    kept = list(decontaminate(docs, NgramIndex.of(PASSAGES, 13)))
    prepare = ["-q", "prepare", "--input", str(tmp_path / "train.jsonl"), "--tokenizer", str(GPT2_BPE), "--val-fraction", "0"]
    assert main([*prepare, "--out", str(tmp_path / "data"), "--decontaminate", "lambada", "--decontaminate-data-dir", str(SHARED)]) == 0
    dataset = TokenDataset(tmp_path / "data")
    text = dataset.tokenizer().decode(dataset.stream("train").read(0, dataset.num_tokens("train")).tolist())
    assert text.split("<|endoftext|>")[1:] == kept  # each kept piece is a document
    assert dataset.manifest["settings"]["decontaminate"] == {"tasks": ["lambada"], "n": 13}
    assert main([*prepare, "--out", str(tmp_path / "plain")]) == 0
    plain = TokenDataset(tmp_path / "plain")
    assert plain.fingerprint != dataset.fingerprint and "decontaminate" not in plain.manifest["settings"]
    assert plain.tokenizer().decode(plain.stream("train").read(0, plain.num_tokens("train")).tolist()).split("<|endoftext|>")[1:] == docs
