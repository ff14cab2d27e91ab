"""Parts of our CPU training step, each against what it replaced, in a whole step.

A whole training step of GPT-2 124M (bench_train.ours, as `gpt2 train` runs
it) with and without each part, step by step alternating, so that each pair
sees the same machine load:

- `chunks`: the loss in chunks of a multiple of 64 rows (gpt2.train.chunk_rows)
  against the plain quotient (333 rows at GPT-2's vocabulary);
- `product`: the training logits made by one product (gpt2.train.logits_in_one_product, in float32 or
  where the bfloat16 kernel is missing) against a product per chunk;
- `norm`: the gradient norm from BLAS dot products (gpt2.train.grad_norm)
  against torch's get_total_norm; and the two norms alone, on GPT-2 124M-shaped
  gradients.

Each figure is the median over pairs of the pair's time ratio (without / with).

    python bench/bench_step_parts.py --step-pairs 24
    python bench/bench_step_parts.py --dtype float32 --parts product --pairs 0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench_attention import paired  # noqa: E402

import gpt2.train.loss  # noqa: E402
import gpt2.train.optim  # noqa: E402
from gpt2 import kernels  # noqa: E402
from gpt2.train import cpu_name  # noqa: E402

# what each part replaced: (module, attribute, the old value)
PARTS = {
    "chunks": (gpt2.train.loss, "chunk_rows", lambda n, vocab: max(1, gpt2.train.loss.CHUNK_ELEMENTS // vocab)),
    "product": (gpt2.train.loss, "logits_in_one_product", lambda h: False),
    "norm": (gpt2.train.optim, "grad_norm", lambda grads: torch.nn.utils.get_total_norm(grads, foreach=True)),
}


@contextlib.contextmanager
def without(part: str):
    module, name, old = PARTS[part]
    new = getattr(module, name)
    setattr(module, name, old)
    try:
        yield
    finally:
        setattr(module, name, new)


def norms(pairs: int) -> None:
    from gpt2.model import GPT, GPTConfig

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in GPT(GPTConfig(pad_vocab_to=64)).parameters()]
    ours, theirs, ratio = paired(lambda: gpt2.train.optim.grad_norm(grads), lambda: PARTS["norm"][2](grads), pairs)
    print(f"gradient norm of GPT-2 124M-shaped gradients: dot products {1e3 * ours:.1f} ms, "
          f"get_total_norm {1e3 * theirs:.1f} ms, paired {ratio:.2f}x")


def whole_step(part: str, seq: int, batch: int, pairs: int, dtype: torch.dtype) -> None:
    from bench_train import make_step, ours

    step = make_step(*ours(seq, False), dtype, trainer_clip=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50257, (batch, seq + 1), generator=g)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def run_without():
        with without(part):
            step(inputs, targets)

    a, b, r = paired(lambda: step(inputs, targets), run_without, pairs)
    print(f"  {part:7s} with {a:.3f} s, without {b:.3f} s, paired {r:.3f}x ({pairs} pairs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="pairs of gradient norms alone")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--step-pairs", type=int, default=16, help="pairs of whole training steps per part (0: none)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="autocast to bfloat16, or float32 throughout")
    args = ap.parse_args()
    kernels.retain_freed_memory()  # as gpt2 train does
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; torch {torch.__version__}")
    if args.pairs:
        norms(args.pairs)
    if args.step_pairs:
        print(f"whole step at {args.batch} x {args.seq}, GPT-2 124M, {args.dtype}, each part against what it replaced:")
        for part in args.parts:
            whole_step(part, args.seq, args.batch, args.step_pairs, getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
