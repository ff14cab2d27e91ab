"""The bfloat16 CPU kernels of a training step (gpt2/kernels.py, gpt2/_gemv.c): GELU and its gradient and the
cross-entropy of a chunk of logits against float64 recomputations, the recomputing attention backward against
float64 SDPA, and a whole bfloat16 training step with them against the same step on PyTorch's ops."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gpt2 import kernels
from gpt2.model import GPT, GPTConfig
from gpt2.train.loss import LMLoss, lm_loss

pytestmark = pytest.mark.skipif(not kernels.available(), reason="needs gpt2._gemv compiled and a CPU with AVX512-BF16")

BF16_EPS = 2.0**-8  # half the spacing of bfloat16 numbers, relative


def gelu64(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh form in float64, as x * sigmoid(2 z): (1 + tanh z) / 2 without cancellation for large negative x."""
    x = x.double()
    return x * torch.sigmoid(2 * 0.7978845608028654 * (x + 0.044715 * x**3))


def close_to_rounded(got: torch.Tensor, want: torch.Tensor, tiny: float = 0.0) -> None:
    """`got` (bfloat16) is within one rounding of the float64 `want`, or within `tiny` of it."""
    err = (got.double() - want).abs()
    assert bool((err <= BF16_EPS * want.abs() + tiny).all()), f"worst error {err.max().item():.3g}"


@pytest.fixture
def no_kernels(monkeypatch):
    """Turn the kernels off: the PyTorch ops they replace run instead."""

    return lambda: monkeypatch.setattr(kernels, "_use_kernel", lambda *args: False)


def test_gelu_and_its_gradient_against_float64():
    torch.manual_seed(0)
    x = (torch.randn(3, 70_001) * 3).bfloat16().requires_grad_()  # not a multiple of 16: the masked tail too
    y = kernels.gelu_tanh(x)
    assert y.grad_fn is not None and "GeluTanh" in type(y.grad_fn).__name__  # the kernel ran
    want = gelu64(x.detach())
    # values below 1e-37 (x < -10) may come out as 0: the kernel's exp stops at e^-87
    close_to_rounded(y.detach(), want, tiny=2e-37)
    ordinary = x.detach().abs() < 9
    assert torch.equal(y.detach()[ordinary], want[ordinary].bfloat16()), "not rounded once from float32"
    # where 1 + tanh cancels (x < -5), PyTorch's own float32 GELU returns 0 for tiny negative values; ours does not
    far = (x.detach() < -6) & (x.detach() > -9)
    assert bool((y.detach()[far] < 0).all()) and bool((F.gelu(x.detach().float()[far], approximate="tanh") == 0).any())

    dy = torch.randn_like(x)
    y.backward(dy)
    x64 = x.detach().double().requires_grad_()
    gelu64(x64).backward(dy.double())
    # the product dy * gelu'(x) is rounded once: within one rounding of the float64 value, plus the float32 error
    err = (x.grad.double() - x64.grad).abs()
    assert bool((err <= 1.01 * BF16_EPS * x64.grad.abs() + 1e-30).all())


@pytest.mark.parametrize("n", [1, 15, 16, 17, 65536, 65536 + 7, 3 * 65536 + 1])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gelu_kernel_sizes_and_threads_write_every_value_and_nothing_more(n, threads, dtype):
    from gpt2 import _gemv

    x = (torch.randn(n + 32) * 3).to(dtype)
    out = torch.full((n + 32,), 7.0, dtype=dtype)  # 32 values past the end must stay untouched
    _gemv.gelu(out.data_ptr(), 0, x.data_ptr(), n, threads, dtype == torch.float32)
    assert torch.equal(out[:n], kernels.gelu_tanh(x[:n]))  # the same as the default thread count
    if dtype == torch.bfloat16:
        close_to_rounded(out[:n], gelu64(x[:n]), tiny=2e-37)
    else:
        # relative 3e-6 down to x = -5; below, the exp of -2|z| carries z's float32 error (~1e-7 * |2z|), so the
        # relative error grows with |x|: up to 0.93e-6 |x| over 60 draws of 196,609 values (values reach 0 from
        # x ~ -10, hence the absolute 1e-15)
        xs, ref = x[:n].double(), gelu64(x[:n])
        rtol = torch.where(xs < -5, 1.2e-6 * xs.abs(), torch.full_like(xs, 3e-6))
        err = (out[:n].double() - ref).abs()
        assert bool((err <= rtol * ref.abs() + 1e-15).all()), float((err / (rtol * ref.abs() + 1e-15)).max())
    assert bool((out[n:] == 7.0).all())


def test_a_second_derivative_through_the_kernels_raises_instead_of_being_wrong():
    x = torch.randn(8, 16).bfloat16().requires_grad_()
    (g,) = torch.autograd.grad(kernels.gelu_tanh(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.float().sum(), x)


def test_float32_gelu_and_its_gradient_against_float64():
    torch.manual_seed(6)
    x = (torch.randn(2, 50_001) * 3).requires_grad_()
    y = kernels.gelu_tanh(x)
    assert "GeluTanh" in type(y.grad_fn).__name__
    want = gelu64(x.detach())
    err = (y.detach().double() - want).abs()
    # the exp of -2|z| carries z's float32 error, ~1e-7 * |2z|: 3e-6 relative at |x| = 5 (PyTorch's: 0.3)
    near = x.detach().abs() < 5
    assert bool((err[near] <= 3e-6 * want[near].abs() + 1e-37).all()), err.max().item()
    far = x.detach() <= -5  # tiny values, 1e-6 and below: relative 2e-5 down to x = -9.5, then 0 for under 2e-36
    assert bool((err[far] <= 2e-5 * want[far].abs() + 2e-36).all())
    assert bool((err[x.detach() >= 5] <= 3e-7 * want[x.detach() >= 5]).all())
    assert bool((err[x.detach().abs() < 1] <= 4e-7 * want[x.detach().abs() < 1].abs() + 1e-37).all())
    dy = torch.randn_like(x)
    y.backward(dy)
    x64 = x.detach().double().requires_grad_()
    gelu64(x64).backward(dy.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=3e-6, atol=3e-7)  # |dy| ~ 1: float32 rounding


def test_gelu_falls_back_to_pytorch_where_the_kernel_does_not_apply():
    x = torch.randn(5, 33, dtype=torch.float64)
    assert torch.equal(kernels.gelu_tanh(x), F.gelu(x, approximate="tanh"))  # float64: PyTorch's op
    xb = x.bfloat16().t()  # not contiguous: the kernel runs on a contiguous copy
    assert torch.equal(kernels.gelu_tanh(xb), gelu64(xb).bfloat16())


@pytest.mark.parametrize("V, vocab", [(50304, 50257), (512, 500), (64, 64)])
def test_cross_entropy_rows_against_float64(V, vocab):
    torch.manual_seed(1)
    rows = 37
    logits = (torch.randn(rows, V) * 3).bfloat16()
    targets = torch.randint(0, vocab, (rows,))
    targets[0], targets[1] = 0, vocab - 1  # the first and the last real column
    scale = 1 / 123
    work = logits.clone()
    losses = kernels.cross_entropy_rows_(work, targets, vocab, scale)
    real = logits[:, :vocab].double()
    lse = torch.logsumexp(real, dim=1)
    want_loss = lse - real[torch.arange(rows), targets]
    assert losses.dtype == torch.float32
    torch.testing.assert_close(losses.double(), want_loss, rtol=0, atol=2e-5)
    grad = torch.softmax(real, dim=1) * scale
    grad[torch.arange(rows), targets] -= scale
    close_to_rounded(work[:, :vocab], grad, tiny=1e-12)
    assert bool((work[:, vocab:] == 0).all())  # padding columns are never predicted


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_cross_entropy_rows_with_fewer_rows_than_threads_and_odd_widths(threads):
    from gpt2 import _gemv

    for rows, V, vocab in [(1, 17, 17), (3, 100, 83), (5, 33, 1)]:
        logits = torch.randn(rows, V).bfloat16()
        targets = torch.randint(0, vocab, (rows,))
        work, losses = logits.clone(), torch.empty(rows)
        _gemv.cross_entropy(work.data_ptr(), targets.data_ptr(), losses.data_ptr(), rows, V, vocab, 0.5, threads)
        real = logits[:, :vocab].double()
        want = torch.logsumexp(real, 1) - real[torch.arange(rows), targets]
        torch.testing.assert_close(losses.double(), want, rtol=0, atol=2e-5)
        grad = torch.softmax(real, 1) * 0.5
        grad[torch.arange(rows), targets] -= 0.5
        close_to_rounded(work[:, :vocab], grad, tiny=1e-12)
        assert bool((work[:, vocab:] == 0).all())


def test_cross_entropy_rows_lets_nan_and_inf_logits_through():
    """A model that outputs NaN must not get a finite loss (the trainer's non-finite check relies on it)."""
    logits = torch.randn(3, 64).bfloat16()
    logits[0, 5] = float("nan")
    logits[1, 63] = float("nan")  # in the last vector
    logits[2, 9] = float("inf")
    targets = torch.tensor([0, 0, 0])
    want = F.cross_entropy(logits.float(), targets, reduction="none")
    losses = kernels.cross_entropy_rows_(logits.clone(), targets, 64, 1.0)
    assert bool(want.isnan().all()) and bool(losses.isnan().all())
    work = logits.clone()
    kernels.cross_entropy_rows_(work, torch.tensor([1, 1, 1]), 64, 1.0)
    assert bool(work.float().isnan().any(dim=1).all())


def test_cross_entropy_rows_checks_the_target_count():
    with pytest.raises(ValueError, match="targets"):
        kernels.cross_entropy_rows_(torch.randn(4, 64).bfloat16(), torch.zeros(3, dtype=torch.long), 64, 1.0)


def test_cross_entropy_rows_leaves_what_it_cannot_do_alone():
    logits = torch.randn(4, 64)
    assert kernels.cross_entropy_rows_(logits, torch.zeros(4, dtype=torch.long), 64, 1.0) is None
    wide = torch.randn(4, 128).bfloat16()[:, :64]  # not contiguous
    before = wide.clone()
    assert kernels.cross_entropy_rows_(wide, torch.zeros(4, dtype=torch.long), 64, 1.0) is None
    assert torch.equal(wide, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lm_loss_without_the_kernel_against_the_full_logits(dtype, monkeypatch):
    """float32 / float64 (no kernel): each chunk's logits are made inside the gradient buffer and turned into the
    gradient there; losses and gradients must equal F.cross_entropy of the whole logits."""
    import gpt2.train.loss

    monkeypatch.setattr(gpt2.train.loss, "CHUNK_ELEMENTS", 100 * 80)  # chunks of 128 rows (100 rounded up), the last one short
    torch.manual_seed(5)
    h = torch.randn(2, 150, 32, dtype=dtype, requires_grad=True)
    w = torch.randn(80, 32, dtype=dtype, requires_grad=True)  # 80 rows, 75 real
    y = torch.randint(0, 75, (2, 150))
    lm_loss(h, w, y, 75).backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    want = F.cross_entropy((h2 @ w2.t())[..., :75].flatten(0, 1), y.flatten())
    want.backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lm_loss(h.detach(), w.detach(), y, 75), want.detach(), **tol)
    torch.testing.assert_close(h.grad, h2.grad, **tol)
    torch.testing.assert_close(w.grad, w2.grad, **tol)
    per_row = lm_loss(h.detach(), w.detach(), y, 75, reduction="none")
    torch.testing.assert_close(per_row, F.cross_entropy((h2 @ w2.t())[..., :75].transpose(1, 2), y, reduction="none").detach(), **tol)


def test_lm_loss_with_the_kernel_matches_the_pytorch_ops(no_kernels):
    torch.manual_seed(2)
    N, C, V, vocab = 700, 48, 1040, 1000  # several chunks of rows
    h = torch.randn(N, C).bfloat16()
    w = (torch.randn(V, C) * 0.3).bfloat16()
    targets = torch.randint(0, vocab, (N,))

    def run():
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = lm_loss(hh.view(7, 100, C), ww, targets.view(7, 100), vocab)
        loss.backward()
        per_row = lm_loss(hh.detach().view(7, 100, C), ww.detach(), targets.view(7, 100), vocab, reduction="none")
        return loss, per_row, hh.grad, ww.grad

    import gpt2.train.loss

    old = gpt2.train.loss.CHUNK_ELEMENTS
    gpt2.train.loss.CHUNK_ELEMENTS = 128 * V
    try:
        with_kernel = run()
        no_kernels()
        without = run()
    finally:
        gpt2.train.loss.CHUNK_ELEMENTS = old
    torch.testing.assert_close(with_kernel[0], without[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(with_kernel[1], without[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(with_kernel[2:], without[2:]):
        torch.testing.assert_close(a.float(), b.float(), rtol=0.02, atol=1e-4)


@pytest.mark.parametrize("fused", [True, False], ids=["softmax-kernel", "pytorch-softmax"])
@pytest.mark.parametrize("T, size, chunk", [(2, 1, None), (17, 1, None), (160, 1, None), (160, 3, 2 * 160 * 160), (64, 3, 4 * 64 * 64), (256, 3, None)])
def test_recomputing_attention_backward_against_float64(T, size, chunk, fused, monkeypatch):
    """`size` scales q and k: at 3, scores reach ~50, where rounding them to bfloat16 before the softmax would
    show; `chunk` splits the 6 heads into chunks of 2 or 4 (a remainder of 2). `fused`: the softmax and its
    gradient by the kernel or by PyTorch's ops (where the extension is missing)."""
    if chunk:
        monkeypatch.setattr(kernels, "ATTENTION_CHUNK", chunk)
    if not fused:
        monkeypatch.setattr(kernels, "available", lambda: False)
    torch.manual_seed(3)
    B, H, D = 2, 3, 64
    q, k, v = (torch.randn(B, T, H, D).bfloat16().transpose(1, 2) for _ in range(3))  # as the model has them
    q, k = (q * size).requires_grad_(), (k * size).requires_grad_()
    v.requires_grad_()
    dout = torch.randn(B, H, T, D).bfloat16()
    y = kernels.causal_attention(q, k, v)
    assert "CausalAttention" in type(y.grad_fn).__name__
    y.backward(dout)
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    y64 = F.scaled_dot_product_attention(*ref, is_causal=True)
    y64.backward(dout.double())
    torch.testing.assert_close(y.detach().double(), y64.detach(), rtol=0.02, atol=0.02)
    flash = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    F.scaled_dot_product_attention(*flash, is_causal=True).backward(dout)
    for ours, pytorch, exact in zip((q, k, v), flash, ref):
        our_err = (ours.grad.double() - exact.grad).abs().max().item()
        flash_err = (pytorch.grad.double() - exact.grad).abs().max().item()
        scale = exact.grad.abs().max().item()
        assert our_err < 0.02 * scale and our_err < 1.5 * flash_err + 1e-3 * scale, (our_err, flash_err, scale)


def test_attention_keeps_pytorch_where_its_backward_is_faster_or_the_shapes_differ():
    q = torch.randn(1, 2, kernels.ATTENTION_MAX_T + 1, 64).bfloat16().requires_grad_()
    assert "CausalAttention" not in type(kernels.causal_attention(q, q, q).grad_fn).__name__
    kv = torch.randn(1, 2, 12, 64).bfloat16()
    short = q[:, :, :4]
    got = kernels.causal_attention(short, kv, kv)  # queries shorter than the keys: PyTorch's semantics
    assert "CausalAttention" not in type(got.grad_fn).__name__
    assert torch.equal(got, F.scaled_dot_product_attention(short, kv, kv, is_causal=True))
    with torch.no_grad():  # inference: the PyTorch call, no graph
        assert kernels.causal_attention(q[:, :, :8], q[:, :, :8], q[:, :, :8]).grad_fn is None
    f = torch.randn(1, 2, 8, 64, requires_grad=True)  # float32
    assert "CausalAttention" not in type(kernels.causal_attention(f, f, f).grad_fn).__name__


def test_a_bfloat16_training_step_with_the_kernels_matches_pytorch_ops(no_kernels, monkeypatch):
    """The whole model (GELU, attention backward and the loss kernel) against the same step on PyTorch's ops."""
    import gpt2.model

    torch.manual_seed(4)
    config = GPTConfig(block_size=64, vocab_size=500, n_layer=2, n_head=2, n_embd=64)
    lm = LMLoss(GPT(config))
    x = torch.randint(0, 500, (3, 64))
    y = torch.randint(0, 500, (3, 64))

    def step():
        lm.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = lm(x, y)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in lm.parameters()])

    loss_k, grad_k = step()
    no_kernels()
    monkeypatch.setattr(gpt2.model, "causal_attention", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    loss_p, grad_p = step()
    assert abs(loss_k - loss_p) < 1e-3 * loss_p
    cosine = F.cosine_similarity(grad_k, grad_p, dim=0).item()
    assert cosine > 0.999, cosine
    assert (grad_k - grad_p).norm() < 0.03 * grad_p.norm()


_STEPS_SCRIPT = """
import resource, statistics, sys, torch
from gpt2 import kernels
from gpt2.model import GPT, GPTConfig
from gpt2.train.loss import LMLoss
from gpt2.train.optim import clip_in_optimizer
retained = sys.argv[1] == "retain" and kernels.retain_freed_memory()
torch.manual_seed(0)
model = LMLoss(GPT(GPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=64, pad_vocab_to=64)))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
x = torch.randint(0, 50257, (4, 129))  # 512 rows of logits: a 51 MB gradient, past glibc's largest mmap threshold
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
faults, sizes = [], []
for i in range(10):
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    clip_in_optimizer(opt, model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    sizes.append(rss())
torch.empty(50_000_000).fill_(1)  # work of another shape, freed
before = rss()
kernels.trim_freed_memory()
print(retained, statistics.median(faults[3:]), max(sizes[3:]) - min(sizes[3:]), before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_retain_freed_memory_reuses_a_steps_buffers_trim_gives_them_back_and_the_environment_turns_it_off():
    runs = {}
    for mode, env in (("glibc", {}), ("retain", {}), ("retain", {"GPT2_KEEP_FREED_MEMORY": "0"})):
        out = subprocess.run([sys.executable, "-c", _STEPS_SCRIPT, mode], check=True, capture_output=True, text=True, env=os.environ | env)
        retained, faults, growth, trimmed = out.stdout.split()
        runs[mode if not env else "switched off"] = retained == "True", float(faults), int(growth), int(trimmed)
    fresh_gradient_pages = 512 * 50304 * 2 / 4096
    assert runs["glibc"][1] > fresh_gradient_pages  # glibc hands large blocks back: each step faults them in again
    assert not runs["switched off"][0] and runs["switched off"][1] > fresh_gradient_pages
    retained, faults, growth, trimmed = runs["retain"]
    assert retained and faults < 0.02 * runs["glibc"][1]  # the same blocks are reused, step after step
    assert growth < fresh_gradient_pages * 4096  # the heap may settle once, but does not grow a block each step
    assert trimmed > 150e6  # trimming returns what was freed (the 200 MB buffer at least)
