"""Greedy generation speed: gpt2.sample.generate against transformers' GPT2LMHeadModel.generate.

Both run in this process on the same GPT-2 124M-shaped model (random weights,
seed 0; ours exported with gpt2.weights.export_hf and loaded by transformers),
on the same prompts: `--prompt-len` random tokens per row, `--new-tokens` new
tokens, greedy, for each batch size and dtype. Runs alternate between the
two implementations and the best of `--repeats` is kept, so a burst of load
from other processes hurts both alike and the best run is the least disturbed.

The bound: decoding one step reads every weight once (plus the KV cache so
far), so a batch of B rows can produce at most B * bandwidth / bytes-per-step
tokens per second. The bandwidth is measured here, as the best of several
copies of a 1 GiB tensor (bytes read + bytes written, per second) and sums of
one (bytes read per second); the larger is used.

    python bench/bench_generate.py                       # the figures in bench/RESULTS.md
    python bench/bench_generate.py --batch 1 --dtypes bfloat16 --repeats 1 --new-tokens 64   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2.model import GPT, GPTConfig  # noqa: E402
from gpt2.sample import generate  # noqa: E402
from gpt2.train import cpu_name  # noqa: E402
from gpt2.weights import export_hf  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}



def bandwidth(repeats: int = 5) -> tuple[float, float]:
    """(copy GB/s counting bytes read + written, read-only GB/s) for a 1 GiB float32 tensor, best of `repeats`."""
    x = torch.ones(1 << 28)
    y = torch.empty_like(x)
    copy = read = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        y.copy_(x)
        copy = max(copy, 2 * x.nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        x.sum()
        read = max(read, x.nbytes / (time.perf_counter() - t) / 1e9)
    return copy, read


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--plain", action="store_true", help="also time our generate without prepacked weights (fast=False)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print("command: python " + " ".join(sys.argv))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    copy_bw, read_bw = bandwidth()
    bw = max(copy_bw, read_bw)
    print(f"memory bandwidth: copy {copy_bw:.1f} GB/s (read + write), sum {read_bw:.1f} GB/s (read); bound uses {bw:.1f} GB/s")
    print(f"task: GPT-2 124M shape, random weights, {args.prompt_len}-token prompts, {args.new_tokens} new tokens, greedy\n")

    torch.manual_seed(0)
    ours32 = GPT(GPTConfig.from_name("gpt2")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(ours32, tmp)
        theirs32 = transformers.GPT2LMHeadModel.from_pretrained(tmp).eval()
    theirs32.generation_config.eos_token_id = None  # random weights: never stop early
    theirs32.generation_config.pad_token_id = 0
    cfg = ours32.config
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        ours, theirs = ours32.to(dtype), theirs32.to(dtype)  # .to returns the same modules when the dtype is equal
        for B in args.batch:
            g = torch.Generator().manual_seed(B)
            prompts = torch.randint(0, cfg.vocab_size, (B, args.prompt_len), generator=g)
            plist = prompts.tolist()
            N = args.new_tokens

            def run_hf():
                with torch.inference_mode():
                    out = theirs.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=N,
                                          min_new_tokens=N, do_sample=False)
                return out[:, args.prompt_len:].tolist()

            runs = {"ours": lambda: generate(ours, plist, N, temperature=0), "transformers": run_hf}
            if args.plain:
                runs["ours, plain matmuls"] = lambda: generate(ours, plist, N, temperature=0, fast=False)
            # warm up: first calls allocate, pack weights and pick kernels
            generate(ours, plist, 4, temperature=0)
            generate(ours, plist, 4, temperature=0, fast=False)
            with torch.inference_mode():
                theirs.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=4, min_new_tokens=4, do_sample=False)
            times = {name: [] for name in runs}
            outputs = {}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    dt, out = timed(fn)
                    times[name].append(dt)
                    outputs[name] = out
            same = outputs["ours"] == outputs["transformers"]
            agree = sum(a == b for ra, rb in zip(outputs["ours"], outputs["transformers"]) for a, b in zip(ra, rb))
            # bytes one decode step reads: all weights once, and on average half the final KV cache
            weight_bytes = sum(t.numel() * t.element_size() for t in ours.state_dict().values() if t is not ours.lm_head.weight)
            kv_bytes = 2 * cfg.n_layer * B * (args.prompt_len + N / 2) * cfg.n_embd * dtype.itemsize
            bound = B * bw * 1e9 / (weight_bytes + kv_bytes)
            for name, ts in times.items():
                best = min(ts)
                rate = B * N / best
                rows.append((dtype_name, B, name, rate, B * N / statistics.median(ts), rate / bound))
            ratio = min(times["transformers"]) / min(times["ours"])
            print(f"{dtype_name:9s} batch {B}: " + ", ".join(f"{name} {B * N / min(ts):.1f} tok/s" for name, ts in times.items())
                  + f"; ours/transformers {ratio:.2f}x; bound {bound:.0f} tok/s; greedy tokens "
                  + ("identical" if same else f"agree on {agree} of {B * N}"), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end\n")
    print("| dtype | batch | implementation | tok/s (best) | tok/s (median) | of bandwidth bound |")
    print("|---|---|---|---|---|---|")
    for dtype_name, B, name, rate, median, frac in rows:
        print(f"| {dtype_name} | {B} | {name} | {rate:.1f} | {median:.1f} | {100 * frac:.0f}% |")
    best_ours = {B: max((r for r in rows if r[1] == B and r[2] == "ours"), key=lambda r: r[3]) for B in args.batch}
    best_hf = {B: max((r for r in rows if r[1] == B and r[2] == "transformers"), key=lambda r: r[3]) for B in args.batch}
    for B in args.batch:
        o, h = best_ours[B], best_hf[B]
        print(f"batch {B}: ours at its best ({o[0]}) {o[3]:.1f} tok/s vs transformers at its best ({h[0]}) {h[3]:.1f} tok/s: {o[3] / h[3]:.2f}x")


if __name__ == "__main__":
    main()
