"""Text generation with a KV cache: greedy, temperature, top-k and top-p sampling (GPT-2 paper, section 3 and Appendix).

The paper's samples use top-k with k = 40 (its summaries k = 2, and greedy
decoding for its question answering); top-p is Holtzman et al. (2019),
"The Curious Case of Neural Text Degeneration".

`generate` takes a batch of prompts of any lengths (left-padded into one batch,
with an attention mask and per-row positions), fills one preallocated cache
per context window with a single forward pass over the prompts (a beginning
that several prompts share runs once: `shared_prefixes`), then feeds one
token per step and computes logits for that position only. Sampling is a pure
function of the logits and an explicit `torch.Generator`, so a seed reproduces
a run. A sequence ends at a stop id (e.g. <|endoftext|>, not returned) or a stop
string (cut off, with anything after it).

Context: the model sees at most `block_size` tokens. A window starts from the
last `block_size - min(tokens still to generate, block_size // 2)` tokens of
each sequence (so a long prompt is cut from the left, keeping room for what is
generated); when the window is full, the cache is rebuilt the same way from
the most recent tokens and generation goes on.

On a CPU the decode steps multiply with weights prepacked for the batch size
(`_PackedLinears`; `fast=False` turns this and prefix sharing off), and a single bfloat16 row on a
CPU with AVX512-BF16 runs a written-out step on the kernels of gpt2/_gemv.c
(`_OneRowStep`): see docs/model.md, "How generation is made fast", and
bench/bench_generate.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import sys
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence

import torch
import torch.nn as nn

from gpt2.errors import GPT2Error
from gpt2.model import GPT, KVCache

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# choosing the next token


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """Raise GPT2Error for sampling settings that mean nothing."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise GPT2Error(f"temperature must be a number >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise GPT2Error(f"top_k must be an integer >= 1 (or unset for no limit), got {top_k}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise GPT2Error(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def candidates(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sampling distribution for logits (B, V): probabilities (B, n) over candidate ids (B, n).

    Logits are divided by `temperature`; only the `top_k` most likely tokens stay
    candidates, then only the smallest set of most likely tokens whose probability
    reaches `top_p`. The ids are None when every token is a candidate (n = V).
    Working on the k candidates rather than the whole vocabulary keeps top-k
    sampling cheap (a softmax over 40 numbers instead of 50,257).
    """
    logits = logits.float() / temperature
    ids = None
    if top_k is not None and top_k < logits.shape[-1]:
        logits, ids = torch.topk(logits, top_k, dim=-1)  # sorted, most likely first
    elif top_p is not None and top_p < 1.0:
        logits, ids = torch.sort(logits, dim=-1, descending=True)
    if top_p is not None and top_p < 1.0:
        probs = logits.softmax(dim=-1)
        # drop a token when the tokens before it already reach top_p (the most likely one always stays)
        logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, -math.inf)
    return logits.softmax(dim=-1), ids


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """The next token (B,) for logits (B, V): argmax when temperature is 0, else a draw from `generator`,
    or with one generator per row, row i's draw from generator[i] (then a row's tokens do not depend
    on the other rows of its batch)."""
    if temperature == 0:
        if logits.device.type == "cpu":
            # PyTorch's CPU argmax over a 50,257-wide row takes ~0.3 ms, NumPy's vectorised one ~0.02 ms
            # (both return the first of equal maxima)
            x = logits.detach()
            return torch.from_numpy((x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy().argmax(-1))
        return logits.argmax(dim=-1)
    probs, ids = candidates(logits, temperature, top_k, top_p)
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for {probs.shape[0]} rows; give one per row")
        choice = torch.cat([torch.multinomial(p[None].to(g.device), 1, generator=g).to(logits.device) for p, g in zip(probs, generator)])
        return (choice if ids is None else ids.gather(-1, choice)).squeeze(-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)  # draw where the generator lives, so a seed means the same everywhere
    choice = torch.multinomial(probs, 1, generator=generator).to(logits.device)  # (B, 1)
    return (choice if ids is None else ids.gather(-1, choice)).squeeze(-1)


# ----------------------------------------------------------------------------
# the decoding loop


class _PackedLinears:
    """While active, every nn.Linear of the model multiplies the decode step's few rows with the kernel
    measured fastest for them on a CPU, instead of PyTorch's general matmul path:

    - float32: MKL's packed sgemm, with the weight prepacked once for the batch size;
    - bfloat16, one row, x86 CPU with AVX512-BF16 and gpt2._gemv compiled: that kernel (`_Gemv`);
    - bfloat16 / float16 otherwise: oneDNN with the weight prepacked into its blocked layout; for a single
      row, whichever of that and PyTorch's own matrix-vector kernel (`addmv`) is faster here, timed once
      (both give bit-identical results, checked before choosing, so the choice never changes an output).

    Prepacking is what torch.compile's "freezing" does for CPU inference, without the compile time.
    The packed copies (as large as the weights) are kept with the model for the next call while its
    weights are unchanged. Results equal the plain path up to float rounding (bit-identical for oneDNN's
    and addmv's 16-bit kernels; the AVX512-BF16 one rounds as they do but may sum in another order). Anywhere else (a GPU, a build without MKL / oneDNN, 16-bit weights on a
    CPU whose oneDNN has no 16-bit kernels, such as an AVX2-only one) it does nothing.
    """

    _cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (key, forwards, kernel)

    def __init__(self, model: GPT, batch: int):
        self.model, self.batch = model, batch
        self.forwards: dict[nn.Linear, Callable] = {}
        self.kernel = "plain"
        weight = model.lm_head.weight
        if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        # any change of a weight (an optimizer step, load_state_dict, .to(), .data = ...) changes this key
        key = (batch, weight.dtype, tuple((id(m.weight), m.weight.data_ptr(), m.weight._version) for m in linears))
        cached = _PackedLinears._cache.get(model)
        if cached is not None and cached[0] == key:
            _, self.forwards, self.kernel = cached
            return
        _PackedLinears._cache.pop(model, None)  # free the old copies before making new ones
        try:
            with torch.no_grad():
                self._prepare(linears)
        except (RuntimeError, AttributeError) as e:  # a build without these kernels: stay on the plain path
            log.debug("no prepacked weights (%s); using the plain matmuls", e)
            self.forwards, self.kernel = {}, "plain"
            return
        log.debug("decode matmuls for batch %d, %s: %s", batch, weight.dtype, self.kernel)
        _PackedLinears._cache[model] = (key, self.forwards, self.kernel)

    def _prepare(self, linears: list[nn.Linear]) -> None:
        M = self.batch
        params = [(m.weight.detach(), None if m.bias is None else m.bias.detach()) for m in linears]
        if params[0][0].dtype == torch.float32:
            self.kernel = "mkl-packed"
            self.forwards = {m: _mkl_packed(w, b, M) for m, (w, b) in zip(linears, params)}
            return
        if M == 1 and params[0][0].dtype == torch.bfloat16 and _gemv_supported():
            self.kernel = "bf16-gemv"
            self.forwards = {m: _bf16_gemv(w, b) for m, (w, b) in zip(linears, params)}
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

    def __enter__(self) -> _PackedLinears:
        for module, forward in self.forwards.items():
            module.forward = forward  # an instance attribute shadows the class's forward
        return self

    def __exit__(self, *exc) -> None:
        for module in self.forwards:
            module.__dict__.pop("forward", None)


def _mkl_packed(weight: torch.Tensor, bias: torch.Tensor | None, M: int) -> Callable:
    packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, M)
    # for a row count other than M the op falls back to the plain matmul with `weight`
    return lambda x: torch.ops.mkl._mkl_linear(x, packed, weight, bias, M)


def _onednn_packed(weight: torch.Tensor, bias: torch.Tensor | None, M: int) -> Callable:
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, M)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _gemv_supported() -> bool:
    try:
        from gpt2 import _gemv
    except ImportError:  # installed without a C compiler
        return False
    return _gemv.supported()


class _Gemv:
    """y = W x + b for one bfloat16 row, with the AVX512-BF16 kernel of gpt2/_gemv.c."""

    threads = 1  # the kernel's threads: PyTorch's thread count when decoding started (_decode)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        from gpt2 import _gemv

        self.run = _gemv.gemv
        self.weight = weight.contiguous()
        self.bias = None if bias is None else bias.contiguous()
        self.N, self.K = self.weight.shape
        self.w = self.weight.data_ptr()  # valid while self.weight lives
        self.b = 0 if self.bias is None else self.bias.data_ptr()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(self.N, dtype=torch.bfloat16)
        self.run(y.data_ptr(), self.w, x.data_ptr(), self.b, self.N, self.K, _Gemv.threads)
        return y


def _bf16_gemv(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable:
    gemv = _Gemv(weight, bias)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.numel() != gemv.K or x.dtype != torch.bfloat16:  # a prompt (several rows): the plain path
            return nn.functional.linear(x, gemv.weight, gemv.bias)
        return gemv(x.contiguous()).view(*x.shape[:-1], gemv.N)

    return forward


class _OneRowStep:
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

    def __call__(self, token: int, cache: KVCache) -> torch.Tensor:
        """Logits (1, vocab_size) of the token after `token`, which takes position cache.length."""
        L = cache.length
        logits = torch.empty(self.padded_V, dtype=torch.bfloat16)
        self.run(self.table.data_ptr(), token, L, cache.k.data_ptr(), cache.v.data_ptr(), cache.max_len,
                 logits.data_ptr(), self.eps, _Gemv.threads)
        cache.length = L + 1
        return logits[: self.V].view(1, self.V)


def _addmv(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.shape[-1]:  # more than one row (a prompt): the plain path
            return nn.functional.linear(x, weight, bias)
        row = x.reshape(-1)
        y = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
        return y.view(*x.shape[:-1], -1)

    return forward


# ----------------------------------------------------------------------------
# prompts that begin alike: their common beginning runs once

# A beginning shared by several prompts of a batch runs once when it is at least this many tokens
# (shorter ones cost less to repeat than to run apart and copy into every row's cache).
SHARE_MIN_PREFIX = 32


def _common_length(a: list[int], b: list[int]) -> int:
    """len of the longest common prefix (slice comparisons in a bisection: C speed on long prompts)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def shared_prefixes(prompts: Sequence[Sequence[int]], min_shared: int | None = None) -> list[tuple[int, list[int]]]:
    """Group prompts by a common beginning: a list of (prefix length, prompt indices), every prompt in one group.

    Prompts are sorted by their tokens, so those that begin alike are neighbours
    (an article before the same article with "TL;DR:" appended, few-shot prompts
    after their shared examples). A prompt joins the group before it while the
    group's common prefix stays at least `min_shared` tokens long and the tokens
    it saves do not shrink (`min_shared` defaults to SHARE_MIN_PREFIX). A prefix
    leaves at least one token of every prompt (whose logits start the generation);
    a group of one has prefix length 0.
    """
    min_shared = SHARE_MIN_PREFIX if min_shared is None else min_shared
    prompts = [list(p) for p in prompts]
    groups: list[tuple[int, list[int]]] = []
    for r in sorted(range(len(prompts)), key=lambda i: prompts[i]):
        if groups:
            m, rows = groups[-1]
            prev = prompts[rows[-1]]
            shared = min(m, _common_length(prev, prompts[r]), len(prompts[r]) - 1)
            # joining: n rows share `shared` tokens; apart: n - 1 rows share m
            if shared >= min_shared and len(rows) * shared >= (len(rows) - 1) * m:
                groups[-1] = (shared, rows + [r])
                continue
        groups.append((len(prompts[r]) - 1, [r]))
    return [(m if len(rows) > 1 else 0, rows) for m, rows in groups]


def _sharing_plan(contexts: list[list[int]], span: int, block_size: int) -> list[tuple[int, list[int]]] | None:
    """The groups of `shared_prefixes` if running each shared prefix once saves at least a quarter of
    the prompt pass, with a cache at most a quarter wider than the plain path's (and within the
    context); else None. A prompt that shares nothing but is longer than the longest rest of the
    others gets a prefix of its own, so that its rest is no longer than theirs."""
    if len(contexts) < 2:
        return None
    groups = shared_prefixes(contexts)
    rests = [len(contexts[r]) - m for m, rows in groups if len(rows) > 1 for r in rows]
    if not rests:
        return None
    groups = [(m if len(rows) > 1 else max(0, len(contexts[rows[0]]) - max(rests)), rows) for m, rows in groups]
    start = [0] * len(contexts)
    for m, rows in groups:
        for r in rows:
            start[r] = m
    heads = [m for m, _ in groups if m > 0]
    width = max(heads)
    tail = max(len(c) - s for c, s in zip(contexts, start))
    longest = max(len(c) for c in contexts)
    plain = len(contexts) * longest
    shared = len(heads) * width + len(contexts) * tail
    cache = width + tail + span - 1
    if cache > block_size or cache > 1.25 * (longest + span - 1) or shared > 0.75 * plain:
        return None
    return groups


def _shared_prompt_pass(
    model: GPT, contexts: list[list[int]], groups: list[tuple[int, list[int]]], span: int
) -> tuple[KVCache, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The prompt pass of `_decode` with every shared prefix run once.

    Each group's prefix runs as one row (right-padded to the longest prefix,
    W: plain causal attention); its keys and values are copied into the cache
    row of every prompt of the group; then the rest of each prompt (left-padded
    to the longest rest, S) runs on top, with a mask that hides the padding and
    position ids that continue each prefix. Cache layout of a row:
    [prefix | padding][padding | rest of the prompt][new tokens], W + S + span - 1
    positions. Returns (cache, next-token logits (B, V), attention mask
    (B, W + S + span), position id of each row's next token (B, 1)); the last
    two are None when no position is padding.
    """
    cfg = model.config
    weight = model.lm_head.weight
    device, dtype = weight.device, weight.dtype
    B = len(contexts)
    start, head_of, heads = [0] * B, [0] * B, []
    for m, rows in groups:
        if m > 0:
            for r in rows:
                start[r], head_of[r] = m, len(heads)
            heads.append(contexts[rows[0]][:m])
    W = max(len(h) for h in heads)
    S = max(len(c) - s for c, s in zip(contexts, start))
    prefix_ids = torch.zeros(len(heads), W, dtype=torch.long)
    for g, h in enumerate(heads):
        prefix_ids[g, : len(h)] = torch.tensor(h)
    head_cache = KVCache(cfg, len(heads), W, device=device, dtype=dtype)
    model(prefix_ids.to(device), cache=head_cache, last_only=True)  # only the keys and values are wanted
    cache = KVCache(cfg, B, W + S + span - 1, device=device, dtype=dtype)
    rows = torch.tensor([r for r in range(B) if start[r] > 0], device=device)
    source = torch.tensor([head_of[r] for r in range(B) if start[r] > 0], device=device)
    cache.k[:, rows, :, :W] = head_cache.k[:, source]
    cache.v[:, rows, :, :W] = head_cache.v[:, source]
    cache.length = W
    del head_cache
    idx = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, W + S + span, dtype=torch.long)
    positions = torch.zeros(B, S, dtype=torch.long)
    for r, (c, s) in enumerate(zip(contexts, start)):
        n = len(c) - s
        idx[r, S - n :] = torch.tensor(c[s:])
        positions[r, S - n :] = torch.arange(s, len(c))
        mask[r, :s] = 1
        mask[r, W + S - n :] = 1
    mask, positions = mask.to(device), positions.to(device)
    logits = model(idx.to(device), cache=cache, attention_mask=mask, positions=positions, last_only=True)[0][:, -1]
    pos = torch.tensor([[len(c)] for c in contexts], device=device)
    if bool(mask.all()):  # no padding anywhere (e.g. one prompt sampled several times): decode without a mask
        return cache, logits, None, None
    return cache, logits, mask, pos


def _decode(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    finished: list[bool],
    fast: bool = True,
) -> Iterator[list[int]]:
    """Yield the next token of every row, step by step, until `max_new_tokens` steps are done or every
    row is marked in `finished` (the caller marks rows there). Each window of the context is one cache."""
    cfg = model.config
    weight = model.lm_head.weight
    device, dtype = weight.device, weight.dtype
    B = len(prompts)
    # the prepacked kernels bypass autocast: under autocast the plain modules run (in its dtype)
    autocast = torch.is_autocast_enabled(device.type)
    packed = _PackedLinears(model, B) if fast and max_new_tokens > 1 and not autocast else None
    history = [list(p) for p in prompts]
    remaining = max_new_tokens
    first = True
    # The single-row bfloat16 kernel runs its own threads, which poll for work between its calls: PyTorch's
    # threads would compete with them for the cores (once woken they poll too), so while such a decode is in
    # progress PyTorch runs on one thread, also in the caller's code between tokens (restored at the end).
    threads = torch.get_num_threads()
    own_threads = packed is not None and packed.kernel == "bf16-gemv"
    _Gemv.threads = threads
    try:
        while remaining > 0 and not all(finished):
            keep = cfg.block_size - min(remaining, cfg.block_size // 2)
            contexts = [h[-keep:] for h in history]
            if first and any(len(h) > keep for h in history):
                longest = max(len(h) for h in history)
                log.warning(
                    "a prompt of %d tokens does not fit the context of %d with %d new tokens: keeping its last %d tokens",
                    longest, cfg.block_size, max_new_tokens, keep,
                )
            elif not first:
                log.debug("context window full: continuing from the last %d tokens", keep)
            first = False
            P = max(len(c) for c in contexts)
            span = min(remaining, cfg.block_size - P)  # tokens this window can produce; >= 1 by the choice of keep
            plan = _sharing_plan(contexts, span, cfg.block_size) if fast else None
            if own_threads:
                torch.set_num_threads(threads)  # the prompt pass: all of them
            if plan is not None:
                with torch.inference_mode():
                    cache, logits, mask, pos = _shared_prompt_pass(model, contexts, plan, span)
            else:
                cache = KVCache(cfg, B, P + span - 1, device=device, dtype=dtype)
                idx = torch.tensor([[0] * (P - len(c)) + c for c in contexts], device=device)  # (B, P), left-padded
                mask = positions = pos = None
                if any(len(c) != P for c in contexts):
                    # padding: a mask over prompt + generated positions, and each row's own position ids
                    lengths = torch.tensor([len(c) for c in contexts], device=device)
                    mask = (torch.arange(P + span, device=device)[None, :] >= (P - lengths)[:, None]).long()  # (B, P + span)
                    positions = (mask[:, :P].cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
                    pos = lengths[:, None]  # (B, 1): the position of the next token of each row
                with torch.inference_mode():  # only around the model: the caller's code runs between steps
                    logits = model(idx, cache=cache, attention_mask=mask, positions=positions, last_only=True)[0][:, -1]
            if own_threads:
                torch.set_num_threads(1)
            step = None
            if own_threads and mask is None and _OneRowStep.usable(model, cache):
                step = _OneRowStep(model)
            for s in range(span):
                tok = pick(logits)  # (B,)
                tokens = tok.tolist()
                for i, t in enumerate(tokens):
                    if not finished[i]:
                        history[i].append(t)
                remaining -= 1
                yield tokens
                if s == span - 1 or all(finished):
                    break
                with torch.inference_mode(), packed or contextlib.nullcontext():
                    if step is not None:
                        logits = step(tokens[0], cache)
                    else:
                        logits = model(tok[:, None], cache=cache, attention_mask=mask, positions=pos, last_only=True)[0][:, -1]
                if pos is not None:
                    pos = pos + 1
    finally:
        if own_threads:
            torch.set_num_threads(threads)


def _prepare(model: GPT, prompts, max_new_tokens: int, vocab_size: int | None) -> list[list[int]]:
    if not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise GPT2Error(f"max_new_tokens must be an integer >= 0, got {max_new_tokens}")
    prompts = [[int(t) for t in p] for p in prompts]
    limit = model.config.vocab_size
    for i, p in enumerate(prompts):
        if not p:
            raise GPT2Error(f"prompt {i} is empty: start it with the <|endoftext|> token for an unconditional sample")
        bad = [t for t in p if not 0 <= t < limit]
        if bad:
            raise GPT2Error(f"prompt {i} has token id {bad[0]}, outside the model's vocabulary (0..{limit - 1}); wrong tokenizer?")
    if vocab_size is not None and not 1 <= vocab_size <= limit:
        raise GPT2Error(f"vocab_size must be in 1..{limit}, got {vocab_size}")
    return prompts


class _StopStrings:
    """Watches each row's text for stop strings (decoding on UTF-8 boundaries)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str], rows: int):
        if stop_strings and tokenizer is None:
            raise GPT2Error("stop strings need the tokenizer (pass tokenizer=...)")
        if any(not s for s in stop_strings):
            raise GPT2Error("a stop string must not be empty")
        self.stops = list(stop_strings)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.decoders = [tokenizer.stream_decoder() for _ in range(rows)] if self.stops else []
        self.tails = [""] * rows

    def hit(self, row: int, token: int) -> bool:
        if not self.stops:
            return False
        piece = self.decoders[row].push(token)
        tail = self.tails[row] + piece
        self.tails[row] = tail[-(self.longest + 8) :]
        return any(s in tail for s in self.stops)


def iter_tokens(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Collection[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    vocab_size: int | None = None,
    fast: bool = True,
    logprobs: list[list[float]] | None = None,
) -> Iterator[list[int | None]]:
    """Like `generate`, but yields after each step the new token of every prompt (None once a prompt has ended),
    for streaming. A stop id is not yielded; the token that completes a stop string is.

    With a list as `logprobs`, each step first appends to it every row's log-probability
    of its new token under the model (natural log, before temperature and truncation)."""
    from gpt2.weights import unwrap

    check_sampling(temperature, top_k, top_p)
    model = unwrap(model)  # decode with the plain module, also for a compiled or DDP-wrapped one
    prompts = _prepare(model, prompts, max_new_tokens, vocab_size)
    if tokenizer is not None and vocab_size is None and tokenizer.n_vocab < model.config.vocab_size:
        vocab_size = tokenizer.n_vocab  # never produce ids the tokenizer cannot decode (a padded vocabulary)
    if not prompts or max_new_tokens == 0:
        return
    stops = _StopStrings(tokenizer, stop_strings, len(prompts))
    stop_ids = {int(t) for t in stop_ids}
    finished = [False] * len(prompts)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        full = logits
        if vocab_size is not None and vocab_size < logits.shape[-1]:
            logits = logits[:, :vocab_size]
        tokens = sample_next(logits, temperature, top_k, top_p, generator)
        if logprobs is not None:
            full = full.float()
            logprobs.append((full.gather(-1, tokens.to(full.device)[:, None]) - full.logsumexp(-1, keepdim=True))[:, 0].tolist())
        return tokens

    was_training = model.training
    model.eval()
    try:
        for tokens in _decode(model, prompts, max_new_tokens, pick, finished, fast):
            out: list[int | None] = []
            for i, t in enumerate(tokens):
                if finished[i]:
                    out.append(None)
                elif t in stop_ids:
                    finished[i] = True
                    out.append(None)
                else:
                    out.append(t)
                    finished[i] = stops.hit(i, t)
            yield out
    finally:
        model.train(was_training)


def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Collection[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    vocab_size: int | None = None,
    fast: bool = True,
    progress: bool | None = False,
    return_logprobs: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens; returns only the new tokens.

    temperature 0 is greedy decoding; otherwise tokens are drawn from the softmax
    of logits / temperature, restricted to the `top_k` most likely tokens and to
    the nucleus of probability `top_p`, with `generator` (a seeded
    torch.Generator makes the result reproducible; a list of one per prompt
    makes each prompt's result independent of the others in the batch). A sequence ends at any of
    `stop_ids` (not included) or once its text contains one of `stop_strings`
    (needs `tokenizer`; the stop string and what follows are cut off, with the
    token that straddles its start). `vocab_size` restricts sampling to ids below it.
    `return_logprobs` also returns, for every new token, its log-probability under
    the model (natural log, before temperature and truncation).
    """
    outputs: list[list[int]] = [[] for _ in prompts]
    scores: list[list[float]] = [[] for _ in prompts]
    trace: list[list[float]] | None = [] if return_logprobs else None
    bar = None
    if progress is not False:
        from tqdm import tqdm

        bar = tqdm(total=max_new_tokens, desc="generating", unit="tok", file=sys.stderr, disable=None if progress is None else False)
    t0 = time.perf_counter()
    try:
        for tokens in iter_tokens(
            model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, stop_ids=stop_ids,
            stop_strings=stop_strings, tokenizer=tokenizer, generator=generator, vocab_size=vocab_size, fast=fast,
            logprobs=trace,
        ):
            for i, t in enumerate(tokens):
                if t is not None:
                    outputs[i].append(t)
                    if trace is not None:
                        scores[i].append(trace[-1][i])
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if stop_strings:
        outputs = [cut_at_stop(tokenizer, out, stop_strings) for out in outputs]
    n = sum(len(o) for o in outputs)
    log.debug("generated %d tokens for %d prompts in %.2f s", n, len(outputs), time.perf_counter() - t0)
    if return_logprobs:
        return outputs, [lp[: len(out)] for lp, out in zip(scores, outputs)]
    return outputs


def cut_at_stop(tokenizer, tokens: list[int], stop_strings: Sequence[str]) -> list[int]:
    """The longest prefix of `tokens` whose text ends before the first stop string (unchanged if none occurs)."""
    data = tokenizer.decode_bytes(tokens)
    starts = [data.find(s.encode("utf-8")) for s in stop_strings]
    starts = [i for i in starts if i >= 0]
    if not starts:
        return tokens
    end, size, n = min(starts), 0, 0
    for n, t in enumerate(tokens):
        size += len(tokenizer.decode_bytes([t]))
        if size > end:
            return tokens[:n]
    return tokens


def stream(
    model: GPT,
    prompt: Sequence[int],
    max_new_tokens: int,
    *,
    tokenizer,
    stop_strings: Sequence[str] = (),
    on_token: Callable[[int], None] | None = None,
    **options,
) -> Iterator[str]:
    """Yield the text of one prompt's continuation as it is produced, on UTF-8 character boundaries.

    Takes `generate`'s options. Text that might be the start of a stop string is
    held back until that is decided, so a stop string is never shown. `on_token`
    is called with each new token id.
    """
    decoder = tokenizer.stream_decoder()
    pending = ""
    stopped = False
    for (token,) in iter_tokens(model, [prompt], max_new_tokens, tokenizer=tokenizer, stop_strings=stop_strings, **options):
        if token is None:
            break
        if on_token is not None:
            on_token(token)
        pending += decoder.push(token)
        if stop_strings:
            cut = min((pending.find(s) for s in stop_strings if s in pending), default=-1)
            if cut >= 0:
                pending, stopped = pending[:cut], True
                break
            # keep back the longest tail that is a prefix of some stop string
            hold = max((k for s in stop_strings for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
            text, pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
        else:
            text, pending = pending, ""
        if text:
            yield text
    if not stopped:
        pending += decoder.flush()
    if pending:
        yield pending


# ----------------------------------------------------------------------------
# gpt2 sample


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    from gpt2.distributed import parse_device

    return parse_device(name)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _tokenizer_for(model: GPT, own, spec: str | None):
    """The tokenizer to use: --tokenizer (checked against the model's own), else the model's, else GPT-2's."""
    from gpt2.tokenizer import load_tokenizer

    if spec is not None:
        tokenizer = load_tokenizer(spec)
        if own is not None and (tokenizer.vocab != own.vocab or tokenizer.merges != own.merges):
            raise GPT2Error(f"--tokenizer {spec} differs from the tokenizer saved with the model; drop --tokenizer to use the model's")
    elif own is not None:
        tokenizer = own
    elif model.config.vocab_size == 50257:
        tokenizer = load_tokenizer("gpt2")
    else:
        raise GPT2Error(f"the model directory has no tokenizer and the model has {model.config.vocab_size} tokens; pass --tokenizer DIR")
    if tokenizer.n_vocab > model.config.vocab_size:
        raise GPT2Error(
            f"the tokenizer has {tokenizer.n_vocab} tokens but the model only {model.config.vocab_size}; wrong tokenizer for this model"
        )
    return tokenizer


def _read_prompts(cfg) -> list[str]:
    """--prompt, --prompt-file (.jsonl: one prompt per line) or stdin; [''] for unconditional samples."""
    import json
    from pathlib import Path

    from gpt2.textfile import read_stdin, read_text

    if cfg.prompt is not None:
        return [cfg.prompt]
    if cfg.prompt_file is None:
        return [read_stdin()] if not sys.stdin.isatty() else [""]
    if str(cfg.prompt_file) == "-":
        return [read_stdin()]
    path = Path(cfg.prompt_file)
    text = read_text(path, "prompt file")
    if path.suffix != ".jsonl":
        return [text]
    prompts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise GPT2Error(f"{path} line {lineno} is not JSON ({e})") from None
        if isinstance(item, dict):
            item = item.get("prompt")
        if not isinstance(item, str):
            raise GPT2Error(f'{path} line {lineno}: expected a JSON string or an object with a "prompt" string')
        prompts.append(item)
    if not prompts:
        raise GPT2Error(f"{path} holds no prompts")
    return prompts


def _encode_prompt(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text, allowed_special="all")
    if ids:
        return ids
    if tokenizer.eot_token is None:
        raise GPT2Error("an empty prompt starts from <|endoftext|>, which this tokenizer lacks; give a prompt")
    return [tokenizer.eot_token]


def sample_command(cfg) -> list[str]:
    """`gpt2 sample`: returns the samples' texts (also written to stdout and, with --output, to a JSON Lines file)."""
    import json
    import os

    from gpt2.config import check_output_file
    from gpt2.weights import load_model

    check_sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    check_output_file(cfg.output, cfg.force)
    device = _device(cfg.device)
    model, own_tokenizer = load_model(cfg.model, device=device, dtype=_dtype(cfg.dtype, device))
    tokenizer = _tokenizer_for(model, own_tokenizer, cfg.tokenizer)
    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "little")
    log.info("seed %d (pass --seed %d to repeat this run)", seed, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    options = dict(
        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, generator=generator, tokenizer=tokenizer,
        stop_ids=[tokenizer.eot_token] if cfg.stop_at_eot and tokenizer.eot_token is not None else [],
        stop_strings=cfg.stop,
    )
    out = sys.stdout
    records, texts = [], []
    t0, n_tokens = time.perf_counter(), 0

    def run_streaming(text: str) -> str:
        nonlocal n_tokens
        ids = _encode_prompt(tokenizer, text)
        if cfg.echo:
            out.write(text)
        pieces, counted = [], []
        for piece in stream(model, ids, cfg.max_new_tokens, on_token=counted.append, **options):
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        n_tokens += len(counted)
        return "".join(pieces)

    if cfg.interactive:
        while True:
            try:
                line = input("prompt> ")
            except EOFError:
                out.write("\n")
                break
            texts.append(run_streaming(line.replace("\\n", "\n")))
    else:
        prompts = _read_prompts(cfg)
        jobs = [(p, s) for p in range(len(prompts)) for s in range(cfg.num_samples)]
        if len(jobs) == 1:
            texts.append(run_streaming(prompts[0]))
            records.append({"prompt": prompts[0], "sample": 0, "text": texts[0]})
        else:
            encoded = [_encode_prompt(tokenizer, p) for p in prompts]
            for start in range(0, len(jobs), cfg.batch_size):
                batch = jobs[start : start + cfg.batch_size]
                results = generate(model, [encoded[p] for p, _ in batch], cfg.max_new_tokens, progress=None, **options)
                for (p, s), tokens in zip(batch, results):
                    n_tokens += len(tokens)
                    text = tokenizer.decode(tokens)
                    texts.append(text)
                    records.append({"prompt": prompts[p], "sample": s, "text": text, "tokens": len(tokens)})
                    title = f" prompt {p + 1} of {len(prompts)}, sample {s + 1} of {cfg.num_samples} "
                    out.write(f"{title:=^80}\n{prompts[p] if cfg.echo else ''}{text}\n")
                    out.flush()
    if cfg.output is not None and records:
        from pathlib import Path

        path = Path(cfg.output)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text("".join(json.dumps({**r, "seed": seed}, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # left only if writing or renaming failed
    elapsed = time.perf_counter() - t0
    log.info("generated %d tokens in %.1f s (%.1f tokens/s)", n_tokens, elapsed, n_tokens / max(elapsed, 1e-9))
    return texts
