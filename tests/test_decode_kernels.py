"""The single-row bfloat16 decode path of a CPU with AVX512-BF16 (gpt2/_gemv.c and gpt2.decode.OneRowStep):
the matrix-vector kernel against a float64 recomputation rounded the way PyTorch rounds, the attention kernel
against PyTorch's SDPA in float32, the written-out decode step against GPT.forward, and the thread pool under
fork and concurrent callers."""

from __future__ import annotations

import math
import multiprocessing
import threading

import pytest
import torch
import torch.nn.functional as F

from gpt2.model import GPT, GPTConfig, KVCache
from gpt2.decode import CPUBackend, OneRowStep, gemv_supported
from gpt2.sample import generate, iter_tokens

pytestmark = pytest.mark.skipif(not gemv_supported(), reason="needs gpt2._gemv compiled and a CPU with AVX512-BF16")

BF16_EPS = 2.0**-8  # half the spacing of bfloat16 numbers, relative


def gemv(W, x, bias=None, add=None, threads=2, out=None, group=0, stride=0):
    from gpt2 import _gemv

    N, K = W.shape
    y = torch.empty(N, dtype=torch.bfloat16) if out is None else out
    _gemv.gemv(y.data_ptr(), W.data_ptr(), x.data_ptr(), 0 if bias is None else bias.data_ptr(), N, K, threads,
               0 if add is None else add.data_ptr(), group, stride)
    return y


def expected(W, x, bias=None, add=None):
    """float64 products, then PyTorch's roundings: bf16(W x + bias), then bf16(that + add)."""
    y = W.double() @ x.double()
    if bias is not None:
        y = y + bias.double()
    y = y.to(torch.bfloat16)
    if add is not None:
        y = (y.float() + add.float()).to(torch.bfloat16)
    return y


@pytest.mark.parametrize("N, K", [(1, 32), (5, 7), (37, 100), (768, 768), (3072, 768), (768, 3072), (1003, 65)])
@pytest.mark.parametrize("with_bias, with_add", [(False, False), (True, False), (True, True)])
def test_gemv_rounds_like_pytorch(N, K, with_bias, with_add):
    g = torch.Generator().manual_seed(N * K)
    W = torch.randn(N, K, generator=g).to(torch.bfloat16)
    x = torch.randn(K, generator=g).to(torch.bfloat16)
    bias = torch.randn(N, generator=g).to(torch.bfloat16) if with_bias else None
    add = torch.randn(N, generator=g).to(torch.bfloat16) if with_add else None
    ref = expected(W, x, bias, add)
    one, two = gemv(W, x, bias, add, threads=1), gemv(W, x, bias, add, threads=2)
    assert torch.equal(one, two)  # each row is summed by one thread in one order
    # float32 accumulation in another order than float64's moves a result by at most one bfloat16 step
    torch.testing.assert_close(one.float(), ref.float(), rtol=2 * BF16_EPS, atol=1e-6 * math.sqrt(K))
    assert (one == ref).float().mean() > 0.9


def test_gemv_writes_rows_in_groups_with_a_stride():
    # the keys of 12 heads of 64 go to position 5 of a (heads, 40, 64) cache, nothing else is touched
    W = torch.randn(768, 768).to(torch.bfloat16)
    x, bias = torch.randn(768).to(torch.bfloat16), torch.randn(768).to(torch.bfloat16)
    cache = torch.full((12, 40, 64), 7.0, dtype=torch.bfloat16)
    gemv(W, x, bias, out=cache[:, 5], group=64, stride=40 * 64)  # out=: only its data pointer is used
    assert torch.equal(cache[:, 5].reshape(-1), gemv(W, x, bias))
    rest = torch.cat([cache[:, :5], cache[:, 6:]], dim=1)
    assert (rest == 7.0).all()


def test_gemv_gives_the_same_result_to_concurrent_callers():
    W = torch.randn(2304, 768).to(torch.bfloat16)
    xs = [torch.randn(768).to(torch.bfloat16) for _ in range(8)]
    refs = [gemv(W, x) for x in xs]
    errors = []

    def work(offset):
        for i in range(40):
            j = (i + offset) % len(xs)
            if not torch.equal(gemv(W, xs[j]), refs[j]):
                errors.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)


def _child(W, x, queue):
    # only the kernel runs here: PyTorch's own OpenMP threads do not survive a fork either
    queue.put(gemv(W, x, threads=2).tolist())


def test_gemv_thread_pool_works_in_a_forked_child():
    W, x = torch.randn(1024, 768).to(torch.bfloat16), torch.randn(768).to(torch.bfloat16)
    ref = gemv(W, x, threads=2)  # the pool is started in this process before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(W, x, queue))
    child.start()
    child.join(timeout=60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert queue.get(timeout=5) == ref.tolist()


@pytest.mark.parametrize("heads, head_dim, positions, length", [
    (12, 64, 1, 300), (12, 64, 17, 300), (12, 64, 300, 300), (2, 32, 2100, 2200), (25, 64, 1024, 1024),
])
def test_attend_matches_sdpa(heads, head_dim, positions, length):
    from gpt2 import _gemv

    g = torch.Generator().manual_seed(positions)
    keys = (2 * torch.randn(heads, length, head_dim, generator=g)).to(torch.bfloat16)
    values = torch.randn(heads, length, head_dim, generator=g).to(torch.bfloat16)
    q = torch.randn(heads * head_dim, generator=g).to(torch.bfloat16)
    y = torch.empty(heads * head_dim, dtype=torch.bfloat16)
    scale = 1 / math.sqrt(head_dim)
    _gemv.attend(y.data_ptr(), q.data_ptr(), keys.data_ptr(), values.data_ptr(), heads, head_dim, positions,
                 length * head_dim, scale, 2)
    ref = F.scaled_dot_product_attention(
        q.view(1, heads, 1, head_dim).float(), keys[None, :, :positions].float(), values[None, :, :positions].float()
    ).reshape(-1)
    # float32 inside, one rounding to bfloat16 at the end
    torch.testing.assert_close(y.float(), ref, rtol=BF16_EPS * 1.01, atol=1e-5)


def test_attend_rejects_a_head_size_it_cannot_run():
    from gpt2 import _gemv

    t = torch.zeros(64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 32"):
        _gemv.attend(t.data_ptr(), t.data_ptr(), t.data_ptr(), t.data_ptr(), 4, 16, 1, 16, 0.25, 1)


def tiny_bf16(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(n_layer=3, n_head=2, n_embd=64, vocab_size=300, block_size=96) | overrides
    model = GPT(GPTConfig(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)  # a residual stream well above bfloat16's rounding
    return model.to(torch.bfloat16)


@pytest.mark.parametrize("shape", [dict(), dict(n_embd=128, n_head=2, pad_vocab_to=64)])  # head size 32; 64, padding
def test_one_row_step_follows_the_model_forward(shape):
    model = tiny_bf16(**shape)
    prompt = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.inference_mode():
        plain, fast = (KVCache(model.config, 1, 40, dtype=torch.bfloat16) for _ in range(2))
        logits = model(prompt, cache=plain)[0][:, -1]
        model(prompt, cache=fast)
        step = OneRowStep(model)
        assert OneRowStep.usable(model, fast)
        token = int(logits.argmax())
        for _ in range(30):
            ref = model(torch.tensor([[token]]), cache=plain, last_only=True)[0][:, -1]
            out = step(token, fast, 2)
            assert out.shape == ref.shape == (1, 300) and fast.length == plain.length
            torch.testing.assert_close(out.float(), ref.float(), rtol=0.03, atol=0.03 * ref.float().abs().max().item())
            assert int(out.argmax()) == int(ref.argmax())
            token = int(ref.argmax())
        n = plain.length
        for ours, theirs in ((fast.k, plain.k), (fast.v, plain.v)):
            theirs = theirs[:, :, :, :n].float()
            torch.testing.assert_close(ours[:, :, :, :n].float(), theirs, rtol=0.03, atol=0.03 * theirs.abs().max().item())


def test_one_row_step_rejects_a_token_or_position_outside_the_model():
    model = tiny_bf16()
    cache = KVCache(model.config, 1, 8, dtype=torch.bfloat16)
    step = OneRowStep(model)
    with pytest.raises(ValueError, match="token < vocabulary"):
        step(300, cache)
    cache.length = 8  # full
    with pytest.raises(ValueError, match="position < cache"):
        step(1, cache)


def test_one_row_step_is_used_only_where_it_applies():
    cache = KVCache(GPTConfig(n_layer=1, n_head=2, n_embd=64), 1, 8, dtype=torch.bfloat16)
    assert OneRowStep.usable(tiny_bf16(), cache)
    assert not OneRowStep.usable(tiny_bf16(norm="post"), cache)  # GPT-1: LayerNorm after each sub-block
    assert not OneRowStep.usable(tiny_bf16(n_head=4), cache)  # head size 16
    assert not OneRowStep.usable(tiny_bf16(bias=False), cache)
    mixed = tiny_bf16()
    mixed.transformer.ln_f.float()  # one module left in float32
    assert not OneRowStep.usable(mixed, cache)
    two_rows = KVCache(GPTConfig(n_layer=1, n_head=2, n_embd=64), 2, 8, dtype=torch.bfloat16)
    assert not OneRowStep.usable(tiny_bf16(), two_rows)


def test_bf16_single_row_generation_equals_the_plain_path_and_leaves_threads_alone():
    model = tiny_bf16(seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        backend = CPUBackend(threads=2)
        assert backend.kernel(model, 1) == "bf16-gemv"
        prompts = [[1, 2, 3], [7]]
        for p in prompts:
            fast = generate(model, [p], 40, temperature=0, backend=backend)
            assert fast == generate(model, [p], 40, temperature=0, fast=False)
        # no process-wide setting changes while a generation is open
        tokens = iter_tokens(model, [[1, 2, 3]], 40, temperature=0, backend=backend)
        next(tokens), next(tokens)
        assert torch.get_num_threads() == 2
        tokens.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
