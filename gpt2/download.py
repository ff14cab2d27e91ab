"""Fetch a file once into the user's cache, checked against a pinned sha256.

Used for the GPT-2 tokenizer files, corpora and evaluation datasets. The cache
is `$GPT2_CACHE` (default `$XDG_CACHE_HOME/gpt2`, i.e. `~/.cache/gpt2`). With
`GPT2_OFFLINE=1` nothing is downloaded and a missing file is a one-line error
that says where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from gpt2.errors import GPT2Error

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    if os.environ.get("GPT2_CACHE"):
        return Path(os.environ["GPT2_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt2"


def offline() -> bool:
    return os.environ.get("GPT2_OFFLINE", "").lower() in ("1", "true", "yes")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, sha256: str | None, dest: Path, what: str | None = None, *, md5: str | None = None) -> Path:
    """Return `dest`, downloading `url` there first unless a copy is present.

    The download, and a copy already in place, must match `sha256`. Where no
    sha256 was ever published, pass None (and the published `md5` if there is
    one): the caller then checks the file's format itself.
    """
    what = what or dest.name
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    if offline():
        checksum = f" (sha256 {sha256})" if sha256 else ""
        raise GPT2Error(
            f"{what} is not in the cache and GPT2_OFFLINE is set: download {url}{checksum} "
            f"to {dest}, or unset GPT2_OFFLINE"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s -> %s", url, dest)
    h = hashlib.sha256()
    h_md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=None) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    h_md5.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise GPT2Error(
            f"could not download {what} from {url} ({reason}); check the connection, or place the file "
            f"at {dest} yourself and set GPT2_OFFLINE=1"
        ) from None
    for name, expected, digest in (("sha256", sha256, h), ("md5", md5, h_md5)):
        if expected and digest.hexdigest() != expected:
            part.unlink(missing_ok=True)
            raise GPT2Error(
                f"{url} has {name} {digest.hexdigest()}, expected {expected}: the download is corrupt or the file changed"
            )
    os.replace(part, dest)
    return dest
