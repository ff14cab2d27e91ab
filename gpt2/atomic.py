"""Atomic writes that end with the permissions an ordinary write would give.

A crash must leave either the old file or the new one, never half of one, so
files are written to a temporary sibling and renamed over the target (rename
is atomic on POSIX). The temporary files some writers make are private
whatever the umask: `tempfile.mkdtemp` creates mode 0700 directories and
safetensors' `save_file` mode 0600 files. Renamed into place they would stay
private, so a model exported with umask 022 could not be read by anyone else.

Everything written here therefore ends with the mode `open()` / `mkdir()`
would have given it: a new file 0666 and a new directory 0777, less the umask;
a file that replaces another keeps the mode of the one it replaces.

    >>> import os, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> old = os.umask(0o022); write_atomic(path, "hello\\n"); _ = os.umask(old)
    >>> oct(path.stat().st_mode & 0o777), path.read_text()
    ('0o644', 'hello\\n')
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask (read from /proc where Linux has it, else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(directory: bool = False) -> int:
    """The mode a new file (or directory) gets from open() (or mkdir()) under the current umask."""
    return (0o777 if directory else 0o666) & ~umask()


def make_ordinary(path: str | Path, like: str | Path | None = None) -> None:
    """Give `path` the mode of `like` if that exists (the file it is about to replace), else the mode a new
    file or directory would have."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(like).st_mode) if like is not None else None
    except FileNotFoundError:
        mode = None
    if mode is None:
        mode = ordinary_mode(directory=path.is_dir())
    os.chmod(path, mode)


def temporary_dir(beside: str | Path) -> Path:
    """A new, empty, hidden directory next to `beside` (so that renaming it onto `beside` is atomic),
    with the mode mkdir() would give it."""
    beside = Path(beside)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent))
    make_ordinary(tmp)
    return tmp


def write_atomic(path: str | Path, data: str | bytes, *, fsync: bool = False) -> None:
    """Write `data` (text is written as UTF-8) to `path` atomically: readers see the old file or the new
    one. With `fsync` the bytes are on disk before the rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        make_ordinary(tmp, like=path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left only if writing or renaming failed
