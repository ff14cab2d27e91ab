"""Training throughput on one CUDA GPU: GPT-2 124M at T=1024, ours against transformers and a nanoGPT-style loop.

The contenders of bench_train.py, on the GPU, in bfloat16 autocast, with the
same fused AdamW (lr 6e-4, betas 0.9/0.95, weight decay 0.1) and clipping at
1.0, on the same random token batches:

    ours+compile   what `gpt2 train --compile` runs: gpt2.train.loss.LMLoss compiled whole,
                   clipping folded into the fused AdamW (gpt2.train.optim.clip_in_optimizer)
    ours           the same, eager
    HF             transformers.GPT2LMHeadModel, SDPA attention, its own loss (labels=), eager
    HF+compile     the same under torch.compile
    nanoGPT+compile  bench_train.py's nanoGPT-style model, compiled as nanoGPT trains

Each contender warms up (compiling), then rounds of steps alternate between
them so that all see the same clocks; the figure is the median step time over
all rounds. Each step ends with loss.item(), as a training loop that logs its
loss does. MFU is gpt2.train.metrics.flops_per_token (6 per weight of every product
plus attention's 12 L C T) times tokens per second, over the device's dense
bfloat16 datasheet peak (gpt2.train.hardware.GPU_PEAK_TFLOPS) and over the peak of
8192^3 bfloat16 products measured here. Memory is the step's peak allocation
above what was allocated before it.

    python bench/bench_train_gpu.py                              # B=16, every contender
    python bench/bench_train_gpu.py --batch 32 --contenders ours+compile nanoGPT+compile
    python bench/bench_train_gpu.py --contenders ours+compile nanoGPT+compile --sdpa cudnn --profile
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_train import huggingface, make_step, ours, plain  # noqa: E402

from gpt2.model import GPTConfig  # noqa: E402
from gpt2.train.hardware import measure_matmul_tflops, peak_tflops  # noqa: E402
from gpt2.train.metrics import flops_per_token  # noqa: E402

CONTENDERS = ("ours+compile", "ours", "HF", "HF+compile", "nanoGPT+compile")


def build(name: str, seq: int, device: str, mode: str | None = None):
    """(model, optimizer, loss function, whether the trainer's clipping applies) for one contender."""
    compile_ = name.endswith("+compile")
    if name.startswith("ours"):
        return *ours(seq, compile_, device, mode), True
    if name.startswith("HF"):
        model, opt, _ = huggingface(seq, device)
        forward = torch.compile(model, mode=mode) if compile_ else model
        return model, opt, lambda x, y: forward(input_ids=x, labels=x).loss, False
    model, opt, _ = plain(seq, device)
    return model, opt, torch.compile(model, mode=mode), False


KERNEL_KINDS = (  # how a kernel's name tells what it does, first match wins
    ("attention", ("flash", "fmha", "attention", "cudnn")),
    ("matrix products", ("gemm", "nvjet", "cutlass", "sm90", "sm80", "cublas", "xmma", "triton_tem")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "norm_kernel", "reduce_kernel")),
    ("compiled element-wise and reductions", ("triton",)),
)


def profile(step, inputs, targets, steps: int = 3) -> None:
    """GPU time of `steps` steps by kind of kernel, and the kernels that take the most."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(inputs, targets)
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in kernels)
    by_kind: dict[str, float] = {}
    for e in kernels:
        name = e.key.lower()
        kind = next((k for k, words in KERNEL_KINDS if any(w in name for w in words)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total
    print(f"  GPU time per step {total / steps / 1e3:.1f} ms, by kind of kernel:")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:38s} {t / steps / 1e3:6.2f} ms  {100 * t / total:5.1f}%")
    print("  the 12 kernels that take the most:")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]:
        print(f"    {e.self_device_time_total / steps / 1e3:6.2f} ms  x{e.count // steps:<4d} {e.key[:110]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each contender per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--mode", default=None, help="torch.compile mode for the compiled contenders (e.g. max-autotune-no-cudagraphs)")
    ap.add_argument("--sdpa", choices=["auto", "cudnn", "flash"], default="auto", help="force one SDPA backend for every contender")
    ap.add_argument("--profile", action="store_true", help="also break the first contender's GPU time down by kind of kernel")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_train_gpu.py: no CUDA GPU here; bench/bench_train.py measures the CPU")
    import transformers

    device = "cuda"
    if args.sdpa != "auto":
        torch.backends.cuda.enable_flash_sdp(args.sdpa == "flash")
        torch.backends.cuda.enable_cudnn_sdp(args.sdpa == "cudnn")
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_math_sdp(False)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name()
    peak = peak_tflops(torch.device(device), torch.bfloat16)
    datasheet, source = peak.tflops, peak.source
    measured = measure_matmul_tflops(torch.device(device), torch.bfloat16, seconds=3.0)
    print(f"device: {name}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"compile mode {args.mode or 'default'}, SDPA backend {args.sdpa}")
    print(f"bfloat16 peak: {datasheet:.0f} TFLOP/s ({source}); measured {measured:.0f} TFLOP/s (8192^3 products)")
    seq, batch = args.seq, args.batch
    g = torch.Generator().manual_seed(seq)
    x = torch.randint(0, 50257, (batch, seq + 1), generator=g).to(device)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    steps = {}
    for c in args.contenders:
        model, opt, loss_fn, clip = build(c, seq, device, args.mode)
        steps[c] = make_step(model, opt, loss_fn, torch.bfloat16, trainer_clip=clip, device=device)
        t = time.perf_counter()
        for _ in range(args.warmup):
            steps[c](inputs, targets)
        torch.cuda.synchronize()
        print(f"  {c}: warm-up ({args.warmup} steps, compilation included) {time.perf_counter() - t:.1f} s", flush=True)

    times: dict[str, list[float]] = {c: [] for c in steps}
    memory: dict[str, int] = {c: 0 for c in steps}
    for _ in range(args.rounds):
        for c, step in steps.items():
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(args.steps):
                t = time.perf_counter()
                step(inputs, targets)  # .item() waits for the GPU
                times[c].append(time.perf_counter() - t)
            memory[c] = max(memory[c], torch.cuda.max_memory_allocated() - base)

    tokens = batch * seq
    flops = flops_per_token(GPTConfig(), seq) * tokens
    med = {c: statistics.median(ts) for c, ts in times.items()}
    print(f"\nGPT-2 124M, T={seq}, B={batch}, bfloat16 autocast, {args.rounds} rounds x {args.steps} steps each:")
    print(f"  {'contender':16s} {'step ms':>8s} {'tok/s':>9s} {'MFU (datasheet)':>16s} {'MFU (measured)':>15s} {'memory GiB':>11s}  ratios")
    for c, m in med.items():
        ratios = []
        if "HF" in med and c != "HF":
            ratios.append(f"{med['HF'] / m:.2f}x HF")
        if "nanoGPT+compile" in med and c != "nanoGPT+compile":
            ratios.append(f"{med['nanoGPT+compile'] / m:.2f}x nanoGPT+compile")
        print(f"  {c:16s} {1e3 * m:8.1f} {tokens / m:9,.0f} {100 * flops / m / (datasheet * 1e12):15.1f}% "
              f"{100 * flops / m / (measured * 1e12):14.1f}% {memory[c] / 2**30:11.2f}  {', '.join(ratios)}")
    if args.profile:
        print(f"\nprofile of {args.contenders[0]}:")
        profile(steps[args.contenders[0]], inputs, targets)
    after = measure_matmul_tflops(torch.device(device), torch.bfloat16, seconds=3.0)
    print(f"measured bfloat16 peak again at the end: {after:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
