"""A training run's directory: what marks it as a run, whether to start or resume, and what it records.

OUT/run.json is written first when a run starts (the command line, package
version, git commit, model, data); a folder that is not empty and holds no
run.json of a run is never written to. OUT/config.toml is the resolved
configuration; checkpoints live in OUT/checkpoints (gpt2/checkpoint.py).
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
from pathlib import Path

from gpt2 import __version__, checkpoint
from gpt2.atomic import write_atomic

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    """The commit of the source tree this package runs from (with '-dirty' for local changes), if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def holds_a_run(out: Path) -> bool:
    """Whether `out` holds the run.json that a training run writes as it starts."""
    try:
        info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and {"command", "model", "dataset"} <= info.keys()


def resume_decision(out: Path, resume: bool, command: str) -> tuple[str | None, str | None]:
    """(error, checkpoint to resume from) for a run writing to `out`; `command` names it in messages."""
    ckpt_dir = out / "checkpoints"
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a directory; choose another --out", None
    if out.is_dir() and any(out.iterdir()) and not holds_a_run(out):
        return (
            f"{out} is not empty and holds no run of `{command}` (no run.json of one); "
            f"choose a new or empty --out, so that nothing in it is overwritten"
        ), None
    found = checkpoint.latest(ckpt_dir)
    damaged = checkpoint.incomplete(ckpt_dir)
    if found is not None and damaged and damaged[-1].name > found.name and resume:
        log.warning(
            "%s is not a complete checkpoint (%s is missing): resuming from %s, the newest complete one",
            damaged[-1], checkpoint.missing_file(damaged[-1]), found.name,
        )
    if found is None:
        if damaged:
            return (
                f"{damaged[-1]} is not a complete checkpoint ({checkpoint.missing_file(damaged[-1])} is missing) and "
                f"{ckpt_dir} holds no other; restore it, or choose another --out"
            ), None
        done = [name for name in ("model", "metrics.jsonl") if (out / name).exists()]
        if "model" in done:
            return (
                f"{out} holds a finished run ({', '.join(done)}) but no checkpoint to continue from; "
                f"choose another --out, or delete {out} to run it again"
            ), None
        if done and not resume:  # killed before its first checkpoint
            return f"{out} holds a run that stopped before its first checkpoint; pass --resume to start it again", None
        if resume:
            log.info("no checkpoint in %s yet: starting from the beginning", ckpt_dir)
        return None, None
    if not resume:
        return (
            f"{out} already holds a run (newest checkpoint: {found.name}); pass --resume to continue it, "
            f"or choose another --out"
        ), None
    return None, str(found)


def write_run_info(out: Path, info: dict) -> None:
    """OUT/run.json: the command line, version and commit, then what the run says of itself (`info`)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": sys.argv,
        "version": __version__,
        "git_commit": git_commit(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        **info,
    }
    write_atomic(out / "run.json", json.dumps(record, indent=1) + "\n")


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
