"""The optimizer of every training run: AdamW, its parameter groups, the learning-rate schedule and clipping.

GPT-1 section 4.1: Adam, "a modified version of L2 regularization ... w = 0.01
on all non bias or gain weights", a linear warm-up, then (pre-training) a cosine
decay; its fine-tuning (section 4.1, "Fine-tuning details") warms up linearly over
0.2% of training and decays linearly. Embeddings are left out of weight decay as
well. Gradients are clipped to a global norm (1.0 by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gpt2.errors import GPT2Error

DEFAULT_WARMUP = 700
"""Warm-up steps of a pre-training run that names none, at most a tenth of its steps."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay for the matrices of Linear layers; none for biases, LayerNorm gains or embeddings (GPT-1 4.1)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in embeddings}
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]


def warmup_steps(optim, max_steps: int) -> int:
    """The warm-up of a run of `max_steps` updates: optim.warmup_steps if given, else optim.warmup_fraction of
    the run (rounded up), else DEFAULT_WARMUP capped at a tenth of the run (so a 50-step smoke test warms up
    over 5 steps, not 700)."""
    if optim.warmup_steps is not None:
        if optim.warmup_steps > max_steps:
            raise GPT2Error(
                f"optim.warmup_steps ({optim.warmup_steps}) is longer than the run ({max_steps} steps); "
                f"lower it, or leave it unset for a warm-up of a tenth of the run"
            )
        return optim.warmup_steps
    if optim.warmup_fraction is not None:
        return math.ceil(optim.warmup_fraction * max_steps)
    return min(DEFAULT_WARMUP, max_steps // 10)


def lr_at(step: int, lr: float, warmup: int, max_steps: int, final_fraction: float, schedule: str = "cosine") -> float:
    """Learning rate of update `step` (0-based): linear warm-up over `warmup` updates, then a decay to
    lr * final_fraction at max_steps, along a cosine (pre-training) or a straight line (GPT-1's fine-tuning)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return lr * (final_fraction + (1 - final_fraction) * shape)


def make_optimizer(module: nn.Module, optim, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        parameter_groups(module, optim.weight_decay), lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
        fused=fused or None,
    )


IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable", "maximize")
"""Keys of an optimizer's param_groups that say how it runs, not what it has learned: a checkpoint written by one
layout (FSDP2 on a CPU has no fused AdamW) must not switch them in another."""


def keep_implementation(optimizer: torch.optim.Optimizer, load) -> None:
    """Run `load()` (which loads a saved optimizer state) and put back this optimizer's own implementation flags."""
    own = [{k: g[k] for k in IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    load()
    for group, flags in zip(optimizer.param_groups, own):
        for k in IMPLEMENTATION_KEYS:
            group.pop(k, None)
        group.update(flags)


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
    faster on a CPU than torch's norms (get_total_norm runs one norm per tensor there; bench/RESULTS.md),
    and closer to the float64 value (tests/test_train.py). Elsewhere (GPUs, DTensors under FSDP2, other
    dtypes) it is get_total_norm.
    """
    dot_ready = (
        type(g) is torch.Tensor and g.device.type == "cpu" and g.dtype == torch.float32 and g.layout == torch.strided and g.is_contiguous()
        for g in grads
    )
    if grads and all(dot_ready):
        return torch.stack([torch.dot(g.view(-1), g.view(-1)) for g in grads]).double().sum().sqrt().float()
    return torch.nn.utils.get_total_norm(grads, foreach=True)
