"""Training checkpoints: atomic saves, the last K plus the best, and all that an exact resume needs.

A checkpoint is one directory, OUT/checkpoints/step_0001000/:

    model.safetensors       the weights as trained (float32; the tied embedding stored once)
    optimizer.safetensors   AdamW's moments and step counts, named by parameter
    rng.safetensors         the random-number-generator states of every process (CPU, CUDA)
    state.json              step, tokens, data cursor, held-out loss, the optimizer's
                            hyper-parameters, the resolved config, git commit, version

Weights and optimizer state are safetensors, so loading a checkpoint never
unpickles anything. Saving is atomic: the files are written to a hidden
temporary directory and fsynced, then the directory is renamed into place
(rename is atomic on POSIX) and its parent fsynced; its files end with the
permissions a plain write would give them (gpt2/atomic.py). A save killed at any moment
leaves the earlier checkpoints as they were plus at most a hidden `.tmp`
directory that `latest()` never returns and the next save deletes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt2.atomic import make_ordinary
from gpt2.errors import GPT2Error

log = logging.getLogger(__name__)

FORMAT = "gpt2-checkpoint"
VERSION = 1
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")
_STEP = re.compile(r"step_(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    model: dict[str, torch.Tensor]
    optimizer: dict
    rng: dict[str, torch.Tensor]
    state: dict

    @property
    def step(self) -> int:
        return int(self.state["step"])


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:07d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _STEP.match(path.name)
        if m and path.is_dir() and not missing_file(path):
            found.append((int(m.group(1)), path))
    return sorted(found)


def incomplete(root: Path) -> list[Path]:
    """step_N directories under `root` that lack one of the checkpoint's files (damaged by hand: saves are atomic)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir() and missing_file(p)]
    return [p for _, p in sorted(found)]


def missing_file(path: Path) -> str | None:
    """The first of a checkpoint's files that `path` lacks, or None."""
    return next((f for f in FILES if not (Path(path) / f).is_file()), None)


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save(
    root: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    rng: dict[str, torch.Tensor],
    state: dict,
    *,
    keep_last: int = 3,
    keep_best: bool = True,
) -> Path:
    """Write a checkpoint for `step` atomically, then delete old ones (all but the last `keep_last` and the best)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in [*root.glob(".step_*.tmp-*"), *root.glob(".step_*.damaged-*")]:  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = step_dir(root, step)
    missing = missing_file(final) if final.exists() else None
    if final.exists() and not missing:
        log.debug("%s exists already; not saving it again", final)
        return final
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    tensors, groups = _flatten_optimizer(optimizer_state)
    _save_tensors(tmp / "model.safetensors", model_state)
    _save_tensors(tmp / "optimizer.safetensors", tensors)
    _save_tensors(tmp / "rng.safetensors", rng)
    meta = {**state, "format": FORMAT, "format_version": VERSION, "step": step, "optimizer_param_groups": groups}
    _write(tmp / "state.json", (json.dumps(meta, indent=1) + "\n").encode())
    _fsync_dir(tmp)
    if missing:  # an incomplete directory of this step (files deleted by hand): replaced by the complete one
        log.warning("%s was incomplete (%s missing): saving it again", final, missing)
        old = root / f".{final.name}.damaged-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    rotate(root, keep_last, keep_best)
    return final


RESUME_EARLIER = "move that directory out of checkpoints/ to resume from the one before it"


def load(path: Path) -> Checkpoint:
    """Read a checkpoint directory written by `save`."""
    path = Path(path)
    missing = missing_file(path)
    if missing:
        raise GPT2Error(f"{path} is not a complete checkpoint ({missing} is missing); {RESUME_EARLIER}")
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        model = load_file(path / "model.safetensors")
        tensors = load_file(path / "optimizer.safetensors")
        rng = load_file(path / "rng.safetensors")
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as e:
        raise GPT2Error(f"checkpoint {path} cannot be read ({e}); {RESUME_EARLIER}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("format_version") != VERSION:
        found = (state.get("format"), state.get("format_version")) if isinstance(state, dict) else (type(state).__name__, None)
        raise GPT2Error(f"{path} is not a version-{VERSION} {FORMAT} (found {found[0]} version {found[1]})")
    absent = [key for key in ("step", "optimizer_param_groups") if key not in state]
    if absent:
        raise GPT2Error(f"{path}/state.json has no {', '.join(absent)} (edited by hand?); {RESUME_EARLIER}")
    return Checkpoint(path, model, _unflatten_optimizer(tensors, state.pop("optimizer_param_groups")), rng, state)


def read_state(path: Path) -> dict | None:
    """A checkpoint's state.json alone (cheap: no tensors), or None if it cannot be read; `load` reports why."""
    try:
        state = json.loads((Path(path) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def rotate(root: Path, keep_last: int, keep_best: bool) -> None:
    """Delete all checkpoints but the newest `keep_last` and (with keep_best) the one with the lowest held-out loss."""
    found = list_checkpoints(root)
    keep = {path for _, path in found[-keep_last:]}
    if keep_best:
        scored = [(loss, path) for _, path in found if (loss := _val_loss(path)) is not None]
        if scored:
            keep.add(min(scored)[1])
    for _, path in found:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _val_loss(path: Path) -> float | None:
    try:
        value = json.loads((path / "state.json").read_text(encoding="utf-8")).get("val_loss")
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """{'state': {name: {key: tensor}}, 'param_groups': [...]} -> tensors named 'name:key', groups as JSON."""
    tensors = {}
    for name, entry in state["state"].items():
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"{name}:{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        name, _, item = key.rpartition(":")
        state.setdefault(name, {})[item] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    make_ordinary(path)  # safetensors writes mode 0600 whatever the umask
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
