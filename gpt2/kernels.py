"""Work that PyTorch runs slowly on a CPU, done by the kernels of gpt2/_gemv.c where they apply.

A bfloat16 training step on a CPU spends most of its time in matrix products,
and much of the rest in a few element-wise passes that PyTorch's CPU kernels
run far below memory speed (2 cores, 4 x 256 tokens, GPT-2 124M; see
docs/training.md, "Where a CPU step goes"):

- GELU in its tanh form and its gradient: 8.7 and 6.6 ms per layer in
  PyTorch, 1.6 and 2.9 ms here (AVX-512, an exp written as a polynomial);
  the same kernel takes float32, which evaluation runs in: 2.0-2.3 ms against
  PyTorch's 6.2-7.2;
- the cross-entropy of a chunk of logits: turning (rows, 50,304) bfloat16
  logits into per-row losses and the gradient softmax - one_hot took
  ~120 ms per 333 rows as PyTorch ops (a float32 copy, log-sum-exp, exp,
  subtractions), 11 ms as one kernel that reads each row twice and writes it
  once, in place;
- causal attention up to 320 tokens (`causal_attention`): PyTorch's flash
  forward, then a backward that recomputes the weights with batched matrix
  products, and the softmax and its gradient in one pass of a kernel, instead
  of PyTorch's bfloat16 flash backward.

Beside the kernels, `retain_freed_memory` and `trim_freed_memory` set how
glibc's heap treats the large blocks a training step allocates and frees.

Each function falls back to plain PyTorch for other dtypes and devices, under
torch.compile (which fuses these itself), and where the extension is missing
or the CPU lacks AVX512-BF16. The kernels compute in float32 and round once,
like PyTorch's; GELU's tanh is written so that it does not cancel for large
negative inputs, where PyTorch's float32 GELU returns 0 for a tiny negative
value (tests/test_kernels.py checks both against float64).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import torch
import torch.nn.functional as F


@functools.cache
def available() -> bool:
    """Whether gpt2._gemv is built and this CPU runs its AVX512-BF16 kernels."""
    try:
        from gpt2 import _gemv
    except ImportError:  # installed without a C compiler
        return False
    return _gemv.supported()


@functools.cache
def retain_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing large blocks back to the kernel.

    PyTorch's CPU tensors come from malloc, and glibc serves blocks above its
    mmap threshold (at most 32 MB) with fresh pages, which the kernel zeroes
    on first touch and takes back on free. A GPT-2 124M training step
    allocates and frees about 1 GB that way (logits, the output embedding's
    gradient and casts), so every step paid ~250,000 page faults, 8-17% of
    a step on 2 cores (bench/RESULTS.md). With mmap off and a high trim
    threshold, freed blocks stay in the heap and the next step reuses them;
    the price is that the process keeps freed memory until `trim_freed_memory`.
    Process-wide, once; False (nothing changed) off glibc or with
    GPT2_KEEP_FREED_MEMORY=0 in the environment.
    """
    if not sys.platform.startswith("linux") or os.environ.get("GPT2_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # musl's mallopt does nothing
        return False
    mallopt = libc.mallopt
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    global _retained
    _retained = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _retained


_retained = False


def trim_freed_memory() -> None:
    """Give the free pages of the heap back to the kernel (glibc's malloc_trim), after work that is not a step.

    A heap that keeps what is freed can fragment where buffers of other sizes
    come and go (evaluation, saving a checkpoint): a large free block split by
    a small allocation no longer fits the next large request, and its pages
    stay resident. The trainer trims after such work, so memory returns to
    what the steps themselves use; the next step faults its buffers in once.
    """
    if _retained:
        ctypes.CDLL(None).malloc_trim(0)


def _use_kernel(x: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.bfloat16,)) -> bool:
    # plain tensors only: the kernels read raw memory, which a DTensor or a fake tensor does not have
    plain = type(x) is torch.Tensor and x.dtype in dtypes and x.device.type == "cpu"
    return plain and not torch.compiler.is_compiling() and available()


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU in its tanh form (GPT-2's), `F.gelu(x, approximate="tanh")`; the kernel takes bfloat16 and float32."""
    if _use_kernel(x, (torch.bfloat16, torch.float32)):
        return _GeluTanh.apply(x)
    return F.gelu(x, approximate="tanh")


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        from gpt2 import _gemv

        x = x.contiguous()
        y = torch.empty_like(x)
        _gemv.gelu(y.data_ptr(), 0, x.data_ptr(), x.numel(), torch.get_num_threads(), x.dtype == torch.float32)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative raises instead of coming out wrong
    def backward(ctx, dy):
        from gpt2 import _gemv

        (x,) = ctx.saved_tensors
        dy = dy.to(x.dtype).contiguous()
        dx = torch.empty_like(x)
        f32 = x.dtype == torch.float32
        _gemv.gelu(dx.data_ptr(), dy.data_ptr(), x.data_ptr(), x.numel(), torch.get_num_threads(), f32)
        return dx


def has_cross_entropy_kernel(logits: torch.Tensor) -> bool:
    """Whether `cross_entropy_rows_` runs its kernel on logits like these (dtype, device, tensor type)."""
    return _use_kernel(logits)


def cross_entropy_rows_(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int, scale: float) -> torch.Tensor | None:
    """Per-row cross-entropy of (rows, V) logits, of which the first `vocab_size` columns are real, as a float32
    tensor; the logits are overwritten by the gradient of `scale` x the loss, scale * (softmax - one_hot(target)),
    with 0 in the other columns. Returns None (and leaves the logits alone) where the kernel does not apply:
    other dtypes or devices, a non-contiguous tensor, or no kernel."""
    if not has_cross_entropy_kernel(logits) or not logits.is_contiguous() or logits.dim() != 2:
        return None
    from gpt2 import _gemv

    rows, V = logits.shape
    if targets.numel() != rows or not 1 <= vocab_size <= V:
        raise ValueError(f"cross_entropy_rows_: {targets.numel()} targets and vocab_size {vocab_size} for logits of shape {tuple(logits.shape)}")
    targets = targets.to(torch.int64).contiguous()
    losses = torch.empty(rows, dtype=torch.float32)
    _gemv.cross_entropy(logits.data_ptr(), targets.data_ptr(), losses.data_ptr(), rows, V, vocab_size, scale, torch.get_num_threads())
    return losses


ATTENTION_CHUNK = 1 << 21  # attention scores per chunk of heads in `_CausalAttention.backward`: 8 MB in float32
# Up to this length the recomputing backward wins (B=4, 12 heads of 64, 2 cores, forward + backward, PyTorch's
# time over ours, paired: 1.8-2.0x at 160 tokens, 1.05-1.5x at 256, 1.10-1.27x at 320, 1.02-1.06x at 384,
# 0.92-1.06x at 512; bench/bench_attention.py); beyond it the two are even, since the scores recomputed in float32
# cost more as T grows.
ATTENTION_MAX_T = 320


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of (B, heads, T, head_dim) queries, keys and values, `F.scaled_dot_product_attention(q, k,
    v, is_causal=True)`.

    For bfloat16 on a CPU that trains on up to ATTENTION_MAX_T tokens, the forward pass is PyTorch's flash
    kernel and the backward pass recomputes the attention weights (scores and softmax in float32, as the
    forward had them) a few heads at a time and differentiates through them with batched matrix products,
    the softmax and its gradient between them in one pass of a kernel (`_gemv.softmax_grad`; PyTorch's ops
    where the extension is missing): at 4 x 256 tokens of GPT-2 124M, 18-21 ms per layer against 25 ms for
    PyTorch's bfloat16 flash kernels on a CPU (forward and backward together). Elsewhere it is the PyTorch call.
    """
    cpu_bf16 = all(type(t) is torch.Tensor and t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in (q, k, v))
    same_shape = q.shape == k.shape == v.shape
    if cpu_bf16 and same_shape and q.requires_grad and q.shape[-2] <= ATTENTION_MAX_T and not torch.compiler.is_compiling():
        return _CausalAttention.apply(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        B, H, T, D = q.shape
        scale = D**-0.5
        q, k, v, dout = (t.reshape(B * H, T, D) for t in (q, k, v, dout.to(q.dtype)))
        dq, dk, dv = (torch.empty(B * H, T, D, dtype=q.dtype) for _ in range(3))
        step = max(1, ATTENTION_CHUNK // (T * T))
        fused = available()
        future = None if fused else torch.ones(T, T, dtype=torch.bool).triu_(1)
        for i in range(0, B * H, step):
            s = slice(i, i + step)
            # the scores and the softmax in float32, as the flash forward computed them: rounding large scores
            # to bfloat16 first would give weights that differ from the forward's
            scores = torch.bmm(q[s].float(), k[s].float().transpose(1, 2))
            dweights = torch.bmm(dout[s].float(), v[s].float().transpose(1, 2))
            if fused:  # the softmax, its gradient and both roundings in one pass over the lower triangle
                from gpt2 import _gemv

                weights, dscores = torch.empty_like(scores, dtype=q.dtype), torch.empty_like(scores, dtype=q.dtype)
                ptrs = (t.data_ptr() for t in (scores, dweights, weights, dscores))
                _gemv.softmax_grad(*ptrs, scores.shape[0] * T, T, scale, torch.get_num_threads())  # scale included
            else:
                weights = torch.softmax(scores.mul_(scale).masked_fill_(future, -torch.inf), dim=-1)
                dscores = torch._softmax_backward_data(dweights, weights, -1, torch.float32).mul_(scale).to(q.dtype)
                weights = weights.to(q.dtype)
            torch.bmm(weights.transpose(1, 2), dout[s], out=dv[s])
            torch.bmm(dscores, k[s], out=dq[s])
            torch.bmm(dscores.transpose(1, 2), q[s], out=dk[s])
        return dq.view(B, H, T, D), dk.view(B, H, T, D), dv.view(B, H, T, D)
