"""Training data: corpora -> documents -> token shards -> batches.

    shards.py    the shard file format (uint16 tokens behind a small header), the manifest, readers
    prepare.py   `gpt2 prepare`: text / JSON lines -> documents -> shards, with a held-out split
    loader.py    deterministic, rank-aware batches of contiguous windows with a resumable cursor

Submodules are imported on first use, so `gpt2 prepare` starts without importing torch.
"""

import importlib

_LAZY = {
    "TokenDataset": "gpt2.data.shards",
    "TokenStream": "gpt2.data.shards",
    "read_shard": "gpt2.data.shards",
    "write_shard": "gpt2.data.shards",
    "prepare": "gpt2.data.prepare",
    "TrainBatches": "gpt2.data.loader",
    "eval_batches": "gpt2.data.loader",
    "eval_windows": "gpt2.data.loader",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpt2.data' has no attribute {name!r}")


__all__ = list(_LAZY)
