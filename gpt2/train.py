"""`gpt2 train`: pre-training a GPT on token shards, from 2 CPU cores to many GPUs with one code path.

The recipe follows the GPT papers where they say something and common practice
where they do not: AdamW (Loshchilov & Hutter 2019) with weight decay on the
matrices of Linear layers only (GPT-1 section 4.1: "a modified version of L2
regularization ... w = 0.01 on all non bias or gain weights"; embeddings are
left alone as well), linear warm-up then cosine decay (GPT-1), gradient
clipping at 1.0, and a global batch counted in tokens, reached by gradient
accumulation (GPT-2 section 2.3: 512 sequences of 1024 tokens). Values for the
paper's sizes, which GPT-2 does not state, come from GPT-3 Table 2.1.

Precision: bfloat16 autocast on CPUs with AMX / AVX512-BF16 and on GPUs that
have it, float16 with loss scaling on older GPUs, float32 otherwise; master
weights and optimizer state stay float32. Attention is PyTorch's SDPA (flash
kernels on GPU and CPU), AdamW is the fused kernel, `--compile` applies
torch.compile. The loss is computed from the final hidden states in chunks
(`lm_loss`), so the (tokens x 50,257) logits of a whole batch never exist at
once in float32.

Runs are reproducible and resumable: a checkpoint (gpt2/checkpoint.py) holds
everything that determines the next step, so on CPU a resumed run is
bit-identical to one that was never interrupted. Parallelism is applied from
outside the model (gpt2/distributed.py). MFU is model FLOPs per second
(PaLM, Chowdhery et al. 2022, appendix B) over the device's peak: known for
datacenter GPUs, measured with a matmul benchmark on CPUs.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from gpt2 import __version__, checkpoint, distributed, kernels
from gpt2.config import TrainConfig, to_dict, to_toml
from gpt2.data.loader import TrainBatches, eval_batches, eval_windows
from gpt2.data.shards import TokenDataset
from gpt2.distributed import Dist
from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig

log = logging.getLogger(__name__)

# Dense bfloat16 / float16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, matched in order
# against torch.cuda.get_device_name(); other GPUs, and CPUs, are measured (`measure_matmul_tflops`).
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3)
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("V100", 125.0),
)


# ----------------------------------------------------------------------------
# the model with its loss


class LMLoss(nn.Module):
    """A GPT and its next-token loss as one module, so that DDP, FSDP2 and torch.compile wrap both.

    The model's trunk (`GPT.hidden`) gives the final hidden states; the loss is
    then computed by `lm_loss` from them and the output embedding, without the
    whole batch's logits in float32 (tests/test_train.py checks it against
    GPT.forward).
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return lm_loss(self.gpt.hidden(idx), self.gpt.lm_head.weight, targets, self.gpt.config.vocab_size, reduction)


def lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the next tokens from the final hidden states (B, T, C) and the output embedding (V, C).

    Rows of padding in the embedding (V > vocab_size) are never predicted.
    `reduction='none'` gives the loss of every position, (B, T), in float32.
    Eagerly this is `_ChunkedCrossEntropy`; under torch.compile it is `full_logits_loss`,
    which the compiler fuses by itself.
    """
    if torch.compiler.is_compiling():
        return full_logits_loss(hidden, weight, targets, vocab_size, reduction)
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device, enabled=False):
        h = hidden.reshape(-1, hidden.shape[-1]).to(dtype)
        loss = _ChunkedCrossEntropy.apply(h, weight.to(dtype), targets.reshape(-1), vocab_size, reduction == "mean")
    return loss if reduction == "mean" else loss.view(targets.shape)


def full_logits_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int, reduction: str = "mean"
) -> torch.Tensor:
    """`lm_loss` as one formula over all the logits, for torch.compile to fuse.

    Padding rows of the embedding get a logit of -inf rather than being sliced off: the same
    loss and gradients, with rows of logits as wide as the padded embedding (50,304 for
    GPT-2, a multiple of 64). On an H100 the slice's 50,257-wide rows cost 3% of a GPT-2
    124M step (bench/RESULTS.md).
    """
    logits = F.linear(hidden, weight)
    logits = logits.float() if logits.element_size() < 4 else logits  # the softmax in float32 at least
    if weight.shape[0] > vocab_size:
        logits = logits.masked_fill(torch.arange(weight.shape[0], device=logits.device) >= vocab_size, -math.inf)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
    return loss if reduction == "mean" else loss.view(targets.shape)


CHUNK_ELEMENTS = 1 << 24  # logits per chunk of `_ChunkedCrossEntropy`: 64 MB in float32


def chunk_rows(n: int, vocab: int) -> int:
    """Rows per chunk of `_ChunkedCrossEntropy`: about CHUNK_ELEMENTS logits, the n rows split evenly.

    The count is rounded up to a multiple of 64, which the CPU's matrix products take whole: on
    GPT-2's vocabulary, 333 rows (the plain quotient) made the chunk's product ~35% slower than
    320 or 256 (bench/RESULTS.md).
    """
    rows = max(1, min(n, CHUNK_ELEMENTS // vocab))
    rows = -(-n // -(-n // rows))  # the same number of chunks, evenly filled
    return -(-rows // 64) * 64 if rows > 64 else rows


def logits_in_one_product(h: torch.Tensor) -> bool:
    """Whether `_ChunkedCrossEntropy` makes a training batch's logits in one product, straight into the
    gradient's buffer, rather than a chunk at a time: everywhere but where the cross-entropy kernel takes each
    chunk (bfloat16 on AVX512-BF16), whose pass then follows the chunk's product at once. On a CPU without the
    kernel, one float32 product over 1,024 rows ran faster than 4 of 256 (bench/RESULTS.md)."""
    return not kernels.has_cross_entropy_kernel(h)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """F.cross_entropy(F.linear(h, w).float(), targets), a chunk of rows at a time.

    With GPT-2's vocabulary the logits of a batch are large (8,192 tokens x
    50,304 x 4 bytes = 1.6 GB in float32), and the plain formula passes over
    them many times (cast, log-softmax, its backward, the cast back). Here the
    logits are made in the compute dtype, in the buffer of their gradient
    (`logits_in_one_product` says whether by one product or chunk by chunk),
    reduced a chunk of rows at a time in float32, and turned at once into the
    gradient of the logits, (softmax - one_hot) / N, kept in the compute dtype;
    backward is then two matmuls. Without gradients (evaluation) only one
    chunk's logits exist at a time. The same idea as the fused linear
    cross-entropy of Liger-Kernel (Hsu et al. 2024), in plain PyTorch.
    """

    @staticmethod
    def forward(ctx, h, w, targets, vocab_size: int, mean: bool):
        N, V = h.shape[0], w.shape[0]
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32  # reductions in at least float32
        losses = torch.empty(N, dtype=acc, device=h.device)
        grad_logits = torch.empty(N, V, dtype=h.dtype, device=h.device) if need_grad else None
        scale = 1.0 / N if mean else 1.0
        rows = chunk_rows(N, V)
        index = torch.arange(min(rows, N), device=h.device)
        scratch = None if need_grad else torch.empty(min(rows, N), V, dtype=h.dtype, device=h.device)
        whole = need_grad and logits_in_one_product(h)
        if whole:
            torch.mm(h, w.t(), out=grad_logits)
        for i in range(0, N, rows):
            t = targets[i : i + rows]
            r = index[: len(t)]
            # a bfloat16 chunk on a CPU with AVX512-BF16: the logits go straight to their place in grad_logits
            # and one kernel turns them into the losses and the gradient (gpt2/kernels.py)
            out = grad_logits[i : i + rows] if need_grad else scratch[: len(t)]
            if not whole:
                torch.mm(h[i : i + rows], w.t(), out=out)
            row_losses = kernels.cross_entropy_rows_(out, t, vocab_size, scale)
            if row_losses is not None:
                losses[i : i + rows] = row_losses
                continue
            logits = out.to(acc)  # (rows, V)
            if V > vocab_size:
                logits[:, vocab_size:] = -math.inf
            lse = torch.logsumexp(logits, dim=1)
            losses[i : i + rows] = lse - logits[r, t]
            if need_grad:
                logits.sub_((lse - math.log(scale)).unsqueeze(1)).exp_()  # softmax * scale
                logits[r, t] -= scale
                if logits is not out:  # in the compute dtype's own buffer already when that is float32 or 64
                    grad_logits[i : i + rows] = logits
        if need_grad:
            ctx.save_for_backward(h, w, grad_logits)
        ctx.mean = mean
        return losses.sum() * scale if mean else losses

    @staticmethod
    def backward(ctx, grad_out):
        h, w, grad_logits = ctx.saved_tensors
        if ctx.mean:
            grad_logits = grad_logits * grad_out.to(grad_logits.dtype) if grad_out.item() != 1.0 else grad_logits
        else:
            grad_logits = grad_logits * grad_out.unsqueeze(1).to(grad_logits.dtype)
        grad_h = grad_logits @ w if ctx.needs_input_grad[0] else None
        grad_w = grad_logits.t() @ h if ctx.needs_input_grad[1] else None
        return grad_h, grad_w, None, None, None


def clip_in_optimizer(optimizer: torch.optim.Optimizer, params, max_norm: float | None) -> torch.Tensor:
    """Gradient clipping for a fused AdamW: returns the gradients' total norm and has the optimizer divide
    them by max(1, norm / max_norm) as its kernel reads them (`grad_scale`, the hook GradScaler uses),
    so clipping costs no pass of its own over the gradients (clip_grad_norm_ makes one more)."""
    norm = grad_norm([p.grad for p in params if p.grad is not None])
    if max_norm:
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)
    return norm


def grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all the gradients together, as a float32 scalar.

    For plain float32 CPU tensors each one's sum of squares is a BLAS dot product, added up in float64:
    on GPT-2 124M's gradients that took 29-34 ms against 57-65 ms for torch's norms (get_total_norm, which
    on a CPU runs one norm per tensor), and came closer to the float64 value (tests/test_train.py).
    Elsewhere (GPUs, DTensors under FSDP2, other dtypes) it is get_total_norm.
    """
    dot_ready = (
        type(g) is torch.Tensor and g.device.type == "cpu" and g.dtype == torch.float32 and g.layout == torch.strided and g.is_contiguous()
        for g in grads
    )
    if grads and all(dot_ready):
        return torch.stack([torch.dot(g.view(-1), g.view(-1)) for g in grads]).double().sum().sqrt().float()
    return torch.nn.utils.get_total_norm(grads, foreach=True)


def _holds_a_run(out: Path) -> bool:
    """Whether `out` holds the run.json that `gpt2 train` writes as a run starts."""
    try:
        info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and {"command", "model", "dataset"} <= info.keys()


def model_config(cfg: TrainConfig, n_vocab: int) -> GPTConfig:
    """The GPTConfig of a run: the preset, overridden by the sizes given; the vocabulary from the data."""
    m = cfg.model
    sizes = {k: getattr(m, k) for k in ("n_layer", "n_head", "n_embd") if getattr(m, k) is not None}
    vocab = m.vocab_size or n_vocab
    if vocab < n_vocab:
        raise GPT2Error(f"model.vocab_size ({vocab:,}) is smaller than the dataset's tokenizer ({n_vocab:,} tokens)")
    return GPTConfig.from_name(
        m.preset, **sizes, block_size=m.block_size, vocab_size=vocab, dropout=m.dropout, bias=m.bias, pad_vocab_to=m.pad_vocab_to
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay for the matrices of Linear layers; none for biases, LayerNorm gains or embeddings (GPT-1 4.1)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in embeddings}
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]


def lr_at(step: int, lr: float, warmup: int, max_steps: int, final_fraction: float) -> float:
    """Learning rate of update `step` (0-based): linear warm-up over `warmup` updates, then cosine decay to lr * final_fraction."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 per weight of every matmul plus attention's 12 L C T."""
    C, L = config.n_embd, config.n_layer
    matmul_weights = L * 12 * C * C + config.vocab_size * C  # q,k,v, projection, 2 MLP layers; the output layer
    return 6 * matmul_weights + 12 * L * C * seq_len


# ----------------------------------------------------------------------------
# device, precision, peak


def choose_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec != "auto":
        dtype = getattr(torch, spec)
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise GPT2Error(f"{torch.cuda.get_device_name(device)} has no bfloat16; use --dtype float16 or float32")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def cpu_has_bf16() -> bool:
    """True if the CPU multiplies bfloat16 natively (AMX or AVX512-BF16); otherwise bfloat16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
        return " amx_bf16" in flags or " avx512_bf16" in flags
    except OSError:
        return False


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 0.6) -> float:
    """The best TFLOP/s of square matmuls on this device in this dtype, with this process's threads."""
    best = 0.0
    sizes = (1024, 2048, 4096) if device.type == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        end = time.perf_counter() + seconds / len(sizes)
        while time.perf_counter() < end:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e12)
    return best


def peak_tflops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> tuple[float, str]:
    """(peak TFLOP/s of one device for `dtype`, where the figure comes from)."""
    if override:
        return override, "given"
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_TFLOPS:
            if key in name:
                return value, f"{name} datasheet"
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return measure_matmul_tflops(device, dtype), f"measured on {what}"


# ----------------------------------------------------------------------------
# metrics: console, CSV, JSON lines, TensorBoard, plot

CSV_FIELDS = ("step", "kind", "tokens", "loss", "val_loss", "val_bpb", "lr", "grad_norm", "tok_per_s", "mfu", "elapsed")


class Metrics:
    """Every record goes to OUT/metrics.jsonl, OUT/metrics.csv and TensorBoard (rank 0 only)."""

    def __init__(self, out: Path, resume_step: int | None, tensorboard: bool):
        self.out = out
        self.jsonl = out / "metrics.jsonl"
        self.csv = out / "metrics.csv"
        self.records: list[dict] = []
        if resume_step is not None and self.jsonl.is_file():
            # keep what was logged up to the checkpoint; later records belong to the lost part of the run
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if record.get("step", 0) <= resume_step:
                    self.records.append(record)
        with open(self.jsonl, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        with open(self.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.records)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step is not None else None)
            except ImportError:
                log.warning("TensorBoard logging is off: install the `tensorboard` package (pip install 'gpt2[train]')")

    def add(self, record: dict) -> None:
        self.records.append(record)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(record)
        if self.tb is not None:
            prefix = "train" if record["kind"] == "train" else "eval"
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and value is not None:
                    self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_losses(records: list[dict], path: Path, title: str, tokens_per_step: int | None = None) -> None:
    """Training loss (raw and smoothed) and held-out loss against steps (and tokens, on top), to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None and math.isfinite(r["loss"])]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="training loss")
        # a centred moving average over ~2% of the run (narrower at the ends), so the curve does not lag
        half = max(1, len(losses) // 100)
        sums = [0.0]
        for value in losses:
            sums.append(sums[-1] + value)
        smooth = []
        for i in range(len(losses)):
            w = min(half, i, len(losses) - 1 - i)
            smooth.append((sums[i + w + 1] - sums[i - w]) / (2 * w + 1))
        ax.plot(steps, smooth, color="tab:blue", linewidth=1.6, label="training loss (moving average)")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, losses, "o-", color="tab:orange", linewidth=1.6, markersize=4, label="held-out loss")
    ax.set_xlabel("step")
    if tokens_per_step:
        top = ax.secondary_xaxis("top", functions=(lambda s: s * tokens_per_step / 1e6, lambda t: t * 1e6 / tokens_per_step))
        top.set_xlabel("tokens (millions)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def git_commit() -> str | None:
    """The commit of the source tree this package runs from (with '-dirty' for local changes), if it is a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# ----------------------------------------------------------------------------
# the trainer


class Trainer:
    """One training run: built from a TrainConfig, advanced with `step()`, driven to the end by `run()`."""

    def __init__(self, cfg: TrainConfig, d: Dist | None = None):
        self.cfg = cfg
        self.d = d = d or Dist()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.device = d.device
        if self.device.type == "cpu":
            kernels.retain_freed_memory()  # a step's large buffers are reused, not faulted in afresh each step
        self.data = TokenDataset(cfg.data.dir)
        self.tok = self.data.tokenizer()
        self.config = model_config(cfg, self.data.n_vocab)
        self.dtype = choose_dtype(cfg.dtype, self.device)
        if cfg.parallel == "fsdp" and d.enabled and self.dtype == torch.float16:
            raise GPT2Error("FSDP2 runs here in bfloat16 or float32; use --dtype bfloat16 (or --parallel ddp for float16)")
        T, B = self.config.block_size, cfg.batch_size
        global_tokens = cfg.global_batch_tokens or B * T * d.world
        if global_tokens % (B * T * d.world):
            raise GPT2Error(
                f"global_batch_tokens ({global_tokens:,}) must be a multiple of batch_size x block_size x processes "
                f"({B} x {T} x {d.world} = {B * T * d.world:,})"
            )
        self.global_batch = global_tokens // T  # sequences per step
        self.tokens_per_step = global_tokens

        # a new run, or the newest checkpoint of this one (decided on rank 0, where the files are written)
        decision = self._resume_decision() if d.is_main else None
        error, resume_path = distributed.broadcast_object(decision, d)
        if error:
            raise GPT2Error(error)

        torch.manual_seed(cfg.seed)  # the same initial weights on every process
        self.gpt = GPT(self.config).to(self.device)
        self.lm = LMLoss(self.gpt)
        fsdp = cfg.parallel == "fsdp" and d.enabled
        param_dtype = self.dtype if fsdp and self.device.type == "cuda" and self.dtype != torch.float32 else None
        if cfg.compile and fsdp:
            for block in self.gpt.transformer.h:
                block.compile()
        self.model = distributed.wrap(self.lm, list(self.gpt.transformer.h), d, cfg.parallel, param_dtype)
        if cfg.compile and not fsdp:
            self.model = torch.compile(self.model)
        use_autocast = self.dtype != torch.float32 and param_dtype is None
        self.autocast = torch.autocast(self.device.type, dtype=self.dtype) if use_autocast else nullcontext()
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 tensor cores for what runs in float32
        o = cfg.optim
        fused = o.fused and self.device.type in ("cuda", "cpu") and not (fsdp and self.device.type == "cpu")
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.lm, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused or None
        )
        self.fused_clip = fused and self.scaler is None and not fsdp

        self.loader = TrainBatches(
            self.data.stream("train"), T, B, self.global_batch, rank=d.rank, world=d.world, seed=cfg.seed
        )
        self.val = self.data.stream("val") if self.data.num_tokens("val") > 0 else None
        self.token_bytes = torch.tensor(
            [0 if i in self.tok.special_tokens.values() else len(b) for i, b in enumerate(self.tok.vocab)]
            + [0] * (self.config.vocab_size - self.tok.n_vocab),
            dtype=torch.float64,
            device=self.device,
        )
        self.step_count = 0  # optimizer steps done (skipped ones included)
        self.tokens = 0
        self.nonfinite = 0
        self.best_val: float | None = None
        self.last_eval: dict | None = None
        self.elapsed = 0.0  # training seconds in earlier sessions of this run
        if resume_path is not None:
            self._load(Path(resume_path))
        else:
            torch.manual_seed(cfg.seed + d.rank)  # dropout masks differ between processes

        self.flops_per_token = flops_per_token(self.config, T)
        peak, source = peak_tflops(self.device, self.dtype, cfg.log.peak_tflops)
        self.peak_flops = peak * 1e12
        self.metrics = None
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            run_info = {
                "command": sys.argv,
                "version": __version__,
                "git_commit": git_commit(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "resumed_from": str(resume_path) if resume_path else None,
                "world_size": d.world,
                "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch."),
                "torch": torch.__version__,
                "peak_tflops": peak,
                "peak_source": source,
                "model": dataclasses.asdict(self.config),
                "parameters": self.gpt.num_params(),
                "dataset": self.data.fingerprint,
            }
            (self.out / "run.json").write_text(json.dumps(run_info, indent=1) + "\n", encoding="utf-8")  # first: marks a run
            self.metrics = Metrics(self.out, self.step_count if resume_path else None, cfg.log.tensorboard)
            (self.out / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
            accum = self.loader.accum
            log.info(
                "model: %s parameters (%d layers, %d heads, %d wide, context %d, vocabulary %s); %s on %s x %d, %s",
                f"{self.gpt.num_params() / 1e6:.1f}M", self.config.n_layer, self.config.n_head, self.config.n_embd,
                T, f"{self.config.vocab_size:,}", str(self.dtype).removeprefix("torch."), self.device, d.world,
                "compiled" if cfg.compile else "eager",
            )
            log.info(
                "batch: %s tokens per step = %d process(es) x %d micro-batch(es) x %d x %d tokens; %d steps = %s tokens "
                "(%.2f epochs of %s training tokens); peak %.1f TFLOP/s per device (%s)",
                f"{self.tokens_per_step:,}", d.world, accum, B, T, cfg.max_steps, f"{cfg.max_steps * self.tokens_per_step:,}",
                cfg.max_steps * self.global_batch / self.loader.n_windows, f"{self.data.num_tokens('train'):,}", peak, source,
            )

    # -- set-up helpers -----------------------------------------------------

    def _resume_decision(self) -> tuple[str | None, str | None]:
        """(error, checkpoint to resume from), decided on rank 0."""
        if self.out.exists() and not self.out.is_dir():
            return f"--out {self.out} is a file, not a directory; choose another --out", None
        if self.out.is_dir() and any(self.out.iterdir()) and not _holds_a_run(self.out):
            return (
                f"{self.out} is not empty and holds no run of `gpt2 train` (no run.json of one); "
                f"choose a new or empty --out, so that nothing in it is overwritten"
            ), None
        found = checkpoint.latest(self.ckpt_dir)
        damaged = checkpoint.incomplete(self.ckpt_dir)
        if found is not None and damaged and damaged[-1].name > found.name and self.cfg.resume:
            log.warning(
                "%s is not a complete checkpoint (%s is missing): resuming from %s, the newest complete one",
                damaged[-1], checkpoint.missing_file(damaged[-1]), found.name,
            )
        if found is None:
            if damaged:
                return (
                    f"{damaged[-1]} is not a complete checkpoint ({checkpoint.missing_file(damaged[-1])} is missing) and "
                    f"{self.ckpt_dir} holds no other; restore it, or choose another --out"
                ), None
            done = [name for name in ("model", "metrics.jsonl") if (self.out / name).exists()]
            if "model" in done:
                return (
                    f"{self.out} holds a finished run ({', '.join(done)}) but no checkpoint to continue from; "
                    f"choose another --out, or delete {self.out} to train it again"
                ), None
            if done and not self.cfg.resume:  # killed before its first checkpoint
                return f"{self.out} holds a run that stopped before its first checkpoint; pass --resume to start it again", None
            if self.cfg.resume:
                log.info("no checkpoint in %s yet: starting from the beginning", self.ckpt_dir)
            return None, None
        if not self.cfg.resume:
            return (
                f"{self.out} already holds a run (newest checkpoint: {found.name}); pass --resume to continue it, "
                f"or choose another --out"
            ), None
        return None, str(found)

    def _load(self, path: Path) -> None:
        """Restore the model, optimizer, data cursor, counters and RNG from a checkpoint (read on rank 0)."""
        d = self.d
        meta = None
        model_state: dict = {}
        optim_state: dict = {}
        error = None
        if d.is_main:
            try:
                ck = checkpoint.load(path)
                self._check_compatible(ck)
            except GPT2Error as e:
                error = str(e)
        error = distributed.broadcast_object(error, d)
        if error:
            raise GPT2Error(error)
        if d.is_main:
            model_state = {"gpt." + k: v for k, v in ck.model.items()}
            model_state["gpt.lm_head.weight"] = model_state["gpt.transformer.wte.weight"]  # tied, stored once
            optim_state = {
                "state": {"gpt." + k: v for k, v in ck.optimizer["state"].items()},
                "param_groups": [{**g, "params": ["gpt." + p for p in g["params"]]} for g in ck.optimizer["param_groups"]],
            }
            meta = {"state": ck.state, "rng": ck.rng}
            changed = [
                k for k, v in _flat(to_dict(self.cfg)).items() if _flat(ck.state["config"]).get(k, v) != v and k not in ("resume", "out")
            ]
            if changed:
                log.warning("resuming with changed settings: %s", ", ".join(changed))
        meta = distributed.broadcast_object(meta, d)
        distributed.load_full_state(self.model, self.optimizer, model_state, optim_state, d)
        state = meta["state"]
        self.step_count = int(state["step"])
        self.tokens = int(state["tokens"])
        self.nonfinite = int(state["nonfinite"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.best_val = state.get("best_val_loss")
        self.elapsed = float(state.get("elapsed", 0.0))
        self.loader.load_state_dict(state["data"])
        rng = meta["rng"]
        if f"rank{d.rank}.cpu" in rng:
            torch.set_rng_state(rng[f"rank{d.rank}.cpu"])
            if self.device.type == "cuda" and f"rank{d.rank}.cuda" in rng:
                torch.cuda.set_rng_state(rng[f"rank{d.rank}.cuda"], self.device)
        else:
            log.warning("the checkpoint has no random state for rank %d (fewer processes before): reseeding it", d.rank)
            torch.manual_seed(self.cfg.seed + d.rank + 1_000_003 * self.step_count)
        log.info("resumed from %s: step %d, %s tokens, epoch %.2f", path, self.step_count, f"{self.tokens:,}", self.loader.epoch)

    def _check_compatible(self, ck: checkpoint.Checkpoint) -> None:
        absent = [key for key in ("tokens", "nonfinite", "data", "config", "model_config", "dataset") if key not in ck.state]
        if absent:
            raise GPT2Error(f"{ck.path}/state.json has no {', '.join(absent)} (edited by hand?); {checkpoint.RESUME_EARLIER}")
        saved = ck.state["model_config"]
        now = dataclasses.asdict(self.config)
        if saved != now:
            key = next(k for k in now if saved.get(k) != now[k])
            raise GPT2Error(
                f"{ck.path} holds a different model ({key}={saved.get(key)!r}, now {now[key]!r}); resume with the same model settings"
            )
        expected = {k: tuple(v.shape) for k, v in self.gpt.state_dict().items() if k != "lm_head.weight"}
        saved_shapes = {k: tuple(v.shape) for k, v in ck.model.items()}
        if saved_shapes != expected:
            key = next(k for k in [*expected, *saved_shapes] if saved_shapes.get(k) != expected.get(k))
            raise GPT2Error(
                f"{ck.path} holds weights of another shape ({key}: {saved_shapes.get(key)}, this model {expected.get(key)}) "
                f"than its state.json describes; it is damaged: {checkpoint.RESUME_EARLIER}"
            )
        if ck.state["dataset"] != self.data.fingerprint:
            raise GPT2Error(f"{ck.path} was trained on another dataset than {self.cfg.data.dir}; resume with the same --data.dir")

    # -- one step -----------------------------------------------------------

    def _check_ids(self, *tokens: torch.Tensor) -> None:
        """Refuse token ids the tokenizer does not have (a damaged shard, or shards of another tokenizer)."""
        top = max(int(t.max()) for t in tokens)
        if top >= self.data.n_vocab:
            raise GPT2Error(
                f"the token shards in {self.cfg.data.dir} hold the id {top}, but their tokenizer has only "
                f"{self.data.n_vocab} tokens: the shards are damaged; rebuild them with `gpt2 prepare ... --force`"
            )

    def step(self) -> dict:
        """One optimizer step over a global batch; returns its training record."""
        cfg, o = self.cfg, self.cfg.optim
        lr = lr_at(self.step_count, o.lr, o.warmup_steps, cfg.max_steps, o.final_lr_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        batches = self.loader.next()
        self._check_ids(*(t for batch in batches for t in batch))
        total = torch.zeros((), device=self.device)
        for i, (x, y) in enumerate(batches):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with distributed.gradient_sync(self.model, i == len(batches) - 1):
                with self.autocast:
                    loss = self.model(x, y) / len(batches)
                total += loss.detach()
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        loss = distributed.all_reduce(total, self.d, "mean").item()
        record = {"step": self.step_count + 1, "kind": "train", "tokens": self.tokens + self.tokens_per_step, "loss": loss, "lr": lr}
        norm = None
        if math.isfinite(loss):
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if self.fused_clip:
                norm = clip_in_optimizer(self.optimizer, self.lm.parameters(), o.grad_clip)
            else:
                norm = torch.nn.utils.clip_grad_norm_(self.lm.parameters(), o.grad_clip or math.inf)
            if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
                norm = norm.full_tensor()
            norm = norm.item()
        # with float16 loss scaling, overflowing gradients are routine: GradScaler skips those steps itself
        if not math.isfinite(loss) or (not math.isfinite(norm) and self.scaler is None):
            # one bad batch should not poison the weights: drop this update, count it, go on
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite += 1
            record.update(loss=None if not math.isfinite(loss) else loss, skipped=True)
            what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
            log.warning("step %d: %s; update skipped (%d in a row)", self.step_count + 1, what, self.nonfinite)
        else:
            self.nonfinite = 0
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            record["grad_norm"] = norm
        self.step_count += 1
        self.tokens += self.tokens_per_step
        seconds = time.perf_counter() - t0
        record["seconds"] = seconds
        record["tok_per_s"] = self.tokens_per_step / seconds
        record["mfu"] = self.flops_per_token * record["tok_per_s"] / (self.peak_flops * self.d.world)
        return record

    # -- evaluation ---------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Held-out loss (nats per token) and bits per byte, over up to eval.max_tokens tokens of the held-out split.

        Bits per byte = summed loss / ln 2 / UTF-8 bytes of the predicted tokens; positions
        whose target is a special token (<|endoftext|>) count in the loss but not here, so the
        figure measures the text alone and compares across tokenizers.
        """
        if self.val is None:
            return None
        cfg = self.cfg
        n, _ = eval_windows(self.val, self.config.block_size, cfg.eval.max_tokens)
        if n < self.d.world:
            log.warning("the held-out split is too small to evaluate on %d processes", self.d.world)
            return None
        n -= n % self.d.world  # every process runs the same number of batches (FSDP gathers in each)
        self.model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in eval_batches(
            self.val, self.config.block_size, cfg.eval.batch_size or cfg.batch_size, n * self.config.block_size,
            rank=self.d.rank, world=self.d.world,
        ):
            self._check_ids(x, y)
            x, y = x.to(self.device), y.to(self.device)
            with self.autocast:
                losses = self.model(x, y, reduction="none").double()
            nbytes = self.token_bytes[y]
            sums += torch.stack([losses.sum(), torch.tensor(losses.numel(), device=self.device), (losses * (nbytes > 0)).sum(), nbytes.sum()])
        self.model.train()
        distributed.all_reduce(sums, self.d)
        nats, count, text_nats, text_bytes = sums.tolist()
        result = {
            "step": self.step_count,
            "kind": "eval",
            "tokens": self.tokens,
            "val_loss": nats / count,
            "val_bpb": text_nats / math.log(2) / text_bytes if text_bytes else None,
            "val_tokens": int(count),
        }
        self.last_eval = result
        if self.best_val is None or result["val_loss"] < self.best_val:
            self.best_val = result["val_loss"]
        return result

    def samples(self) -> list[str]:
        """`eval.samples` continuations of eval.prompt (or of <|endoftext|>, the start of a document), on rank 0."""
        cfg = self.cfg.eval
        if cfg.samples == 0:
            return []
        model = self._full_model()
        if model is None:
            return []
        from gpt2.sample import generate

        eot = self.tok.eot_token
        prompt = self.tok.encode_ordinary(cfg.prompt) if cfg.prompt else [eot]
        prompt = prompt[-(self.config.block_size - cfg.sample_tokens) :] if len(prompt) + cfg.sample_tokens > self.config.block_size else prompt
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed + self.step_count)
        was_training = model.training
        model.eval()
        with torch.no_grad(), self.autocast:
            new = generate(
                model, [prompt] * cfg.samples, min(cfg.sample_tokens, self.config.block_size - len(prompt)),
                temperature=cfg.temperature, top_k=cfg.top_k, stop_ids=(eot,) if eot is not None else (), generator=generator,
                vocab_size=self.tok.n_vocab,
            )
        model.train(was_training)
        shown = [] if not cfg.prompt else prompt
        return [self.tok.decode([t for t in shown + ids if t != eot]) for ids in new]

    def _full_model(self) -> GPT | None:
        """The whole model on rank 0 (None elsewhere): the model itself, or under FSDP2 a gathered copy."""
        if not distributed.is_fsdp(self.model) or not self.d.enabled:
            return self.gpt if self.d.is_main else None
        state = distributed.full_model_state(self.model)
        if not self.d.is_main:
            return None
        copy = GPT(self.config)
        copy.load_state_dict({k.removeprefix("gpt."): v for k, v in state.items()})
        return copy.to(self.device)

    # -- checkpoints --------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        model_state, optim_state = distributed.full_state(self.model, self.optimizer)
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        all_rng = distributed.all_gather_object(rng, self.d)
        path = None
        if self.d.is_main:
            model_state = {k.removeprefix("gpt."): v for k, v in model_state.items() if k != "gpt.lm_head.weight"}
            optim_state = {
                "state": {k.removeprefix("gpt."): v for k, v in optim_state["state"].items()},
                "param_groups": [{**g, "params": [p.removeprefix("gpt.") for p in g["params"]]} for g in optim_state["param_groups"]],
            }
            val = self.last_eval["val_loss"] if self.last_eval and self.last_eval["step"] == self.step_count else None
            state = {
                "tokens": self.tokens,
                "data": self.loader.state_dict(),
                "nonfinite": self.nonfinite,
                "grad_scaler": self.scaler.state_dict() if self.scaler else None,  # float16's loss scale
                "val_loss": val,
                "best_val_loss": self.best_val,
                "elapsed": self.elapsed + self.session_seconds(),
                "config": to_dict(self.cfg),
                "model_config": dataclasses.asdict(self.config),
                "dataset": self.data.fingerprint,
                "world_size": self.d.world,
                "git_commit": git_commit(),
                "package_version": __version__,
                "saved": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            flat_rng = {f"rank{r}.{k}": v for r, states in enumerate(all_rng) for k, v in states.items()}
            c = self.cfg.checkpoint
            path = checkpoint.save(
                self.ckpt_dir, self.step_count, model_state, optim_state, flat_rng, state, keep_last=c.keep_last, keep_best=c.keep_best
            )
        distributed.barrier(self.d)
        return path

    def session_seconds(self) -> float:
        return time.perf_counter() - self._t_start if hasattr(self, "_t_start") else 0.0

    # -- the loop -----------------------------------------------------------

    def run(self) -> dict:
        """Train to max_steps with evaluation, samples, logging and checkpoints; then export the model."""
        cfg, d = self.cfg, self.d
        self._t_start = time.perf_counter()
        first = self.step_count
        window: list[dict] = []
        bar = tqdm(
            total=cfg.max_steps, initial=first, desc="training", unit="step", file=sys.stderr,
            disable=None if d.is_main else True, dynamic_ncols=True,
        )
        try:
            with _redirect_logging(bar):
                while self.step_count < cfg.max_steps:
                    record = self.step()
                    record["elapsed"] = self.elapsed + self.session_seconds()
                    window.append(record)
                    if self.metrics:
                        self.metrics.add(record)
                    bar.update(1)
                    if record.get("loss") is not None:
                        bar.set_postfix_str(f"loss {record['loss']:.3f}, {record['tok_per_s']:,.0f} tok/s, MFU {100 * record['mfu']:.1f}%")
                    if self.nonfinite >= cfg.max_nonfinite:
                        raise GPT2Error(
                            f"the loss or the gradients were NaN or infinite in {self.nonfinite} steps in a row (up to step {self.step_count}); "
                            f"lower --optim.lr, lengthen --optim.warmup-steps, or train in bfloat16/float32 "
                            f"(resume from the last checkpoint with --resume)"
                        )
                    last = self.step_count == cfg.max_steps
                    if self.step_count % cfg.log.interval == 0 or last:
                        self._log_train(window)
                        window = []
                    evaluate = (cfg.eval.interval and self.step_count % cfg.eval.interval == 0) or last
                    save = (cfg.checkpoint.interval and self.step_count % cfg.checkpoint.interval == 0) or last
                    if evaluate:
                        self._eval_and_sample()
                    if save:
                        path = self.save_checkpoint()
                        if path:
                            log.info("checkpoint: %s", path)
                    if evaluate or save:
                        kernels.trim_freed_memory()  # what that work freed goes back, not held by a fragmented heap
        except KeyboardInterrupt:
            found = checkpoint.latest(self.ckpt_dir) if self.d.is_main else None
            where = f"from {found.name}" if found else "from the beginning (no checkpoint yet)"
            log.warning(
                "interrupted at step %d; to continue %s, run the same `gpt2 train` command with --resume "
                "(`gpt2 demo` resumes by itself)", self.step_count, where,
            )
            raise
        finally:
            bar.close()
        if self.step_count == first:  # resumed a finished run: report on it again
            self._eval_and_sample()
        return self._finish()

    def _log_train(self, window: list[dict]) -> None:
        good = [r for r in window if not r.get("skipped")]
        if not good:
            return
        seconds = sum(r["seconds"] for r in window)
        tok_s = self.tokens_per_step * len(window) / seconds
        eta = (self.cfg.max_steps - self.step_count) * seconds / len(window)
        log.info(
            "step %d/%d | loss %.4f | lr %.2e | grad norm %.2f | %s tok/s | MFU %.1f%% | ETA %s",
            self.step_count, self.cfg.max_steps, sum(r["loss"] for r in good) / len(good), good[-1]["lr"],
            good[-1]["grad_norm"], f"{tok_s:,.0f}", 100 * self.flops_per_token * tok_s / (self.peak_flops * self.d.world),
            _duration(eta),
        )

    def _eval_and_sample(self) -> None:
        result = self.evaluate()
        if result is not None:
            if self.metrics:
                self.metrics.add(result)
            bpb = f"{result['val_bpb']:.4f}" if result["val_bpb"] is not None else "n/a"
            log.info("step %d | held-out loss %.4f | %s bits per byte", self.step_count, result["val_loss"], bpb)
        for i, text in enumerate(self.samples()):
            log.info("sample %d at step %d:\n%s\n", i + 1, self.step_count, text.strip("\n"))
        if self.metrics and self.cfg.log.plot:
            self._plot()

    def _plot(self) -> None:
        title = f"{self.out.parent.name}/{self.out.name}: {self.gpt.num_params() / 1e6:.1f}M parameters"
        if self.last_eval and self.last_eval.get("val_bpb"):
            title += f", held-out {self.last_eval['val_bpb']:.3f} bits/byte at step {self.last_eval['step']}"
        plot_losses(self.metrics.records, self.out / "loss.png", title, self.tokens_per_step)

    def _finish(self) -> dict:
        """Export the final model (weights.save_model) and log the summary line."""
        model = self._full_model()
        summary = {
            "steps": self.step_count,
            "tokens": self.tokens,
            "val_loss": self.last_eval["val_loss"] if self.last_eval else None,
            "val_bpb": self.last_eval["val_bpb"] if self.last_eval else None,
            "train_loss": next((r["loss"] for r in reversed(self.metrics.records) if r.get("kind") == "train" and r.get("loss") is not None), None)
            if self.metrics
            else None,
            "model_dir": str(self.out / "model"),
            "seconds": self.elapsed + self.session_seconds(),
        }
        if self.d.is_main:
            from gpt2.weights import save_model

            save_model(model, self.out / "model", tokenizer=self.tok, overwrite=True)
            self.metrics.close()
            if self.cfg.log.plot:
                self._plot()
            held_out = (
                f"held-out loss {summary['val_loss']:.4f} ({summary['val_bpb']:.4f} bits per byte)"
                if summary["val_loss"] is not None and summary["val_bpb"] is not None
                else "no held-out split"
            )
            log.info(
                "trained %d steps (%s tokens) in %s: %s; model -> %s, plot -> %s",
                self.step_count, f"{self.tokens:,}", _duration(summary["seconds"]), held_out, self.out / "model", self.out / "loss.png",
            )
        distributed.barrier(self.d)
        return summary


class _redirect_logging:
    """Route log lines through tqdm.write while a progress bar is shown, so the two do not garble each other."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.ctx = None

    def __enter__(self):
        if not self.bar.disable:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.ctx = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def train(cfg: TrainConfig) -> dict:
    """`gpt2 train`: returns the run's summary (steps, tokens, held-out loss and bits per byte, model directory)."""
    d = distributed.init(cfg.device)
    try:
        return Trainer(cfg, d).run()
    finally:
        distributed.shutdown(d)
