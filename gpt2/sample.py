"""Text generation with a KV cache: greedy, temperature, top-k and top-p sampling (GPT-2 paper, section 3 and Appendix).

The paper's samples use top-k with k = 40 (its summaries k = 2, and greedy
decoding for its question answering); top-p is Holtzman et al. (2019),
"The Curious Case of Neural Text Degeneration".

`generate` takes a batch of prompts of any lengths (left-padded into one batch,
with an attention mask and per-row positions), fills one preallocated cache
per context window with a single forward pass over the prompts, then feeds one
token per step and computes logits for that position only. Sampling is a pure
function of the logits and an explicit `torch.Generator`, so a seed reproduces
a run. A sequence ends at a stop id (e.g. <|endoftext|>, not returned) or a stop
string (cut off, with anything after it).

Context: the model sees at most `block_size` tokens. A window starts from the
last `block_size - min(tokens still to generate, block_size // 2)` tokens of
each sequence (so a long prompt is cut from the left, keeping room for what is
generated); when the window is full, the cache is rebuilt the same way from
the most recent tokens and generation goes on.

`compile=True` runs the decode step through torch.compile (inductor), which
prepacks the weights for the CPU's matrix kernels and fuses the small
element-wise work: worth it for long generations, after ~1 minute of compiling.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence

import torch

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


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Logits (B, V) -> float32 logits of the sampling distribution: divided by `temperature`, then
    -inf outside the `top_k` most likely tokens and outside the smallest set whose probability reaches `top_p`."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, -math.inf)
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token (B,) for logits (B, V): argmax when temperature is 0, else a draw from `generator`."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)  # draw where the generator lives, so a seed means the same everywhere
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


# ----------------------------------------------------------------------------
# the decoding loop


class _Step:
    """One decode step (token (B, 1) -> logits (B, V)), optionally compiled.

    Compiling with `freezing` lets inductor treat the weights as constants and
    prepack them for oneDNN / MKL; the cache length and the step's position are
    dynamic, so one graph serves every step and every window.
    """

    _compiled: dict[int, Callable] = {}

    def __init__(self, model: GPT, compile: bool):
        self.model = model
        self.fn = self._forward
        if compile:
            key = id(model)
            if key not in self._compiled:
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True
                self._compiled[key] = torch.compile(self._forward, dynamic=True)
            self.fn = self._compiled[key]

    def _forward(self, tok, cache, attention_mask, positions):
        logits, _ = self.model(tok, cache=cache, attention_mask=attention_mask, positions=positions, last_only=True)
        return logits[:, -1]

    def __call__(self, tok, cache, attention_mask, positions):
        return self.fn(tok, cache, attention_mask, positions)


def _decode(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    finished: list[bool],
    compile: bool = False,
) -> Iterator[list[int]]:
    """Yield the next token of every row, step by step, until `max_new_tokens` steps are done or every
    row is marked in `finished` (the caller marks rows there). Each window of the context is one cache."""
    cfg = model.config
    weight = model.lm_head.weight
    device, dtype = weight.device, weight.dtype
    B = len(prompts)
    step = _Step(model, compile)
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
                logits = step(tok[:, None], cache, mask, pos)
            if pos is not None:
                pos = pos + 1


def _prepare(model: GPT, prompts, max_new_tokens: int, vocab_size: int | None) -> list[list[int]]:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
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
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
    compile: bool = False,
) -> Iterator[list[int | None]]:
    """Like `generate`, but yields after each step the new token of every prompt (None once a prompt has ended),
    for streaming. A stop id is not yielded; the token that completes a stop string is."""
    check_sampling(temperature, top_k, top_p)
    prompts = _prepare(model, prompts, max_new_tokens, vocab_size)
    if tokenizer is not None and vocab_size is None and tokenizer.n_vocab < model.config.vocab_size:
        vocab_size = tokenizer.n_vocab  # never produce ids the tokenizer cannot decode (a padded vocabulary)
    if not prompts or max_new_tokens == 0:
        return
    stops = _StopStrings(tokenizer, stop_strings, len(prompts))
    stop_ids = {int(t) for t in stop_ids}
    finished = [False] * len(prompts)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if vocab_size is not None and vocab_size < logits.shape[-1]:
            logits = logits[:, :vocab_size]
        return sample_next(logits, temperature, top_k, top_p, generator)

    was_training = model.training
    model.eval()
    try:
        for tokens in _decode(model, prompts, max_new_tokens, pick, finished, compile):
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
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
    compile: bool = False,
    progress: bool | None = False,
) -> list[list[int]]:
    """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens; returns only the new tokens.

    temperature 0 is greedy decoding; otherwise tokens are drawn from the softmax
    of logits / temperature, restricted to the `top_k` most likely tokens and to
    the nucleus of probability `top_p`, with `generator` (a seeded
    torch.Generator makes the result reproducible). A sequence ends at any of
    `stop_ids` (not included) or once its text contains one of `stop_strings`
    (needs `tokenizer`; the stop string and what follows are cut off, with the
    token that straddles its start). `vocab_size` restricts sampling to ids below it.
    """
    outputs: list[list[int]] = [[] for _ in prompts]
    bar = None
    if progress is not False:
        from tqdm import tqdm

        bar = tqdm(total=max_new_tokens, desc="generating", unit="tok", file=sys.stderr, disable=None if progress is None else False)
    t0 = time.perf_counter()
    try:
        for tokens in iter_tokens(
            model, prompts, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, stop_ids=stop_ids,
            stop_strings=stop_strings, tokenizer=tokenizer, generator=generator, vocab_size=vocab_size, compile=compile,
        ):
            for out, t in zip(outputs, tokens):
                if t is not None:
                    out.append(t)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if stop_strings:
        outputs = [cut_at_stop(tokenizer, out, stop_strings) for out in outputs]
    n = sum(len(o) for o in outputs)
    log.debug("generated %d tokens for %d prompts in %.2f s", n, len(outputs), time.perf_counter() - t0)
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
    **options,
) -> Iterator[str]:
    """Yield the text of one prompt's continuation as it is produced, on UTF-8 character boundaries.

    Takes `generate`'s options. Text that might be the start of a stop string is
    held back until that is decided, so a stop string is never shown.
    """
    decoder = tokenizer.stream_decoder()
    pending = ""
    stopped = False
    for (token,) in iter_tokens(model, [prompt], max_new_tokens, tokenizer=tokenizer, stop_strings=stop_strings, **options):
        if token is None:
            break
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
