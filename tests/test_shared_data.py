"""The test suite's own data (tests/shared_data.py, tests/conftest.py): without the shared data folder the tests
find their files in the cache, and a file that cannot be had skips the tests that read it with one line saying
what to download and where to put it, not with a traceback."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys

from conftest import REPO, SHARED
from shared_data import FILES, resolve, source

# a test that opens files itself, one whose subprocess reports a missing file, one that passes a file to the library
SOME_TESTS = [
    "tests/test_eval_datasets.py::test_wsc273_real_file_agrees_with_an_independent_copy",
    "tests/test_cli.py::test_train_encode_decode",
    "tests/test_eval_datasets.py::test_nq_story_cloze_cola_real_files",
]


def pytest_run(tmp_path, data_dir, *tests: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPT2_SHARED_DATASETS": str(data_dir), "GPT2_OFFLINE": "1", "GPT2_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-W", "ignore::DeprecationWarning", *tests],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_the_files_match_their_checksums_in_the_data_folder():
    """The table's checksums are those of the data folder's files (so a download is checked against them)."""
    for rel, (url, sha256) in FILES.items():
        assert url.startswith("https://") and hashlib.sha256((SHARED / rel).read_bytes()).hexdigest() == sha256, rel


def test_without_the_data_each_missing_file_is_one_line_and_a_cached_copy_is_used(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    r = pytest_run(tmp_path, empty, *SOME_TESTS)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "3 skipped" in out and "Traceback" not in out and "Error" not in out, out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 3, out
    cache = tmp_path / "cache" / "eval" / "test-data"
    for rel in ("wsc/WSCollection.xml", "botchan/botchan.txt", "nq_open/NQ-open.dev.jsonl"):
        url, sha256 = FILES[rel]
        (line,) = [s for s in skips if f" {rel} is missing" in s]
        assert f"(GPT2_OFFLINE is set): download {url} (sha256 {sha256}) to {cache / rel}, or set GPT2_SHARED_DATASETS" in line

    # the files in the cache, where the skip said: those tests run (and pass)
    for rel in ("wsc/WSCollection.xml", "wsc/wsc273_vidkoci_masked.txt", "botchan/botchan.txt"):
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED / rel, cache / rel)
    r = pytest_run(tmp_path, empty, *SOME_TESTS)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and re.search(r"\b2 passed, 1 skipped\b", out), out


def test_a_partial_data_folder_is_completed_from_the_cache(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for rel in FILES:
        if not rel.startswith("gpt2_bpe/"):
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).symlink_to(SHARED / rel)
    monkeypatch.setenv("GPT2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    shutil.copytree(SHARED / "gpt2_bpe", tmp_path / "cache" / "eval" / "test-data" / "gpt2_bpe")
    found = resolve(data)
    assert not found.missing and found.root == tmp_path / "cache" / "eval" / "test-data"
    assert found.origin["gpt2_bpe/vocab.bpe"] == "cache" and found.origin["botchan/botchan.txt"] == "data-dir"
    assert all((found.root / rel).read_bytes() == (SHARED / rel).read_bytes() for rel in FILES)
    # a damaged copy is not used: the skip says so
    (tmp_path / "cache" / "eval" / "test-data" / "gpt2_bpe" / "vocab.bpe").write_text("#version: 0.2\n")
    assert "has sha256" in resolve(data).missing["gpt2_bpe/vocab.bpe"]
    assert source("botchan/botchan.txt").paths == ("botchan/botchan.txt",)
