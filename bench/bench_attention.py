"""Causal attention on a CPU in bfloat16: our recomputing backward (gpt2.kernels.causal_attention) against PyTorch's flash kernels.

Two measurements, both alternating the two contenders so that each pair sees
the same machine load, and both giving the median over pairs of the pair's
time ratio (PyTorch's over ours):

- one layer's attention, forward and backward, for B x 12 heads of 64 at each
  length T (`--seq`), ours forced on whatever `ATTENTION_MAX_T` says;
- a whole training step of GPT-2 124M (bench_train.ours, as `gpt2 train` runs
  it) at `--step-seq` tokens, switching between the two by `ATTENTION_MAX_T`
  step by step (`--step-pairs`; 0 skips it).

    python bench/bench_attention.py --seq 128 160 256 320 384 512 --step-pairs 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gpt2 import kernels  # noqa: E402
from gpt2.train import cpu_name  # noqa: E402


def paired(ours, theirs, pairs: int) -> tuple[float, float, float]:
    """Median time of each and the median over pairs of theirs / ours; one untimed call of each first."""
    ours(), theirs()
    a, b = [], []
    for _ in range(pairs):
        for fn, times in ((ours, a), (theirs, b)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b))


def layer(T: int, batch: int, pairs: int) -> None:
    q, k, v = (torch.randn(batch, 12, T, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn(batch, 12, T, 64, dtype=torch.bfloat16)
    limit = kernels.ATTENTION_MAX_T
    kernels.ATTENTION_MAX_T = T  # ours at this length, whatever the default
    try:
        a, b, r = paired(
            lambda: kernels.causal_attention(q, k, v).backward(dout),
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout),
            pairs,
        )
    finally:
        kernels.ATTENTION_MAX_T = limit
    print(f"  T={T:4d}: ours {1e3 * a:6.1f} ms, PyTorch flash {1e3 * b:6.1f} ms, paired {r:.2f}x")


def whole_step(seq: int, batch: int, pairs: int) -> None:
    from bench_train import make_step, ours

    kernels.retain_freed_memory()  # as gpt2 train does
    step = make_step(*ours(seq, False), torch.bfloat16, trainer_clip=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50257, (batch, seq + 1), generator=g)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    limit = kernels.ATTENTION_MAX_T

    def with_limit(value):
        def run():
            kernels.ATTENTION_MAX_T = value
            step(inputs, targets)

        return run

    try:
        a, b, r = paired(with_limit(max(seq, limit)), with_limit(seq - 1), pairs)
    finally:
        kernels.ATTENTION_MAX_T = limit
    print(f"  whole step at {batch} x {seq}: ours {a:.3f} s, PyTorch flash {b:.3f} s, paired {r:.3f}x ({pairs} pairs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[128, 160, 256, 320, 384, 512])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=8, help="pairs of timed calls per length")
    ap.add_argument("--step-seq", type=int, default=256)
    ap.add_argument("--step-pairs", type=int, default=12, help="pairs of whole training steps (0: none)")
    args = ap.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(f"softmax and its gradient by the kernel (gpt2._gemv.softmax_grad): {kernels.available()}")
    print(f"one layer, B={args.batch}, 12 heads of 64, forward + backward (ATTENTION_MAX_T = {kernels.ATTENTION_MAX_T}):")
    for T in args.seq:
        layer(T, args.batch, args.pairs)
    if args.step_pairs:
        whole_step(args.step_seq, args.batch, args.step_pairs)


if __name__ == "__main__":
    main()
