"""The overlap study's normalisation and n-gram stream: Unicode cases, an independent per-character reference on
the shared texts, keys that identify n-grams, document boundaries, and one stream from text, JSONL and shards."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from conftest import GPT2_BPE, SHARED, read_text, shared_text_files
from gpt2.overlap.documents import iter_documents, list_inputs
from gpt2.overlap.ngrams import ngram_keys, ngrams, random_keys, word_spans, words


def reference_words(text: str) -> list[bytes]:
    """The rule written out character by character: NFC, maximal runs of str.isalnum(), each lower-cased."""
    out, word = [], ""
    for ch in unicodedata.normalize("NFC", text) + " ":
        if ch.isalnum():
            word += ch
        elif word:
            out.append(word.lower().encode("utf-8"))
            word = ""
    return out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello,  World!\tnew\nline", ["hello", "world", "new", "line"]),
        ("Café au lait", ["café", "au", "lait"]),  # precomposed é is a letter
        ("Cafe\u0301 au lait", ["café", "au", "lait"]),  # a combining accent: NFC composes it first
        ("q\u0301uiet", ["q", "uiet"]),  # a mark with no precomposed form separates words
        ("北京欢迎你 東京", ["北京欢迎你", "東京"]),  # CJK has no spaces: a run of ideographs is one word
        ("3.14 x² ٣٤ Ⅻ", ["3", "14", "x²", "٣٤", "ⅻ"]),  # digits of every script, superscripts, numerals
        ("don't isn’t O'Brien", ["don", "t", "isn", "t", "o", "brien"]),  # straight and curly apostrophes separate
        ("snake_case __init__", ["snake", "case", "init"]),  # "_" is not alphanumeric
        ("STRASSE Straße ΟΔΟΣ İstanbul", ["strasse", "straße", "οδος", "i̇stanbul"]),  # lower(), not casefold()
        ("emoji 🙂 and\u00a0nbsp", ["emoji", "and", "nbsp"]),
        ("", []),
        ("... --- !!!", []),
    ],
)
def test_normalisation(text, expected):
    assert words(text) == [w.encode("utf-8") for w in expected]
    assert words(text) == reference_words(text)


def test_final_sigma_is_decided_inside_the_word():
    # "Σ" followed by an apostrophe and a letter is not word-final in the text, but it ends its word
    assert words("ΟΔΟΣ'Α") == ["οδος".encode(), "α".encode()]


def test_words_and_spans_equal_the_reference_on_every_shared_text():
    for path in shared_text_files():
        text = read_text(path)[:200_000]
        expected = reference_words(text)
        assert words(text) == expected, path
        nfc, starts, ends = word_spans(text)
        assert [nfc[a:b].lower().encode("utf-8") for a, b in zip(starts, ends)] == expected, path


def test_keys_identify_ngrams_and_never_cross_documents():
    texts = [read_text(p) for p in (SHARED / "wikitext2_tokens" / "wiki.valid.tokens", SHARED / "ptb" / "ptb.valid.txt",
                                    SHARED / "botchan" / "botchan.txt")]
    keys, offsets = ngram_keys(texts, 8)
    key_of: dict[tuple, int] = {}
    for i, text in enumerate(texts):
        w = words(text)
        grams = [tuple(w[j : j + 8]) for j in range(len(w) - 7)]
        assert offsets[i + 1] - offsets[i] == len(grams)
        for gram, key in zip(grams, keys[offsets[i] : offsets[i + 1]].tolist()):
            assert key_of.setdefault(gram, key) == key
    assert len(set(key_of.values())) == len(key_of) > 250_000  # distinct n-grams get distinct keys
    # a document's keys do not depend on its neighbours: no n-gram spans two documents
    alone = [ngram_keys([t], 8)[0] for t in texts]
    assert np.array_equal(np.concatenate(alone), keys)
    k, off = ngram_keys(["a b c", "", "d e f", "g"], 2)
    assert off.tolist() == [0, 2, 2, 4, 4]
    assert np.array_equal(k, np.concatenate([ngram_keys(["a b c"], 2)[0], ngram_keys(["d e f"], 2)[0]]))
    assert ngrams("A b, C!", 2) == ["a b", "b c"]


def test_keys_are_the_same_in_every_process():
    # pinned: a change of the hash must change ngrams.HASH, which filters record
    code = "from gpt2.overlap.ngrams import ngram_keys; print(ngram_keys(['The quick brown fox jumps over the lazy dog'], 8)[0].tolist())"
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": seed}, check=True)
        assert out.stdout.strip() == "[6365433322564900737, 10068396488679303612]"
    r = random_keys(100_000, 8, seed=3)
    assert len(np.unique(r)) == len(r) and np.array_equal(r, random_keys(100_000, 8, seed=3))


def test_the_same_stream_from_text_jsonl_and_token_shards(tmp_path):
    from gpt2.config import PrepareConfig
    from gpt2.data.prepare import prepare

    passages = [json.loads(line)["text"] for line in read_text(SHARED / "lambada" / "lambada_test.jsonl").splitlines()[:40]]
    docs = passages + [read_text(SHARED / "botchan" / "botchan.txt")[:30_000], "Ünïcödé — Straße 北京 3.14 don't", "two words"]
    texts = []
    for i, d in enumerate(docs):
        texts.append(tmp_path / "text" / f"{i:03d}.txt")
        texts[-1].parent.mkdir(exist_ok=True)
        texts[-1].write_text(d, encoding="utf-8")
    lines = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    (tmp_path / "docs.jsonl").write_text(lines, encoding="utf-8")
    (tmp_path / "docs.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    prepare(PrepareConfig(input=[tmp_path / "docs.jsonl"], out=tmp_path / "shards", tokenizer=str(GPT2_BPE), val_fraction=0.0,
                          shard_tokens=4096))  # small shards: documents span shard boundaries
    kinds = {
        "text files": [tmp_path / "text"],
        "jsonl": [tmp_path / "docs.jsonl"],
        "jsonl.gz": [tmp_path / "docs.jsonl.gz"],
        "token shards": [tmp_path / "shards"],
    }
    try:
        import zstandard

        (tmp_path / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
        kinds["jsonl.zst"] = [tmp_path / "docs.jsonl.zst"]
    except ImportError:
        pass
    expected = ngram_keys(docs, 8)
    assert len(list_inputs([tmp_path / "shards"])) == 1
    for kind, paths in kinds.items():
        read = [d for inp in list_inputs(paths) for d in iter_documents(inp)]
        assert read == docs, kind
        keys, offsets = ngram_keys(read, 8)
        assert np.array_equal(keys, expected[0]) and np.array_equal(offsets, expected[1]), kind
