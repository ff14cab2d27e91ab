"""The Bloom filter: the paper's sizing, no false negatives, the false-positive rate measured against its design,
`gpt2 overlap build` on the shared data (one process and two give the same bits), and damaged or mismatched
filter files as one-line errors."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from conftest import SHARED, read_text
from gpt2.cli import main
from gpt2.overlap import bloom as B
from gpt2.overlap.ngrams import ngram_keys, random_keys

TRAIN = [SHARED / "wikitext2_tokens" / "wiki.valid.tokens", SHARED / "ptb" / "ptb.valid.txt"]


def run(capsys, *args: str) -> tuple[int, str]:
    """`gpt2 ARGS` in this process: (exit status, what it printed to stderr)."""
    code = main(list(args))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and "error:" in lines[-1] and "Traceback" not in err, err
    assert all(f in lines[-1] for f in fragments), lines[-1]
    assert len([line for line in lines if "error" in line]) == 1


def test_design_matches_the_paper():
    m, k = B.design(10**9, 1e-8)
    assert k == 27 and 38.3 < m / 10**9 < 38.4  # "about 38.3 bits per n-gram and k = 27"
    assert B.false_positive_rate(m, k, 10**9) <= 1e-8 < B.false_positive_rate(m - 10**6, k, 10**9)
    m, k = B.design(123_457, 1e-3)
    assert B._is_prime(m) and k == 10 and B.false_positive_rate(m, k, 123_457) <= 1e-3
    assert [p for p in range(90) if B._is_prime(p)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89]
    assert B._is_prime(2**61 - 1) and not B._is_prime(3_215_031_751)  # a strong pseudoprime to bases 2, 3, 5 and 7


def test_no_false_negatives_and_the_measured_false_positive_rate():
    real, _ = ngram_keys([read_text(p) for p in TRAIN], 8)
    keys = np.concatenate([real, random_keys(50_000, 8, seed=1)])
    distinct = len(np.unique(keys))
    bloom = B.BloomFilter.for_items(distinct, 1e-3)
    bloom.add(keys)
    assert bloom.contains(keys).all() and int(keys[7]) in bloom
    # the same bits when added in stripes under locks (as worker processes do)
    striped = B.BloomFilter.for_items(distinct, 1e-3)
    striped.add(keys, locks=[threading.Lock() for _ in range(16)])
    assert np.array_equal(striped.bits, bloom.bits)
    # 1M strings never added: hits are false positives; their rate is within the design (binomial, 4 sigma)
    queries = random_keys(1_000_000, 8, seed=2)
    rate = bloom.contains(queries).mean()
    expected = B.false_positive_rate(bloom.m, bloom.k, distinct)
    assert expected <= 1e-3
    assert abs(rate - expected) < 4 * math.sqrt(expected / 1e6), (rate, expected)
    assert 0.49 < bloom.fill() < 0.51  # a filter filled to its design has half its bits set


def test_build_on_the_shared_data(capsys, tmp_path):
    code, err = run(capsys, "overlap", "build", "--input", *map(str, TRAIN), "--out", str(tmp_path / "one.bloom"), "--workers", "1")
    assert code == 0, err
    one = B.open_filter(tmp_path / "one.bloom", n=8)
    keys, _ = ngram_keys([read_text(p) for p in TRAIN], 8)
    h = one.header
    assert h["ngrams"] == len(keys) and h["distinct"] == len(np.unique(keys)) and h["distinct_exact"]
    assert (h["n"], h["k"], h["fp_rate"]) == (8, 27, 1e-8) and 38.3 < h["m"] / h["distinct"] < 38.4
    assert h["random_queries"] == 1_000_000 and h["random_hits"] == 0 and h["expected_fp_rate"] <= 1e-8
    assert one.contains(keys).all()
    assert "0 of 1,000,000 random strings found" in err and "38.34 bits per distinct n-gram" in err
    assert not (tmp_path / "one.bloom.part").exists()
    # two worker processes set the same bits
    code, err = run(capsys, "overlap", "build", "--input", *map(str, TRAIN), "--out", str(tmp_path / "two.bloom"), "--workers", "2",
                    "--random-queries", "0")
    assert code == 0, err
    assert B.open_filter(tmp_path / "two.bloom").header["bits_sha256"] == h["bits_sha256"]
    # an existing filter is kept unless --force
    code, err = run(capsys, "overlap", "build", "--input", str(TRAIN[0]), "--out", str(tmp_path / "one.bloom"))
    assert_one_line_error(code, err, "exists", "--force")
    assert B.read_header(tmp_path / "one.bloom")["bits_sha256"] == h["bits_sha256"]


@pytest.fixture(scope="module")
def small_filter(tmp_path_factory):
    path = tmp_path_factory.mktemp("filter") / "ptb.bloom"
    assert main(["-q", "overlap", "build", "--input", str(TRAIN[1]), "--out", str(path), "--workers", "1", "--random-queries", "0"]) == 0
    return path


def _damage(path, tmp_path, how: str):
    data = bytearray(path.read_bytes())
    header = B.read_header(path)
    bad = tmp_path / f"{how}.bloom"
    if how == "truncated":
        data = data[: len(data) - 100]
    elif how == "bit-flip":
        data[B.HEADER_BYTES + 1000] ^= 0x10
    elif how == "not-a-filter":
        data = b"just some text\n" * 10
    elif how == "garbled-header":
        data[20:40] = b"\xff" * 20
    elif how in ("normalisation", "hash", "version"):
        header = {**header, "normalization": "lower-only"} if how == "normalisation" else {**header, "hash": "md5"}
        head = B._encode_header(header)
        if how == "version":
            head = head[:8] + (2).to_bytes(4, "little") + head[12:]
        data[: B.HEADER_BYTES] = head
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize(
    "how, fragments",
    [
        ("truncated", ("truncated", "build it again")),
        ("bit-flip", ("corrupt", "checksum")),
        ("not-a-filter", ("not a Bloom filter",)),
        ("garbled-header", ("corrupt header",)),
        ("normalisation", ("normalisation 'lower-only'", "nfc-isalnum-lower-v1")),
        ("hash", ("hash 'md5'",)),
        ("version", ("format version 2",)),
    ],
)
def test_damaged_or_foreign_filters_are_one_line_errors(capsys, tmp_path, small_filter, how, fragments):
    bad = _damage(small_filter, tmp_path, how)
    code, err = run(capsys, "overlap", "report", "--filter", str(bad), "--input", str(TRAIN[0]), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "r" / "overlap.json").exists()


def test_other_bad_input_is_one_line_errors(capsys, tmp_path, small_filter):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.jsonl").write_text('{"text": "only five words in here"}\n')
    cases = [
        (["overlap", "report", "--filter", str(small_filter), "--n", "13", "--input", str(TRAIN[0]), "--out", str(tmp_path / "r")],
         ("holds 8-grams, not 13-grams",)),
        (["overlap", "build", "--input", str(tmp_path / "empty.txt"), str(tmp_path / "short.jsonl"), "--out", str(tmp_path / "x.bloom")],
         ("hold no 8-grams",)),
        (["overlap", "build", "--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.bloom")], ("does not exist",)),
        (["overlap", "build", "--input", str(TRAIN[0]), "--out", str(tmp_path / "x.bloom"), "--fp-rate", "2"], ("--fp-rate",)),
        (["overlap", "report", "--filter", str(tmp_path / "none.bloom"), "--input", str(TRAIN[0]), "--out", str(tmp_path / "r")],
         ("does not exist", "gpt2 overlap build")),
        (["overlap", "report", "--filter", str(small_filter), "--out", str(tmp_path / "r")], ("--tasks",)),
        (["overlap", "report", "--filter", str(small_filter), "--tasks", "nonsense", "--out", str(tmp_path / "r")], ("unknown task",)),
        (["overlap", "report", "--filter", str(small_filter), "--input", str(TRAIN[0]), "--own-train", "ptb", "--out", str(tmp_path / "r")],
         ("NAME=FILE",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(*run(capsys, *args), *fragments)
    assert not (tmp_path / "x.bloom").exists() and not (tmp_path / "x.bloom.part").exists()


def test_header_records_what_was_built(small_filter):
    header = B.read_header(small_filter)
    assert header["inputs"]["paths"] == [str(TRAIN[1])] and header["inputs"]["bytes"] == TRAIN[1].stat().st_size
    assert header["normalization"] == "nfc-isalnum-lower-v1" and header["hash"] == "blocks-fmix64-poly-v1"
    raw = small_filter.read_bytes()
    assert raw[:8] == b"GPT2BLMF" and int.from_bytes(raw[8:12], "little") == 1
    length = int.from_bytes(raw[12:16], "little")
    assert json.loads(raw[16 : 16 + length]) == header
    assert len(raw) == B.HEADER_BYTES + (header["m"] + 63) // 64 * 8


def test_an_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    from gpt2.config import OverlapBuildConfig
    from gpt2.overlap import build

    def interrupted(*args, **kwargs):
        assert (tmp_path / "f.bloom.part").exists()  # the bits are filled in the .part file
        raise KeyboardInterrupt

    monkeypatch.setattr(build.B, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.build(OverlapBuildConfig(input=[TRAIN[1]], out=tmp_path / "f.bloom", workers=1, random_queries=0))
    assert list(tmp_path.iterdir()) == []


def test_the_large_corpus_path_reads_twice_and_estimates(tmp_path, monkeypatch):
    """Above the memory budget the second pass hashes the text again; above the sketch the count is estimated:
    the same n-grams go in either way, and the estimate's margin keeps the false-positive bound."""
    from gpt2.config import OverlapBuildConfig
    from gpt2.overlap import build

    def run(name: str) -> dict:
        return build.build(OverlapBuildConfig(input=[TRAIN[1]], out=tmp_path / name, workers=1, random_queries=0))

    exact = run("exact.bloom")
    monkeypatch.setattr(build, "KEEP_KEYS_BYTES", 1)
    assert run("reread.bloom")["bits_sha256"] == exact["bits_sha256"]
    monkeypatch.setattr(build, "SKETCH", 4096)
    estimated = run("estimated.bloom")
    assert exact["distinct_exact"] and not estimated["distinct_exact"] and estimated["ngrams"] == exact["ngrams"]
    assert abs(estimated["distinct"] / exact["distinct"] - 1) < 4 / math.sqrt(4094)
    assert estimated["capacity"] >= exact["distinct"] and estimated["expected_fp_rate"] <= 1e-8
    keys, _ = ngram_keys([read_text(TRAIN[1])], 8)
    assert B.open_filter(tmp_path / "estimated.bloom").contains(keys).all()
