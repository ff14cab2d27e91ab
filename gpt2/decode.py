"""How one decode step is computed: the plain forward pass, or faster CPU paths (GPT-2 paper section 3's
sampling, made fast; see docs/model.md, "How generation is made fast").

A decode step feeds one new token per row through the model and needs the
logits of that position only. `Backend` runs `GPT.forward`. `CPUBackend`
runs the same step with the matrix products a CPU does fastest for a few rows:

- float32: MKL's packed sgemm, with each weight prepacked once for the batch size;
- bfloat16 / float16: oneDNN with the weight prepacked into its blocked layout; for
  a single row, whichever of that and PyTorch's own matrix-vector kernel (`addmv`)
  is faster here, timed once (both give bit-identical results, checked before
  choosing, so the choice never changes an output);
- one bfloat16 row on an x86 CPU with AVX512-BF16 (gpt2/_gemv.c compiled): the
  whole step as one call into that extension (`OneRowStep`).

Prepacking is what torch.compile's "freezing" does for CPU inference, without
the compile time. A backend keeps the packed copies (as large as the weights)
for the next call while the model's weights are unchanged. It changes nothing
outside itself: no module's `forward` is replaced and no process-wide setting
(such as torch's thread count) is touched, so generations on several threads
can share a model. The thread count of the C kernel is the backend's own,
chosen once by whoever makes it (default: torch's thread count).

Results equal the plain path up to float rounding (bit-identical for oneDNN's
and addmv's 16-bit kernels; the AVX512-BF16 one rounds as they do but may sum
in another order). Anywhere else (a GPU, a build without MKL / oneDNN, 16-bit
weights on a CPU whose oneDNN has no 16-bit kernels, such as an AVX2-only one)
`CPUBackend` takes the plain path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.kernels import available as gemv_supported
from gpt2.kernels import gelu_tanh
from gpt2.model import GPT, KVCache, SlotCache, attention_inputs

log = logging.getLogger(__name__)

Cache = KVCache | SlotCache


class Backend:
    """A decode step as `GPT.forward` computes it (any device)."""

    name = "plain"

    def step(
        self, model: GPT, tokens: torch.Tensor, cache: Cache, attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, vocab_size) of the position after `tokens` (B, 1), which continue `cache`."""
        return model(tokens, cache=cache, attention_mask=attention_mask, positions=positions, last_only=True)[0][:, -1]

    def kernel(self, model: GPT, batch: int) -> str:
        """The matrix-product kernel a decode step of `batch` rows uses (for logs and tests)."""
        return "plain"


class CPUBackend(Backend):
    """Decode steps with weights prepacked for the batch size, and one bfloat16 row in C (see the module's docstring).

    `threads`: the C kernel's threads (None: torch's thread count when a step runs). Packed weights are
    kept for the `keep` batch sizes used last (each set as large as the weights).
    """

    name = "cpu"

    def __init__(self, threads: int | None = None, keep: int = 2):
        self.threads = threads
        self.keep = keep
        self._packed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (key, {batch: _PackedWeights})
        self._one_row: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (key, OneRowStep)
        self._lock = threading.Lock()

    def kernel(self, model: GPT, batch: int) -> str:
        return self._weights(model, batch).kernel

    def step(self, model, tokens, cache, attention_mask=None, positions=None):
        weight = model.lm_head.weight
        # the prepacked kernels bypass autocast: under autocast the plain modules run (in its dtype)
        if weight.device.type != "cpu" or torch.is_autocast_enabled("cpu") or (model.training and model.config.dropout > 0):
            return super().step(model, tokens, cache, attention_mask, positions)
        packed = self._weights(model, tokens.shape[0])
        if packed.kernel == "plain":
            return super().step(model, tokens, cache, attention_mask, positions)
        if packed.kernel == "bf16-gemv" and attention_mask is None and isinstance(cache, KVCache) and OneRowStep.usable(model, cache):
            return self._one_row_step(model)(int(tokens[0, 0]), cache, self._threads())
        return _written_step(model, packed.forwards, tokens, cache, attention_mask, positions)

    def _threads(self) -> int:
        return self.threads if self.threads is not None else torch.get_num_threads()

    def _weights(self, model: GPT, batch: int) -> _PackedWeights:
        linears = _linears(model)
        # any change of a weight (an optimizer step, load_state_dict, .to(), .data = ...) changes this key
        key = (model.lm_head.weight.dtype, tuple((id(m.weight), m.weight.data_ptr(), m.weight._version) for m in linears))
        with self._lock:
            entry = self._packed.get(model)
            if entry is None or entry[0] != key:
                self._packed.pop(model, None)  # the old copies go before new ones are made
                entry = self._packed[model] = (key, OrderedDict())
            per_batch = entry[1]
            if batch in per_batch:
                per_batch.move_to_end(batch)
            else:
                while len(per_batch) >= self.keep:
                    per_batch.popitem(last=False)
                per_batch[batch] = _PackedWeights(model, linears, batch, self._threads())
            return per_batch[batch]

    def _one_row_step(self, model: GPT) -> OneRowStep:
        key = tuple((id(p), p.data_ptr(), p._version) for p in model.parameters())
        with self._lock:
            cached = self._one_row.get(model)
            if cached is None or cached[0] != key:
                cached = self._one_row[model] = (key, OneRowStep(model))
            return cached[1]


def default_backend(model: GPT, fast: bool = True) -> Backend:
    """The backend `generate` uses when given none: one CPUBackend per process for CPU models (so packed
    weights are kept between calls), the plain one elsewhere or with `fast=False`."""
    global _default_cpu
    if not fast or model.lm_head.weight.device.type != "cpu":
        return _PLAIN
    if _default_cpu is None:
        _default_cpu = CPUBackend()
    return _default_cpu


_PLAIN = Backend()
_default_cpu: CPUBackend | None = None


# ----------------------------------------------------------------------------
# the step written out around chosen matrix products


def _linears(model: GPT) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _written_step(model: GPT, linear: dict[nn.Linear, Callable], tokens, cache, attention_mask, positions) -> torch.Tensor:
    """GPT.forward for new tokens (B, T) with the last position's logits, each nn.Linear's product taken
    from `linear` (same operations and roundings as the modules of gpt2/model.py, tested against them)."""
    cfg = model.config
    t = model.transformer
    B, T = tokens.shape
    positions, mask = attention_inputs(tokens, cache, attention_mask, positions)
    x = t.wte(tokens) + t.wpe(positions)
    C, nh = cfg.n_embd, cfg.n_head
    for i, block in enumerate(t.h):
        attn, mlp = block.attn, block.mlp
        h = block.ln_1(x) if block.pre_norm else x
        q, k, v = linear[attn.c_attn](h).split(C, dim=2)
        q, k, v = (z.view(B, T, nh, C // nh).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        k, v = cache.update(i, k, v)  # (B, nh, L + T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1)
        y = linear[attn.c_proj](y.transpose(1, 2).contiguous().view(B, T, C))
        if block.pre_norm:  # GPT-2
            x = x + y
            x = x + linear[mlp.c_proj](gelu_tanh(linear[mlp.c_fc](block.ln_2(x))))
        else:  # GPT-1
            x = block.ln_1(x + y)
            x = block.ln_2(x + linear[mlp.c_proj](gelu_tanh(linear[mlp.c_fc](x))))
    cache.advance(T)
    x = t.ln_f(x[:, -1:])
    logits = linear[model.lm_head](x)[:, -1]
    return logits[:, : cfg.vocab_size]


class _PackedWeights:
    """Every nn.Linear's product for `batch` rows with the kernel measured fastest for it here (`kernel`
    names it; "plain" where this build or CPU has none)."""

    def __init__(self, model: GPT, linears: list[nn.Linear], batch: int, threads: int):
        self.batch = batch
        self.forwards: dict[nn.Linear, Callable] = {}
        self.kernel = "plain"
        if model.lm_head.weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return
        try:
            with torch.no_grad():
                self._prepare(linears, threads)
        except (RuntimeError, AttributeError) as e:  # a build without these kernels: stay on the plain path
            log.debug("no prepacked weights (%s); using the plain matmuls", e)
            self.forwards, self.kernel = {}, "plain"
            return
        log.debug("decode matmuls for batch %d, %s: %s", batch, model.lm_head.weight.dtype, self.kernel)

    def _prepare(self, linears: list[nn.Linear], threads: int) -> None:
        M = self.batch
        params = [(m.weight.detach(), None if m.bias is None else m.bias.detach()) for m in linears]
        if params[0][0].dtype == torch.float32:
            self.kernel = "mkl-packed"
            self.forwards = {m: _mkl_packed(w, b, M) for m, (w, b) in zip(linears, params)}
            return
        if M == 1 and params[0][0].dtype == torch.bfloat16 and gemv_supported():
            self.kernel = "bf16-gemv"
            self.forwards = {m: _bf16_gemv(w, b, threads) for m, (w, b) in zip(linears, params)}
            return
        self.kernel = "onednn-packed"
        self.forwards = {m: _onednn_packed(w, b, M) for m, (w, b) in zip(linears, params)}
        if M == 1 and self._addmv_is_faster(params):
            self.kernel = "addmv"
            self.forwards = {m: _addmv(w, b) for m, (w, b) in zip(linears, params)}

    def _addmv_is_faster(self, params) -> bool:
        """Time one pass over all weights with each single-row kernel (interleaved, best of 3)."""
        packed = list(self.forwards.values())
        plain = [_addmv(w, b) for w, b in params]
        probes = {n: torch.randn(1, n, dtype=params[0][0].dtype, generator=torch.Generator().manual_seed(0))
                  for n in {w.shape[1] for w, _ in params}}
        xs = [probes[w.shape[1]] for w, _ in params]
        if not all(torch.equal(f(x), g(x)) for f, g, x in zip(packed, plain, xs)):
            return False  # not bit-identical on this build: keep one kernel, so that outputs never depend on timing
        best = {"packed": math.inf, "addmv": math.inf}
        for _ in range(3):
            for name, fns in (("packed", packed), ("addmv", plain)):
                t = time.perf_counter()
                for f, x in zip(fns, xs):
                    f(x)
                best[name] = min(best[name], time.perf_counter() - t)
        return best["addmv"] < best["packed"]


def _mkl_packed(weight: torch.Tensor, bias: torch.Tensor | None, M: int) -> Callable:
    packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, M)
    # for a row count other than M the op falls back to the plain matmul with `weight`
    return lambda x: torch.ops.mkl._mkl_linear(x, packed, weight, bias, M)


def _onednn_packed(weight: torch.Tensor, bias: torch.Tensor | None, M: int) -> Callable:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, M)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-1] != M:  # another row count (a prompt): the plain product
            return F.linear(x, weight, bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


def _addmv(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.shape[-1]:  # more than one row (a prompt): the plain path
            return F.linear(x, weight, bias)
        row = x.reshape(-1)
        y = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
        return y.view(*x.shape[:-1], -1)

    return forward


class Gemv:
    """y = W x + b for one bfloat16 row, with the AVX512-BF16 kernel of gpt2/_gemv.c on `threads` threads."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, threads: int):
        from gpt2 import _gemv

        self.run = _gemv.gemv
        self.threads = threads
        self.weight = weight.contiguous()
        self.bias = None if bias is None else bias.contiguous()
        self.N, self.K = self.weight.shape
        self.w = self.weight.data_ptr()  # valid while self.weight lives
        self.b = 0 if self.bias is None else self.bias.data_ptr()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(self.N, dtype=torch.bfloat16)
        self.run(y.data_ptr(), self.w, x.data_ptr(), self.b, self.N, self.K, self.threads)
        return y


def _bf16_gemv(weight: torch.Tensor, bias: torch.Tensor | None, threads: int) -> Callable:
    gemv = Gemv(weight, bias, threads)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.numel() != gemv.K or x.dtype != torch.bfloat16:  # a prompt (several rows): the plain path
            return F.linear(x, gemv.weight, gemv.bias)
        return gemv(x.contiguous()).view(*x.shape[:-1], gemv.N)

    return forward


class OneRowStep:
    """GPT.forward for one new token of one sequence, in bfloat16, as a single call into gpt2/_gemv.c.

    On a CPU a decode step of GPT-2 124M reads its weights in ~15 ms, and the ~30 small PyTorch operations
    per block of the general forward (LayerNorm, SDPA over the cache, views, copies into the cache, GELU,
    module calls) cost several ms more. Here the whole step runs in C: LayerNorm, the projections (keys and
    values written straight into the cache, residual additions in the projections' output loop), one query
    row's attention over the cache, GELU, the final LayerNorm and the logits. Every value is rounded to
    bfloat16 where GPT.forward rounds it, so the logits follow GPT.forward's to bfloat16 rounding (tested).
    Pre-LayerNorm models (GPT-2) with biases and head sizes a multiple of 32, one row; `usable` says when.
    """

    def __init__(self, model: GPT):
        from gpt2 import _gemv

        self.run = _gemv.step
        cfg = model.config
        self.V, self.padded_V, self.eps = cfg.vocab_size, cfg.padded_vocab_size, cfg.layer_norm_epsilon
        self.keep: list[torch.Tensor] = []  # the tensors whose addresses the table holds

        def address(p: torch.Tensor) -> int:
            p = p.detach().contiguous()
            self.keep.append(p)
            return p.data_ptr()

        t = model.transformer
        table = [cfg.n_embd, cfg.n_head, cfg.n_layer, self.padded_V,
                 address(t.wte.weight), address(t.wpe.weight), address(t.ln_f.weight), address(t.ln_f.bias)]
        for b in t.h:  # the order of the block fields in gpt2/_gemv.c
            for m in (b.ln_1, b.attn.c_attn, b.attn.c_proj, b.ln_2, b.mlp.c_fc, b.mlp.c_proj):
                table += [address(m.weight), address(m.bias)]
        self.table = torch.tensor(table, dtype=torch.int64)

    @staticmethod
    def usable(model: GPT, cache: KVCache) -> bool:
        cfg = model.config
        return (
            cfg.norm == "pre" and cfg.bias and (not model.training or cfg.dropout == 0)
            and (cfg.n_embd // cfg.n_head) % 32 == 0
            and cache.k.dtype == torch.bfloat16 and cache.k.is_contiguous() and cache.k.shape[1] == 1
            and all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
        )

    def __call__(self, token: int, cache: KVCache, threads: int = 1) -> torch.Tensor:
        """Logits (1, vocab_size) of the token after `token`, which takes position cache.length."""
        L = cache.length
        logits = torch.empty(self.padded_V, dtype=torch.bfloat16)
        self.run(self.table.data_ptr(), token, L, cache.k.data_ptr(), cache.v.data_ptr(), cache.max_len,
                 logits.data_ptr(), self.eps, threads)
        cache.advance(1)
        return logits[: self.V].view(1, self.V)
