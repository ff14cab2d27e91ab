"""Shared fixtures: the real datasets in ../shared/datasets and reference tokenizers.

Tests never download: OpenAI's GPT-2 files come from ../shared/datasets/gpt2_bpe
(override the location with GPT2_SHARED_DATASETS).
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
GPT2_BPE = SHARED / "gpt2_bpe"


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

    return Tokenizer.load(GPT2_BPE)


@pytest.fixture(scope="session")
def tiktoken_gpt2(tmp_path_factory):
    """tiktoken's own GPT-2 encoding, loaded by tiktoken's code path from the official files (no network)."""
    from gpt2.tokenizer import GPT2_FILES

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
