"""CPU threads for training: the demo's model at 1 thread and at one per core, with and without another busy process.

Why `gpt2 train` picks its thread count (gpt2/train/hardware.py, choose_threads): PyTorch's default is one
thread per core, and every parallel region waits for its slowest thread; when another process holds a core,
that thread waits for the scheduler. This times whole training steps of the demo's model (4 layers, 256 wide,
16 x 128 tokens, the demo's dtype), alternating the thread counts, first as the machine is, then with a
spinning process started on purpose (one per core less one). It prints the load it saw and the CPU.

    python bench/bench_threads.py [--steps 5] [--rounds 4] [--dtype auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gpt2.model import GPT, GPTConfig  # noqa: E402
from gpt2.train.hardware import choose_threads, cpu_name, other_runnable_processes, training_dtype  # noqa: E402
from gpt2.train.loss import LMLoss  # noqa: E402


def spin(stop) -> None:
    while not stop.is_set():
        pass


def step_seconds(model, opt, x, y, dtype, steps: int) -> float:
    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def measure(label: str, model, opt, x, y, dtype, args) -> dict[int, float]:
    cores = len(os.sched_getaffinity(0))
    counts = sorted({1, cores})
    times: dict[int, list[float]] = {n: [] for n in counts}
    busy = other_runnable_processes()
    for _ in range(args.rounds):
        for n in counts:
            torch.set_num_threads(n)
            times[n].append(step_seconds(model, opt, x, y, dtype, args.steps))
    medians = {n: statistics.median(v) for n, v in times.items()}
    auto = choose_threads(0, cores, busy)
    print(f"{label}: other runnable processes at the start {busy}, load average {os.getloadavg()[0]:.1f}; "
          f"choose_threads would take {auto}")
    for n in counts:
        print(f"  {n} thread(s): median {1e3 * medians[n]:7.1f} ms per step "
              f"(min {1e3 * min(times[n]):.1f}, max {1e3 * max(times[n]):.1f}), {16 * 128 / medians[n]:,.0f} tok/s")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()
    dtype = training_dtype(args.dtype, torch.device("cpu"))
    print(f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}")
    torch.manual_seed(0)
    config = GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=128, vocab_size=4096, pad_vocab_to=64)
    model = LMLoss(GPT(config))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, 4096, (16, 128))
    y = torch.randint(0, 4096, (16, 128))
    measure("as the machine is", model, opt, x, y, dtype, args)
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(max(1, len(os.sched_getaffinity(0)) - 1))]
    for p in spinners:
        p.start()
    time.sleep(0.5)
    try:
        measure(f"with {len(spinners)} spinning process(es)", model, opt, x, y, dtype, args)
    finally:
        stop.set()
        for p in spinners:
            p.join()


if __name__ == "__main__":
    main()
