"""gpt2.download: checksummed fetch into a cache, offline behaviour (file:// URLs, no network)."""

from __future__ import annotations

import hashlib

import pytest

from gpt2.download import fetch
from gpt2.errors import GPT2Error


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "remote" / "data.txt"
    path.parent.mkdir()
    path.write_bytes(b"some corpus\n" * 1000)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_downloads_once_and_checks(tmp_path, source, monkeypatch):
    monkeypatch.delenv("GPT2_OFFLINE", raising=False)
    path, sha = source
    dest = tmp_path / "cache" / "data.txt"
    assert fetch(path.as_uri(), sha, dest) == dest and dest.read_bytes() == path.read_bytes()
    path.unlink()  # the cached copy is used from now on
    assert fetch(path.as_uri(), sha, dest).read_bytes() == dest.read_bytes()


def test_wrong_checksum_leaves_nothing(tmp_path, source, monkeypatch):
    monkeypatch.delenv("GPT2_OFFLINE", raising=False)
    path, _ = source
    dest = tmp_path / "cache" / "data.txt"
    with pytest.raises(GPT2Error, match="corrupt"):
        fetch(path.as_uri(), "0" * 64, dest)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_url_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_OFFLINE", raising=False)
    with pytest.raises(GPT2Error, match="could not download"):
        fetch((tmp_path / "missing.txt").as_uri(), "0" * 64, tmp_path / "cache" / "x")


def test_offline_names_url_and_destination(tmp_path, source, monkeypatch):
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    path, sha = source
    dest = tmp_path / "cache" / "data.txt"
    with pytest.raises(GPT2Error) as info:
        fetch(path.as_uri(), sha, dest)
    assert path.as_uri() in str(info.value) and str(dest) in str(info.value) and sha in str(info.value)
    assert not dest.exists()
