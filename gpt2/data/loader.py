"""Batches of contiguous token windows, for training and for held-out evaluation.

Training windows: a split's token stream (shards.py) is cut into windows of
block_size + 1 tokens (the inputs and their next-token targets) that start at
multiples of block_size after a random shift. Each epoch visits every window
once in a fresh random order: the shift and the permutation come from numpy's
PCG64 seeded with (seed, epoch), so the order is the same on every machine.

The windows of all epochs form one endless sequence. Each optimizer step takes
the next `global_batch` of them; with W processes, rank r takes its own
contiguous 1/W of those, in micro-batches of `micro_batch` for gradient
accumulation. The loader's whole state is the number of windows consumed so
far, the cursor: a checkpoint stores it and resume continues with the very next
batch. Because the cursor does not depend on W, a run can also resume on a
different number of processes with the same data order.
"""

from __future__ import annotations

import numpy as np
import torch

from gpt2.data.shards import TokenStream
from gpt2.errors import GPT2Error


class TrainBatches:
    """The training batches of one rank: `next()` gives the micro-batches (x, y) of one optimizer step."""

    def __init__(
        self,
        stream: TokenStream,
        block_size: int,
        micro_batch: int,
        global_batch: int,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        cursor: int = 0,
    ):
        if global_batch % (micro_batch * world):
            raise GPT2Error(
                f"a global batch of {global_batch} sequences cannot be split into micro-batches of {micro_batch} "
                f"on {world} process(es): make it a multiple of {micro_batch * world}"
            )
        self.stream = stream
        self.block_size = block_size
        self.micro_batch = micro_batch
        self.global_batch = global_batch
        self.accum = global_batch // (micro_batch * world)  # micro-batches per step on each rank
        self.rank = rank
        self.seed = seed
        self.cursor = cursor
        # any shift in [0, block_size) leaves room for n windows and their last target
        self.n_windows = (len(stream) - block_size) // block_size
        if self.n_windows < 1:
            raise GPT2Error(
                f"the training split has {len(stream):,} tokens, too few for windows of {block_size} tokens: "
                f"prepare more text or lower model.block_size"
            )
        self._epoch: int | None = None
        self._shift = 0
        self._order = np.zeros(0, dtype=np.int64)

    @property
    def epoch(self) -> float:
        """Epochs completed so far (fractional)."""
        return self.cursor / self.n_windows

    def _window_start(self, k: int) -> int:
        """Token offset of the k-th window of the endless sequence."""
        epoch, j = divmod(k, self.n_windows)
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._shift = int(rng.integers(self.block_size))
            self._order = rng.permutation(self.n_windows)
            self._epoch = epoch
        return self._shift + int(self._order[j]) * self.block_size

    def windows_of_step(self, cursor: int) -> list[int]:
        """Indices (in the endless sequence) of this rank's windows for the step that starts at `cursor`."""
        per_rank = self.micro_batch * self.accum
        first = cursor + self.rank * per_rank
        return list(range(first, first + per_rank))

    def next(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The `accum` micro-batches (x, y), each (micro_batch, block_size) int64, of the next step."""
        T = self.block_size
        rows = np.stack([self.stream.read(self._window_start(k), T + 1) for k in self.windows_of_step(self.cursor)])
        rows = torch.from_numpy(rows.astype(np.int64))
        self.cursor += self.global_batch
        return [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in rows.split(self.micro_batch)]

    def state_dict(self) -> dict:
        return {"cursor": self.cursor, "n_windows": self.n_windows, "block_size": self.block_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for key in ("block_size", "n_windows", "seed"):
            if state[key] != getattr(self, key):
                raise GPT2Error(
                    f"the checkpoint's data order does not fit this run ({key} was {state[key]}, now {getattr(self, key)}): "
                    f"resume with the same dataset, model.block_size and seed"
                )
        self.cursor = int(state["cursor"])


def eval_windows(stream: TokenStream, block_size: int, max_tokens: int = 0) -> tuple[int, int]:
    """(number of windows, window length) of a held-out evaluation: consecutive windows from the start."""
    T = min(block_size, len(stream) - 1)
    if T < 1:
        return 0, 0
    n = (len(stream) - 1) // T
    if max_tokens:
        n = min(n, max(1, max_tokens // T))
    return n, T


def eval_batches(stream: TokenStream, block_size: int, batch_size: int, max_tokens: int = 0, *, rank: int = 0, world: int = 1):
    """This rank's share (every world-th window) of a held-out evaluation, in batches (x, y)."""
    n, T = eval_windows(stream, block_size, max_tokens)
    mine = list(range(rank, n, world))
    for i in range(0, len(mine), batch_size):
        rows = np.stack([stream.read(j * T, T + 1) for j in mine[i : i + batch_size]])
        rows = torch.from_numpy(rows.astype(np.int64))
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
