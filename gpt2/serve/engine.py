"""Continuous batching: one worker thread owns the model and runs every request's tokens in shared steps.

Requests wait in a bounded queue. At each step boundary the worker admits
waiting requests into free rows ("slots") of a `SlotCache`, runs their prompts
(at most `prefill_tokens` prompt tokens per step, a long prompt in chunks, so
the running requests keep getting tokens while it is read), then one decode
step for every slot that is generating: each row feeds its last token at its
own position and attends only to its own cache. A request leaves as soon as
it ends (a stop id or string, its token budget, a cancellation or its
deadline) and its slot is free for the next one at the following step; the
others go on. Compared with running requests one at a time, N requests share
each read of the weights, which is what a decode step on a CPU waits for.

The engine changes no process-wide state: the decode steps go through a
`gpt2.decode.Backend` it was given, and a generation of gpt2.sample can run
beside it. Every request carries its own sampling settings and its own seeded
generator, so its tokens do not depend on what else is in the batch (up to
float rounding of the batched products).

Results are delivered as events to a callback (the HTTP layer puts them on an
asyncio queue): `Token` per new token, `Finished` at the end, and `Prompt` once
with the prompt's log-probabilities when they were asked for.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gpt2.batching import shared_prefixes
from gpt2.decode import Backend, default_backend
from gpt2.errors import GPT2Error
from gpt2.model import GPT, SlotCache
from gpt2.sample import SamplingParams, StopStrings, adjust_logits, sample_next

log = logging.getLogger(__name__)


@dataclass
class Token:
    """A new token, its log-probability under the model and the `top` most likely alternatives [(id, logprob)]."""

    id: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


@dataclass
class Prompt:
    """The prompt's log-probabilities (the first is None) and top alternatives, for `echo` with `logprobs`."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]


@dataclass
class Finished:
    """The end of a request: `reason` is "stop", "length", "cancelled", "timeout" or "error" (then `message`)."""

    reason: str
    message: str = ""


@dataclass
class Request:
    """What to generate for one sequence (one choice of an API request)."""

    prompt: list[int]
    max_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None
    logprobs: int | None = None  # how many alternatives to report per token (0-5); None: no log-probabilities
    prompt_logprobs: bool = False  # also the prompt's (echo)
    deadline: float | None = None  # time.monotonic() after which the request ends with "timeout"
    on_event: Callable[[object], None] = print
    tokenizer: object | None = None  # for stop strings

    # the engine's own
    slot: int = -1
    done_prompt: int = 0  # prompt tokens already in the cache
    generated: list[int] = field(default_factory=list)
    counts: torch.Tensor | None = None
    generator: torch.Generator | None = None
    stops: StopStrings | None = None
    cancelled: bool = False
    submitted: float = 0.0
    first_token_at: float | None = None
    copy_from: tuple[Request, int] | None = None  # (leader, n): copy the first n prompt positions from the leader
    prompt_lp: list[float | None] = field(default_factory=lambda: [None])
    prompt_top: list[list[tuple[int, float]] | None] = field(default_factory=lambda: [None])


class QueueFull(GPT2Error):
    """The waiting queue is full: try again shortly."""


class ShuttingDown(GPT2Error):
    """The engine takes no new requests."""


@dataclass
class Stats:
    """Counters read by the metrics endpoint."""

    running: int = 0
    waiting: int = 0
    prompt_tokens: int = 0
    shared_prompt_tokens: int = 0  # prompt positions copied from another request instead of computed
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    observe_first_token: Callable[[float], None] | None = None
    observe_latency: Callable[[float], None] | None = None


class Engine:
    """The worker: `submit` requests (from any thread), `cancel` them, `shutdown` at the end.

    `max_batch` slots of the full context each; `max_queue` requests may wait
    for a slot (then `submit` raises QueueFull); `prefill_tokens` bounds the
    prompt tokens run per step.
    """

    def __init__(
        self, model: GPT, *, max_batch: int = 16, max_queue: int = 64, prefill_tokens: int = 512,
        backend: Backend | None = None, vocab_size: int | None = None,
    ):
        if max_batch < 1 or max_queue < 0 or prefill_tokens < 1:
            raise GPT2Error("max_batch and prefill_tokens must be at least 1, max_queue at least 0")
        self.model = model.eval()
        self.config = model.config
        self.vocab_size = vocab_size or model.config.vocab_size
        self.max_batch, self.max_queue, self.prefill_tokens = max_batch, max_queue, prefill_tokens
        self.backend = backend if backend is not None else default_backend(model)
        weight = model.lm_head.weight
        self.device = weight.device
        self.cache = SlotCache(model.config, max_batch, model.config.block_size, device=weight.device, dtype=weight.dtype)
        self.slots: list[Request | None] = [None] * max_batch
        self.waiting: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.stats = Stats()
        self._wake = threading.Condition()
        self._pending = 0  # submitted, not yet admitted
        self._closing = False
        self._cancel_at: float | None = None  # when closing: the time left-over requests are cancelled
        self._stop_all = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpt2-engine", daemon=True)
        self._thread.start()

    # ---- from other threads

    def submit(self, *requests: Request) -> list[Request]:
        """Queue `requests` together (all or none: they are admitted at the same step boundary when there is
        room, so that their common beginnings are read once); raises QueueFull or ShuttingDown instead."""
        for r in requests:
            if r.max_tokens < 0:
                raise GPT2Error("max_tokens must be 0 or more")
            if not r.prompt:
                raise GPT2Error("the prompt is empty")
            if len(r.prompt) + r.max_tokens > self.config.block_size:
                raise GPT2Error(f"the prompt ({len(r.prompt)} tokens) plus max_tokens ({r.max_tokens}) exceeds the context of {self.config.block_size}")
        with self._wake:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._pending + len(requests) > self.max_queue + self.free_slots():
                raise QueueFull(f"{self._pending} requests are waiting; try again shortly")
            now = time.monotonic()
            for r in requests:
                r.submitted = now
                self.waiting.put(r)
            self._pending += len(requests)
            self.stats.waiting = self._pending
            self._wake.notify()
        return list(requests)

    def cancel(self, request: Request) -> None:
        """End `request` at the next step boundary (its slot is freed there); no effect once it has ended."""
        request.cancelled = True
        with self._wake:
            self._wake.notify()

    def free_slots(self) -> int:
        return sum(s is None for s in self.slots)

    def close(self, grace: float = 0.0) -> None:
        """Take no new requests from now on; cancel those still running or waiting `grace` seconds later."""
        with self._wake:
            deadline = time.monotonic() + grace
            self._cancel_at = deadline if self._cancel_at is None else min(self._cancel_at, deadline)
            self._closing = True
            self._wake.notify()

    def shutdown(self, grace: float = 0.0) -> None:
        """`close(grace)`, wait until nothing is left, then stop the worker."""
        self.close(grace)
        while self._busy() and self._thread.is_alive():
            time.sleep(0.01)
        with self._wake:
            self._stop_all = True
            self._wake.notify()
        self._thread.join(timeout=60)

    @property
    def closing(self) -> bool:
        return self._closing

    def _busy(self) -> bool:
        return self._pending > 0 or any(s is not None for s in self.slots)

    # ---- the worker

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not self._stop_all and not self._busy():
                            self._wake.wait()
                        if self._stop_all:
                            break
                    self._step()
        except Exception as e:  # a bug or an out-of-memory: every request learns of it, nothing hangs
            log.exception("the generation worker failed")
            self._fail_all(f"the generation worker failed: {e}")
        finally:
            self._cancel_all("cancelled")
            self._stopped.set()

    def _step(self) -> None:
        now = time.monotonic()
        if self._cancel_at is not None and now >= self._cancel_at:
            self._cancel_all("cancelled", "the server is shutting down")
            return
        for r in self.slots:
            if r is not None and (r.cancelled or (r.deadline is not None and now > r.deadline)):
                self._finish(r, "cancelled" if r.cancelled else "timeout")
        self._admit(now)
        self._prefill()
        self._decode()

    def _admit(self, now: float) -> None:
        admitted = []
        while self.free_slots() > 0:
            try:
                r = self.waiting.get_nowait()
            except queue.Empty:
                break
            with self._wake:
                self._pending -= 1
                self.stats.waiting = self._pending
            if r.cancelled or (r.deadline is not None and now > r.deadline):
                self._deliver(r, Finished("cancelled" if r.cancelled else "timeout"))
                continue
            slot = self.slots.index(None)
            self.slots[slot] = r
            self.cache.claim(slot)
            r.slot = slot
            seed = r.seed if r.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            r.generator = torch.Generator(device=self.device).manual_seed(seed)
            if r.params.presence_penalty or r.params.frequency_penalty:
                r.counts = torch.zeros(1, self.config.vocab_size, dtype=torch.int32)
            r.stops = StopStrings(r.tokenizer, r.params.stop_strings, 1)
            self.stats.running = sum(s is not None for s in self.slots)
            admitted.append(r)
        self._share_prefixes(admitted)

    def _share_prefixes(self, admitted: list[Request]) -> None:
        """Requests admitted together whose prompts begin alike (gpt2.batching.shared_prefixes: the n
        choices of one prompt, few-shot prompts, the same context with several continuations) read their
        common beginning once: the oldest reads it, the others copy its keys and values."""
        if len(admitted) < 2:
            return
        for m, rows in shared_prefixes([r.prompt for r in admitted]):
            group = sorted((admitted[i] for i in rows), key=lambda r: r.submitted)
            for follower in group[1:]:
                if m > 0 and not follower.prompt_logprobs:  # the prompt's log-probabilities need its own pass
                    follower.copy_from = (group[0], m)

    def _prefill(self) -> None:
        """Run up to `prefill_tokens` prompt tokens of requests still reading their prompts, oldest first."""
        budget = self.prefill_tokens
        for r in sorted((s for s in self.slots if s is not None and s.done_prompt < len(s.prompt)), key=lambda s: s.submitted):
            if r.copy_from is not None and not self._copy_prefix(r):
                continue  # its leader is still reading the shared beginning
            if budget <= 0:
                return
            n = min(budget, len(r.prompt) - r.done_prompt)
            budget -= n
            start = r.done_prompt
            idx = torch.tensor([r.prompt[start : start + n]], device=self.device)
            hidden = self.model.hidden(idx, cache=self.cache.rows(r.slot, r.slot + 1))
            r.done_prompt += n
            self.stats.prompt_tokens += n
            if r.prompt_logprobs:
                self._prompt_logprobs(r, hidden[0], start)
            if r.done_prompt == len(r.prompt):
                if r.max_tokens == 0:
                    self._finish(r, "length")
                    continue
                self._emit(r, self.model.logits(hidden[:, -1]))

    def _copy_prefix(self, r: Request) -> bool:
        """Copy the shared beginning from `r`'s leader once the leader has read it; False while it has not."""
        leader, m = r.copy_from
        if leader.slot < 0 or self.slots[leader.slot] is not leader:  # the leader is gone: read it all
            r.copy_from = None
            return True
        if leader.done_prompt < m:
            return False
        self.cache.k[:, r.slot, :, :m] = self.cache.k[:, leader.slot, :, :m]
        self.cache.v[:, r.slot, :, :m] = self.cache.v[:, leader.slot, :, :m]
        self.cache.lengths[r.slot] = r.done_prompt = m
        self.stats.shared_prompt_tokens += m
        r.copy_from = None
        return True

    def _prompt_logprobs(self, r: Request, hidden: torch.Tensor, start: int) -> None:
        """Log-probabilities of prompt tokens start+1 .. start+n (the logits at start .. start+n-1 predict them)."""
        logp = self.model.logits(hidden).float().log_softmax(-1)  # (n, V)
        n = hidden.shape[0]
        targets = r.prompt[start + 1 : start + n + 1]
        values = logp[torch.arange(len(targets)), torch.tensor(targets, dtype=torch.long)].tolist() if targets else []
        tops = _top(logp[: len(targets)], r.logprobs or 0)
        r.prompt_lp += values
        r.prompt_top += tops
        if len(r.prompt_lp) == len(r.prompt):
            self._deliver(r, Prompt(r.prompt_lp, r.prompt_top))

    def _decode(self) -> None:
        """One step for every slot that is generating."""
        live = [r is not None and r.done_prompt == len(r.prompt) and not r.cancelled for r in self.slots]
        if not any(live):
            return
        n = max(i for i, x in enumerate(live) if x) + 1
        n = min(self.max_batch, decode_rows(n))
        tokens = torch.tensor([[r.generated[-1] if live[i] else 0] for i, r in enumerate(self.slots[:n])], device=self.device)
        rows = self.cache.rows(0, n, live=live[:n])
        logits = self.backend.step(self.model, tokens, rows)
        for i in range(n):
            if live[i]:
                self._emit(self.slots[i], logits[i : i + 1])

    def _emit(self, r: Request, logits: torch.Tensor) -> None:
        """Choose `r`'s next token from its logits (1, V), deliver it, and end `r` if that was its last."""
        params = r.params
        raw = logits
        if params.adjusts_logits:
            logits = adjust_logits(logits, params, r.counts)
        logits = logits[:, : self.vocab_size]
        token = int(sample_next(logits, params.temperature, params.top_k, params.top_p, r.generator)[0])
        if r.counts is not None:
            r.counts[0, token] += 1
        if r.first_token_at is None:
            r.first_token_at = time.monotonic()
            if self.stats.observe_first_token is not None:
                self.stats.observe_first_token(r.first_token_at - r.submitted)
        self.stats.generated_tokens += 1
        if token in params.stop_ids:
            self._finish(r, "stop")
            return
        r.generated.append(token)
        event = Token(token)
        if r.logprobs is not None:
            logp = raw.float().log_softmax(-1)[0]
            event.logprob = float(logp[token])
            event.top = _top(logp[None], r.logprobs)[0]
        self._deliver(r, event)
        if r.stops.hit(0, token):
            self._finish(r, "stop")
        elif len(r.generated) >= r.max_tokens:
            self._finish(r, "length")

    def _finish(self, r: Request, reason: str, message: str = "") -> None:
        if r.slot >= 0 and self.slots[r.slot] is r:
            self.slots[r.slot] = None
            self.cache.release(r.slot)
        self.stats.running = sum(s is not None for s in self.slots)
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
        if self.stats.observe_latency is not None:
            self.stats.observe_latency(time.monotonic() - r.submitted)
        self._deliver(r, Finished(reason, message))

    def _deliver(self, r: Request, event: object) -> None:
        try:
            r.on_event(event)
        except Exception:  # the receiver is gone (a closed event loop): the request ends here
            log.debug("dropping an event for a request whose receiver is gone", exc_info=True)
            r.cancelled = True

    def _cancel_all(self, reason: str, message: str = "") -> None:
        for r in self.slots:
            if r is not None:
                self._finish(r, reason, message)
        while True:
            try:
                r = self.waiting.get_nowait()
            except queue.Empty:
                break
            with self._wake:
                self._pending -= 1
            self._deliver(r, Finished(reason, message))
        self.stats.waiting = max(self._pending, 0)

    def _fail_all(self, message: str) -> None:
        with self._wake:
            self._closing = True
        self._cancel_all("error", message)


def decode_rows(n: int) -> int:
    """The rows a decode step runs when the highest busy slot is n - 1: n rounded up to a power of 4
    (1, 4, 16, 64, ...), so that a few batch sizes need packed weights (gpt2.decode.CPUBackend keeps
    one set per size: `BATCH_SIZES_KEPT`) while a step runs at most 4x the rows it needs."""
    rows = 1
    while rows < n:
        rows *= 4
    return rows


BATCH_SIZES_KEPT = 3  # 1, 4 and 16 rows: the default --max-batch 16 never repacks


def _top(logp: torch.Tensor, k: int) -> list[list[tuple[int, float]] | None]:
    """The k most likely (id, logprob) of each row of logp (n, V); None per row when k is 0."""
    if k <= 0:
        return [None] * logp.shape[0]
    values, ids = logp.topk(k, dim=-1)
    return [list(zip(i.tolist(), v.tolist())) for i, v in zip(ids, values)]
