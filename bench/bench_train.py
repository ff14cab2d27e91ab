"""Training throughput: our training step against transformers.GPT2LMHeadModel with the same optimizer.

GPT-2 124M shape (12 layers, 12 heads, 768 wide, vocabulary 50,257), one
process, the same random token batches for both, AdamW (fused, lr 6e-4, betas
0.9/0.95, weight decay 0.1), gradient clipping at 1.0, in bfloat16 autocast and
in float32. Ours is exactly what `gpt2 train` runs (gpt2.train.LMLoss with the
chunked loss, padded vocabulary, parameter groups, clipping folded into the
fused AdamW's read of the gradients; `--compile` adds torch.compile); the
peers are Hugging Face's model with its own loss (`labels=`), SDPA
attention, and a nanoGPT-style loop (the textbook formulation written out
below: plain modules, SDPA, the full logits into F.cross_entropy, the same
optimizer), both clipping with clip_grad_norm_. The process keeps freed
memory for reuse as `gpt2 train` does (kernels.retain_freed_memory); that
setting is process-wide, so the peers run with it too, and each step's page
faults are printed. Steps of the three alternate, so all see the same
machine load; the figure is the median step time after warm-up, with the best
step in brackets. MFU uses the same FLOP count for all (gpt2.train.flops_per_token)
over the bfloat16 (or float32) matmul peak measured here, on the same threads:
at the start, between rounds of steps (their median, the fairer figure on a
machine whose matmul throughput drifts), and at the end.

    python bench/bench_train.py                      # T=256 and 1024, B=4, bf16 and fp32
    python bench/bench_train.py --seq 256 --dtypes bfloat16 --steps 8 --compile
    python bench/bench_train.py --seq 256 --dtypes bfloat16 --steps 10 --kernels-off --floor

`--floor` adds a contender that runs only the step's linear-layer matrix
products (forward, input and weight gradients, on operands already in the
step's dtype) and the fused AdamW update: the floor under any step built on
PyTorch's products and optimizer, so its ratio to HF bounds what such a step
can reach against HF, and its MFU the MFU it can reach. `--kernels-off` adds
ours with the CPU kernels of gpt2/kernels.py switched off (PyTorch's GELU,
cross-entropy ops and flash attention backward instead).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gpt2.model  # noqa: E402
from gpt2 import kernels  # noqa: E402
from gpt2.model import GPT, GPTConfig  # noqa: E402
from gpt2.train.hardware import cpu_name, measure_matmul_tflops  # noqa: E402
from gpt2.train.loss import LMLoss  # noqa: E402
from gpt2.train.metrics import flops_per_token  # noqa: E402
from gpt2.train.optim import clip_in_optimizer, parameter_groups  # noqa: E402


def ours(seq: int, compile_: bool, device: str = "cpu", mode: str | None = None):
    torch.manual_seed(0)
    config = GPTConfig(block_size=max(seq, 1024), pad_vocab_to=64)
    model = LMLoss(GPT(config)).to(device)
    opt = torch.optim.AdamW(parameter_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), fused=True)
    forward = torch.compile(model, mode=mode) if compile_ else model
    return model, opt, lambda x, y: forward(x, y)


def huggingface(seq: int, device: str = "cpu"):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_positions=max(seq, 1024), n_embd=768, n_layer=12, n_head=12, vocab_size=50257)
    config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(config).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    return model, opt, lambda x, y: model(input_ids=x, labels=x).loss  # HF shifts the labels itself


class _PlainBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in self.qkv(self.ln_1(x)).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class _PlainGPT(nn.Module):
    """The nanoGPT-style formulation: logits for every position, then F.cross_entropy."""

    def __init__(self, seq: int, vocab: int = 50304, width: int = 768, layers: int = 12, heads: int = 12):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(seq, width)
        self.blocks = nn.ModuleList(_PlainBlock(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():  # GPT-2's initialisation, as nanoGPT has it
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def plain(seq: int, device: str = "cpu"):
    torch.manual_seed(0)
    model = _PlainGPT(max(seq, 1024)).to(device)
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), fused=True)
    return model, opt, model


def floor(seq: int, batch: int, dtype: torch.dtype, vocab: int = 50304, width: int = 768, layers: int = 12):
    """A step that runs only the products of the model's linear layers, as autograd runs them, and the update.

    For each linear layer (q/k/v, projection, the MLP's two, the output layer tied to the embedding) on batch x
    seq tokens: the forward F.linear, the input gradient dy @ W and the weight gradient dy^T @ x, on operands
    already in `dtype`; then the fused AdamW step over GPT-2 124M's parameters. Every contender makes these
    products (HF's Conv1D layers with the weights stored transposed) and this update. No attention, no
    element-wise work, no casts, no loss: what a step built on PyTorch's matrix products and optimizer cannot
    go below, so its time bounds the speed any such step can reach (`--floor`).
    """
    g = torch.Generator().manual_seed(1)
    shapes = [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * layers + [(vocab, width)]
    operands = [
        tuple(torch.randn(*shape, generator=g).to(dtype) for shape in ((batch * seq, n_in), (n_out, n_in), (batch * seq, n_out)))
        for n_out, n_in in shapes
    ]
    model, opt, _ = ours(seq, False)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).mul_(1e-3)

    def step(inputs, targets):
        for x, w, dy in operands:
            F.linear(x, w)  # forward
            dy @ w  # gradient of the input
            dy.t() @ x  # gradient of the weight
        opt.step()
        return 0.0

    return step


@contextlib.contextmanager
def pytorch_ops():
    """Our step with the kernels of gpt2/kernels.py switched off."""
    use, attention = kernels._use_kernel, gpt2.model.causal_attention
    kernels._use_kernel = lambda *args: False
    gpt2.model.causal_attention = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    try:
        yield
    finally:
        kernels._use_kernel, gpt2.model.causal_attention = use, attention


def make_step(model, opt, loss_fn, dtype, context=contextlib.nullcontext, trainer_clip=False, device="cpu"):
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    def step(x, y):
        with context():
            with autocast:  # the forward pass records which backward runs
                loss = loss_fn(x, y)
            loss.backward()
            if trainer_clip:  # what gpt2 train does with a fused AdamW
                clip_in_optimizer(opt, model.parameters(), 1.0)
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps of each (after 2 warm-up steps)")
    ap.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    ap.add_argument("--kernels-off", action="store_true", help="also time ours without the CPU kernels of gpt2/kernels.py")
    ap.add_argument("--floor", action="store_true", help="also time the step's linear-layer products and AdamW update alone (a bound)")
    ap.add_argument("--glibc-heap", action="store_true", help="leave glibc's heap as it is (bench/bench_heap.py compares)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    threads = torch.get_num_threads()
    retained = not args.glibc_heap and kernels.retain_freed_memory()  # what gpt2 train does; process-wide: all contenders
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {threads} threads; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"freed memory kept for reuse (kernels.retain_freed_memory), for all contenders: {retained}")
    peaks = {d: measure_matmul_tflops(torch.device("cpu"), getattr(torch, d), seconds=3.0) for d in args.dtypes}
    print("measured matmul peak: " + ", ".join(f"{d} {p:.2f} TFLOP/s" for d, p in peaks.items()))
    rows = []
    for seq in args.seq:
        for dname in args.dtypes:
            dtype = getattr(torch, dname)
            contenders = {"ours": ours(seq, False)}
            if args.kernels_off:  # right after ours, so that each pair of steps sees the same machine
                contenders["ours-kernels"] = ours(seq, False)
            contenders.update({"HF": huggingface(seq), "nanoGPT-style": plain(seq)})
            if args.compile:
                contenders["ours+compile"] = ours(seq, True)
            steps = {
                name: make_step(*c, dtype, pytorch_ops if name == "ours-kernels" else contextlib.nullcontext, trainer_clip=name.startswith("ours"))
                for name, c in contenders.items()
            }
            if args.floor:
                steps["floor"] = floor(seq, args.batch, dtype)
            g = torch.Generator().manual_seed(seq)
            x = torch.randint(0, 50257, (args.batch, seq + 1), generator=g)
            inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
            t0 = time.perf_counter()
            for name, step in steps.items():
                for _ in range(2):
                    step(inputs, targets)
            times: dict[str, list[float]] = {name: [] for name in steps}
            faults: dict[str, list[int]] = {name: [] for name in steps}  # minor page faults: memory the kernel hands out afresh
            round_peaks = []  # the matmul peak drifts on a shared machine: measure it between rounds of steps too
            for _ in range(args.steps):
                for name, step in steps.items():
                    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    t = time.perf_counter()
                    step(inputs, targets)
                    times[name].append(time.perf_counter() - t)
                    faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
                round_peaks.append(measure_matmul_tflops(torch.device("cpu"), dtype, seconds=1.0))
            flops = flops_per_token(GPTConfig(), seq) * args.batch * seq
            tok = args.batch * seq
            result = {}
            for name, ts in times.items():
                med, best = statistics.median(ts), min(ts)
                result[name] = (tok / med, tok / best, flops / med / (peaks[dname] * 1e12))
                rows.append((seq, dname, name, *result[name]))
            peak_during = statistics.median(round_peaks)
            print(f"\nT={seq} B={args.batch} {dname} ({time.perf_counter() - t0:.0f} s; matmul peak between rounds: "
                  f"median {peak_during:.2f}, range {min(round_peaks):.2f}-{max(round_peaks):.2f} TFLOP/s):")
            for name, (tps, tps_best, mfu) in result.items():
                ratio = f"  {tps / result['HF'][0]:.2f}x HF" if name != "HF" else ""
                if name.startswith("ours"):
                    ratio += f", {tps / result['nanoGPT-style'][0]:.2f}x nanoGPT-style"
                if name == "ours" and "ours-kernels" in result:
                    ratio += f", {tps / result['ours-kernels'][0]:.2f}x ours without the kernels"
                print(f"  {name:13s} {tps:8.0f} tok/s (best {tps_best:6.0f})  MFU {100 * mfu:5.1f}% (start peak), "
                      f"{100 * mfu * peaks[dname] / peak_during:5.1f}% (peak between rounds){ratio}; "
                      f"{statistics.median(faults[name]):,.0f} page faults/step")
            # the machine's speed drifts within minutes: the median over rounds of each round's time ratio
            # compares steps taken seconds apart
            paired = {name: statistics.median(p / o for p, o in zip(times[name], times["ours"])) for name in times if name != "ours"}
            print("  paired (median over rounds of that round's step time / ours): "
                  + ", ".join(f"{name} {r:.2f}x" for name, r in paired.items()))
            if "floor" in times:  # the most any step on these products and optimizer can reach against HF
                bound = statistics.median(h / m for h, m in zip(times["HF"], times["floor"]))
                print(f"  bound: HF's step / the floor (linear-layer products and AdamW alone), paired: {bound:.2f}x")
            del contenders, steps
    # the machine is shared: measure the peak again at the end and keep the better figure
    after = {d: measure_matmul_tflops(torch.device("cpu"), getattr(torch, d), seconds=3.0) for d in args.dtypes}
    print("\nmatmul peak measured again: " + ", ".join(f"{d} {p:.2f} TFLOP/s" for d, p in after.items()))
    print("MFU against the better of the two peaks:")
    for seq, dname, name, tps, tps_best, _ in rows:
        peak = max(peaks[dname], after[dname]) * 1e12
        print(f"  T={seq} {dname:8s} {name:13s} MFU {100 * flops_per_token(GPTConfig(), seq) * tps / peak:5.1f}%")


if __name__ == "__main__":
    main()
