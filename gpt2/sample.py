"""Text generation with a KV cache: greedy, temperature, top-k and top-p sampling (GPT-2 paper, section 3 and Appendix).

The paper's samples use top-k with k = 40 (its summaries k = 2, and greedy
decoding for its question answering); top-p is Holtzman et al. (2019),
"The Curious Case of Neural Text Degeneration".

The public API: `SamplingParams` (how tokens are chosen and when a sequence
ends), `generate` (a batch of prompts -> their new tokens), `iter_tokens` (the
same, step by step) and `stream` (one prompt's text as it is produced).

`generate` takes a batch of prompts of any lengths (left-padded into one batch,
with an attention mask and per-row positions), fills one preallocated cache
per context window with a single forward pass over the prompts (a beginning
that several prompts share runs once: gpt2/batching.py), then feeds one
token per step and computes logits for that position only, with a decode
`Backend` (gpt2/decode.py: prepacked CPU kernels, a one-row bfloat16 step in
C). Sampling is a pure function of the logits and an explicit
`torch.Generator`, so a seed reproduces a run. A sequence ends at a stop id
(e.g. <|endoftext|>, not returned) or a stop string (cut off, with anything
after it). A generation changes no process-wide state (thread counts, module
forwards), so several may run at once on one model.

Context: the model sees at most `block_size` tokens. A window starts from the
last `block_size - min(tokens still to generate, block_size // 2)` tokens of
each sequence (so a long prompt is cut from the left, keeping room for what is
generated); when the window is full, the cache is rebuilt the same way from
the most recent tokens and generation goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from gpt2.batching import sharing_plan
from gpt2.decode import Backend, default_backend
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


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen, and when a sequence ends.

    temperature 0 is greedy decoding; otherwise tokens are drawn from the
    softmax of logits / temperature, restricted to the `top_k` most likely
    tokens and to the nucleus of probability `top_p`. Before that, `logit_bias`
    ({token id: value}) is added to the logits, and each token already generated
    loses `presence_penalty` once plus `frequency_penalty` per occurrence (as in
    OpenAI's API). A sequence ends at any of `stop_ids` (not returned) or once
    its text contains one of `stop_strings` (cut off there; needs the
    tokenizer). `vocab_size` restricts the choice to ids below it.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    vocab_size: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        object.__setattr__(self, "stop_ids", tuple(int(t) for t in self.stop_ids))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        object.__setattr__(self, "logit_bias", tuple((int(t), float(b)) for t, b in bias))
        if any(not s for s in self.stop_strings):
            raise GPT2Error("a stop string must not be empty")
        for name in ("presence_penalty", "frequency_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise GPT2Error(f"{name} must be a finite number, got {getattr(self, name)}")

    @property
    def adjusts_logits(self) -> bool:
        return bool(self.logit_bias) or self.presence_penalty != 0 or self.frequency_penalty != 0


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


def adjust_logits(logits: torch.Tensor, params: SamplingParams, counts: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, V) with `params.logit_bias` added and the presence / frequency penalties of the tokens
    counted so far (`counts` (B, V), occurrences of each id in each row's new tokens) subtracted."""
    logits = logits.float()
    if params.logit_bias:
        ids = torch.tensor([t for t, _ in params.logit_bias], device=logits.device)
        values = torch.tensor([b for _, b in params.logit_bias], device=logits.device)
        logits = logits.index_add(-1, ids, values.expand(logits.shape[0], -1))
    if counts is not None and (params.presence_penalty or params.frequency_penalty):
        counts = counts[:, : logits.shape[-1]].to(logits.device, logits.dtype)
        logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


# ----------------------------------------------------------------------------
# the decoding loop


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


def _prompt_pass(
    model: GPT, contexts: list[list[int]], span: int
) -> tuple[KVCache, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The prompts left-padded into one batch, in one forward pass: (cache, next-token logits (B, V),
    attention mask (B, P + span), position id of each row's next token (B, 1)); the last two are None
    when no prompt is padded."""
    cfg = model.config
    weight = model.lm_head.weight
    device = weight.device
    B, P = len(contexts), max(len(c) for c in contexts)
    cache = KVCache(cfg, B, P + span - 1, device=device, dtype=weight.dtype)
    idx = torch.tensor([[0] * (P - len(c)) + c for c in contexts], device=device)  # (B, P), left-padded
    mask = positions = pos = None
    if any(len(c) != P for c in contexts):
        # padding: a mask over prompt + generated positions, and each row's own position ids
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        mask = (torch.arange(P + span, device=device)[None, :] >= (P - lengths)[:, None]).long()  # (B, P + span)
        positions = (mask[:, :P].cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        pos = lengths[:, None]  # (B, 1): the position of the next token of each row
    logits = model(idx, cache=cache, attention_mask=mask, positions=positions, last_only=True)[0][:, -1]
    return cache, logits, mask, pos


def _decode(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    finished: list[bool],
    backend: Backend,
    share: bool = True,
) -> Iterator[list[int]]:
    """Yield the next token of every row, step by step, until `max_new_tokens` steps are done or every
    row is marked in `finished` (the caller marks rows there). Each window of the context is one cache."""
    cfg = model.config
    history = [list(p) for p in prompts]
    remaining = max_new_tokens
    first = True
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
        plan = sharing_plan(contexts, span, cfg.block_size) if share else None
        with torch.inference_mode():  # only around the model: the caller's code runs between steps
            if plan is not None:
                cache, logits, mask, pos = _shared_prompt_pass(model, contexts, plan, span)
            else:
                cache, logits, mask, pos = _prompt_pass(model, contexts, span)
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
            with torch.inference_mode():
                logits = backend.step(model, tok[:, None].to(cache.k.device), cache, mask, pos)
            if pos is not None:
                pos = pos + 1


def check_prompts(model: GPT, prompts, max_new_tokens: int, vocab_size: int | None = None) -> list[list[int]]:
    """The prompts as lists of ints, refused with a GPT2Error if empty or holding ids outside the model."""
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


class StopStrings:
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


def _params(params: SamplingParams | None, sampling: dict) -> SamplingParams:
    """`params`, or SamplingParams(**sampling) from keyword arguments (not both)."""
    if params is not None:
        if sampling:
            raise TypeError(f"give either params or sampling keywords ({', '.join(sampling)}), not both")
        return params
    names = {f.name for f in dataclasses.fields(SamplingParams)}
    unknown = sorted(set(sampling) - names)
    if unknown:
        raise TypeError(f"unknown sampling option {unknown[0]!r}; SamplingParams has {', '.join(sorted(names))}")
    return SamplingParams(**sampling)


# ----------------------------------------------------------------------------
# the public API


def iter_tokens(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams | None = None,
    *,
    tokenizer=None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    backend: Backend | None = None,
    fast: bool = True,
    logprobs: list[list[float]] | None = None,
    **sampling,
) -> Iterator[list[int | None]]:
    """Like `generate`, but yields after each step the new token of every prompt (None once a prompt has ended),
    for streaming. A stop id is not yielded; the token that completes a stop string is.

    With a list as `logprobs`, each step first appends to it every row's log-probability
    of its new token under the model (natural log, before temperature, truncation and biases)."""
    from gpt2.weights import unwrap

    params = _params(params, sampling)
    model = unwrap(model)  # decode with the plain module, also for a compiled or DDP-wrapped one
    prompts = check_prompts(model, prompts, max_new_tokens, params.vocab_size)
    vocab_size = params.vocab_size
    if tokenizer is not None and vocab_size is None and tokenizer.n_vocab < model.config.vocab_size:
        vocab_size = tokenizer.n_vocab  # never produce ids the tokenizer cannot decode (a padded vocabulary)
    if not prompts or max_new_tokens == 0:
        return
    backend = backend if backend is not None else default_backend(model, fast)
    stops = StopStrings(tokenizer, params.stop_strings, len(prompts))
    stop_ids = set(params.stop_ids)
    finished = [False] * len(prompts)
    counts = None
    if params.presence_penalty or params.frequency_penalty:
        counts = torch.zeros(len(prompts), model.config.vocab_size, dtype=torch.int32)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        full = logits
        if params.adjusts_logits:
            logits = adjust_logits(logits, params, counts)
        if vocab_size is not None and vocab_size < logits.shape[-1]:
            logits = logits[:, :vocab_size]
        tokens = sample_next(logits, params.temperature, params.top_k, params.top_p, generator)
        if counts is not None:
            counts[torch.arange(len(tokens)), tokens.cpu()] += 1
        if logprobs is not None:
            full = full.float()
            logprobs.append((full.gather(-1, tokens.to(full.device)[:, None]) - full.logsumexp(-1, keepdim=True))[:, 0].tolist())
        return tokens

    was_training = model.training
    model.eval()
    try:
        for tokens in _decode(model, prompts, max_new_tokens, pick, finished, backend, share=fast):
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
    params: SamplingParams | None = None,
    *,
    tokenizer=None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    backend: Backend | None = None,
    fast: bool = True,
    progress: bool | None = False,
    return_logprobs: bool = False,
    **sampling,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens; returns only the new tokens.

    `params` (or its fields as keywords: `temperature=0`, `top_k=40`, ...) say
    how tokens are chosen and where a sequence ends (`SamplingParams`). A
    seeded `generator` makes the result reproducible; a list of one per prompt
    makes each prompt's result independent of the others in the batch. Stop
    strings need `tokenizer`; the stop string and what follows are cut off,
    with the token that straddles its start. `backend` computes the decode
    steps (default: gpt2.decode.default_backend; `fast=False`: the plain
    forward pass, and no prefix sharing). `return_logprobs` also returns, for
    every new token, its log-probability under the model (natural log, before
    temperature, truncation and biases).
    """
    params = _params(params, sampling)
    outputs: list[list[int]] = [[] for _ in prompts]
    scores: list[list[float]] = [[] for _ in prompts]
    trace: list[list[float]] | None = [] if return_logprobs else None
    bar = None
    if progress is not False:
        from tqdm import tqdm

        bar = tqdm(total=max_new_tokens, desc="generating", unit="tok", file=sys.stderr, disable=None if progress is None else False)
    t0 = time.perf_counter()
    try:
        for tokens in iter_tokens(model, prompts, max_new_tokens, params, tokenizer=tokenizer, generator=generator,
                                  backend=backend, fast=fast, logprobs=trace):
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
    if params.stop_strings:
        outputs = [cut_at_stop(tokenizer, out, params.stop_strings) for out in outputs]
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


class TextStream:
    """Turns one sequence's new tokens into text on UTF-8 character boundaries, holding back text that
    might be the start of a stop string until that is decided (so a stop string is never shown)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str] = ()):
        self.decoder = tokenizer.stream_decoder()
        self.stops = list(stop_strings)
        self.pending = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """The text that can be shown after `token` ("" while held back); sets `stopped` at a stop string."""
        self.pending += self.decoder.push(token)
        if not self.stops:
            text, self.pending = self.pending, ""
            return text
        cut = min((self.pending.find(s) for s in self.stops if s in self.pending), default=-1)
        if cut >= 0:
            text, self.pending, self.stopped = self.pending[:cut], "", True
            return text
        # keep back the longest tail that is a prefix of some stop string
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        text, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold :]
        return text

    def flush(self) -> str:
        """What is left at the end of the sequence (bytes of an unfinished character as U+FFFD)."""
        if self.stopped:
            return ""
        text, self.pending = self.pending + self.decoder.flush(), ""
        return text


def stream(
    model: GPT,
    prompt: Sequence[int],
    max_new_tokens: int,
    params: SamplingParams | None = None,
    *,
    tokenizer,
    on_token: Callable[[int], None] | None = None,
    **options,
) -> Iterator[str]:
    """Yield the text of one prompt's continuation as it is produced, on UTF-8 character boundaries.

    Takes `generate`'s options. Text that might be the start of a stop string is
    held back until that is decided, so a stop string is never shown. `on_token`
    is called with each new token id.
    """
    run = {k: options.pop(k) for k in ("generator", "backend", "fast") if k in options}
    params = _params(params, options)
    text = TextStream(tokenizer, params.stop_strings)
    for (token,) in iter_tokens(model, [prompt], max_new_tokens, params, tokenizer=tokenizer, **run):
        if token is None:
            break
        if on_token is not None:
            on_token(token)
        piece = text.push(token)
        if piece:
            yield piece
        if text.stopped:
            return
    rest = text.flush()
    if rest:
        yield rest
