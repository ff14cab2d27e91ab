"""Shared fixtures: the real data files the tests read, and reference tokenizers.

The data files (OpenAI's GPT-2 vocabulary in gpt2_bpe/, LAMBADA, WikiText-2, PTB, ...) are found as
tests/shared_data.py describes: in the data folder (GPT2_SHARED_DATASETS, default ../shared/datasets),
else in the cache, else downloaded once from pinned URLs and checked against their sha256 (never with
GPT2_OFFLINE=1). `SHARED` is the folder that holds them. A file that cannot be had skips the tests that
read it, each skip one line saying what to download and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared_data import FILES, resolve

REPO = Path(__file__).resolve().parents[1]
DATA = resolve()
SHARED = DATA.root
GPT2_BPE = SHARED / "gpt2_bpe"


def need(*files: str) -> None:
    """Skip the calling test (or fixture) if one of these files of SHARED could not be had, saying what to fetch."""
    for rel in files:
        if rel in DATA.missing:
            pytest.skip(DATA.missing[rel])


def pytest_report_header(config) -> str:
    if not DATA.missing:
        return f"test data: all {len(FILES)} files in {SHARED}"
    return (
        f"test data: {len(DATA.missing)} of {len(FILES)} files could not be had (see tests/shared_data.py); the tests that "
        f"read one are skipped, each skip saying what to download"
    )


if DATA.missing:
    # A test that opens a missing file is skipped with the line that says what to fetch, not failed with a
    # traceback; so is one whose failure names a missing file (a subprocess's stderr, a library's error).
    _MISSING = {os.path.abspath(SHARED / rel): message for rel, message in DATA.missing.items()}

    def _skip_on_open(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
            message = _MISSING.get(os.path.abspath(os.fspath(args[0])))
            if message is not None:
                pytest.skip(message, allow_module_level=True)

    sys.addaudithook(_skip_on_open)

    _MESSAGES = {f"Skipped: {message}" for message in DATA.missing.values()}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        report = (yield).get_result()
        here = (__file__, need.__code__.co_firstlineno)  # one place for every such skip: the summary counts them per file
        if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2] in _MESSAGES:
            report.longrepr = (*here, report.longrepr[2])
        if not report.failed:
            return
        text = report.longreprtext
        for rel, message in DATA.missing.items():
            absent = [SHARED / rel, *(SHARED / p for p in Path(rel).parents if p != Path(".") and not (SHARED / p).exists())]
            if any(str(p) in text for p in absent):
                report.outcome = "skipped"
                report.longrepr = (*here, f"Skipped: {message}")
                return


COMPRESSED = (".gz", ".xz", ".bz2", ".zst")


def shared_text_files() -> list[Path]:
    """Every text file of ../shared/datasets except the tokenizer's own files and the compressed ones (the
    Reddit dumps and the web pages, which the corpus-building tests read)."""
    files = [p for p in SHARED.rglob("*") if p.is_file() and p.parent.name != "gpt2_bpe" and p.suffix not in COMPRESSED]
    return sorted(files)


def read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from gpt2.tokenizer import Tokenizer

    need("gpt2_bpe/encoder.json", "gpt2_bpe/vocab.bpe")
    return Tokenizer.load(GPT2_BPE)


@pytest.fixture(scope="session")
def tiktoken_gpt2(tmp_path_factory):
    """tiktoken's own GPT-2 encoding, loaded by tiktoken's code path from the official files (no network)."""
    from gpt2.tokenizer import GPT2_FILES

    need("gpt2_bpe/encoder.json", "gpt2_bpe/vocab.bpe")
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name, (url, _) in GPT2_FILES.items():
        shutil.copy(GPT2_BPE / name, cache / hashlib.sha1(url.encode()).hexdigest())
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        import tiktoken

        enc = tiktoken.get_encoding("gpt2")
        enc.encode_ordinary("warm up")
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR")
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    return enc


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None, timeout: float | None = 600
) -> subprocess.CompletedProcess:
    """Run `python -m gpt2 ...` in a subprocess, offline. `timeout` None: as long as it takes (a slow machine
    makes a long test slower, not red)."""
    full_env = {**os.environ, "GPT2_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gpt2", *args], cwd=cwd, env=full_env, input=input, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`): one thread is
    faster than several there, and undisturbed by other busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
