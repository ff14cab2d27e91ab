"""What keeping freed memory (gpt2.kernels.retain_freed_memory) gains a CPU training step.

The setting is process-wide, so it cannot be switched between steps of one
process the way bench_train.py alternates its contenders: here pairs of
processes run the same training step as `gpt2 train` (bench_train.ours, the
GPT-2 124M shape, bfloat16 autocast, the same random batch), one with glibc's
heap as it comes and one with the setting, in turn, A B A B. Each prints its
median step time after warm-up and its minor page faults per step; the figure
is the median over pairs of each pair's time ratio, which holds when the
machine's speed drifts between pairs.

    python bench/bench_heap.py --pairs 4 --steps 4 --seq 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gpt2 import kernels  # noqa: E402
from gpt2.train import cpu_name  # noqa: E402


def child(retain: bool, seq: int, batch: int, steps: int) -> None:
    from bench_train import make_step, ours

    if retain:
        kernels.retain_freed_memory()
    step = make_step(*ours(seq, False), torch.bfloat16, trainer_clip=True)
    x = torch.randint(0, 50257, (batch, seq + 1), generator=torch.Generator().manual_seed(seq))
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    for _ in range(2):
        step(inputs, targets)
    times, faults = [], []
    for _ in range(steps):
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        step(inputs, targets)
        times.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(json.dumps({"step": statistics.median(times), "faults": statistics.median(faults), "rss_gib": rss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per process, after 2 warm-up steps")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--child", choices=["glibc", "retain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child == "retain", args.seq, args.batch, args.steps)

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(f"GPT-2 124M shape, T={args.seq}, B={args.batch}, bfloat16; {args.pairs} pairs of processes, {args.steps} timed steps each")
    runs: dict[str, list[dict]] = {"glibc": [], "retain": []}
    for i in range(args.pairs):
        for mode in ("glibc", "retain") if i % 2 == 0 else ("retain", "glibc"):
            cmd = [sys.executable, __file__, "--child", mode, "--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
            r = runs[mode][-1]
            print(f"  pair {i + 1} {mode:6s} step {r['step']:.3f} s  {r['faults']:>9,.0f} page faults/step  peak RSS {r['rss_gib']:.2f} GiB")
    tok = args.batch * args.seq
    for mode, rs in runs.items():
        step = statistics.median(r["step"] for r in rs)
        print(f"{mode:6s} median step {step:.3f} s ({tok / step:.0f} tok/s), {statistics.median(r['faults'] for r in rs):,.0f} page faults/step")
    paired = statistics.median(g["step"] / r["step"] for g, r in zip(runs["glibc"], runs["retain"]))
    print(f"retained heap: {paired:.2f}x glibc's usual heap (median over pairs of the step-time ratio)")


if __name__ == "__main__":
    main()
