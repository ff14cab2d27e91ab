"""The language-model loss of training: next-token cross-entropy from the final hidden states.

GPT-2 (section 2) trains a language model: minimise the cross-entropy of each
next token. With GPT-2's vocabulary the logits of a batch are large, so the loss
is computed from the trunk's hidden states and the output embedding in chunks of
rows (`_ChunkedCrossEntropy`), never holding the whole batch's logits in float32;
under torch.compile it is one formula that the compiler fuses
(`full_logits_loss`). Fine-tuning's auxiliary LM loss (GPT-1 section 3.2) is the
same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2 import kernels
from gpt2.model import GPT


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
