"""Log-likelihood scoring: the engine under every zero-shot task that is not generation.

Two questions cover the whole suite (GPT-2 paper section 3, EVAL_SPEC.md):

* `Scorer.score_documents`: the total negative log-likelihood of long token
  streams (WikiText, PTB, enwik8, ...), in windows of the model's context.
  Each document starts with `<|endoftext|>`; with `stride == block_size` the
  windows are disjoint and every token is scored once; with a smaller stride
  the window slides and only its last `stride` targets are scored, so every
  scored token after the first window has at least `block_size - stride`
  tokens of context.
* `Scorer.score`: log p(continuation | context) for requests that may share a
  context (LAMBADA's target word, CBT's ten candidate sentences, WSC, the
  GPT-1 heuristics), with the per-token greedy check LAMBADA needs.

How it is made fast, without changing a number:

* batches of sequences sorted by length and right-padded: with causal
  attention no real token ever sees the padding, so no mask is needed and the
  fused attention kernels stay in use;
* the vocabulary projection (a third of a 124M model's work per token) runs
  only on the positions that are scored, in chunks, so a full (B, T, 50257)
  tensor of logits is never built;
* a context shared by several continuations runs once: its keys and values
  go into a `KVCache` that `select` repeats for each continuation, which then
  runs with `attention_mask` / `positions` (rows of different lengths).

Results are deterministic: the same inputs and settings give bit-identical sums.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from gpt2.errors import GPT2Error
from gpt2.model import GPT, KVCache

log = logging.getLogger(__name__)

# Rows of logits materialised at once: 1024 x 50257 float32 is about 200 MB.
LOGIT_ROWS = 1024
# A context is run once and shared only when it is at least this long;
# shorter ones are cheaper to repeat than to cache and copy.
SHARE_MIN_CONTEXT = 32


@dataclass
class Scored:
    """The score of one continuation: per-token log-probabilities (natural log) and greedy checks."""

    logprobs: np.ndarray
    """log p(token | everything before it), one per continuation token (float64)"""
    greedy: np.ndarray
    """token i was the model's top choice (its logit equals the maximum)"""
    greedy_filtered: np.ndarray | None = None
    """the same with the `banned` tokens removed from the first position's choices (None if no ban)"""

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())

    @property
    def n_tokens(self) -> int:
        return len(self.logprobs)

    @property
    def mean(self) -> float:
        return self.total / self.n_tokens

    @property
    def all_greedy(self) -> bool:
        return bool(self.greedy.all())


@dataclass
class DocumentScore:
    """Total NLL of a set of documents and how many tokens it covers."""

    nll: float
    """sum over scored tokens of -log p (natural log)"""
    n_tokens: int
    """tokens scored: every token of every document (the leading <|endoftext|> is context only)"""
    n_windows: int


def _progress(total: int, desc: str, unit: str, progress: bool | None) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if progress is None else not progress, leave=False)


class Scorer:
    """Scores token sequences with a `GPT` in batches of about `batch_tokens` tokens.

    `cache_bytes` bounds the keys and values held for shared contexts (all
    layers, all copies). `progress`: None shows a bar on a terminal only.
    """

    def __init__(self, model: GPT, *, batch_tokens: int = 8192, cache_bytes: int = 1 << 30, progress: bool | None = None):
        if batch_tokens < 1:
            raise GPT2Error(f"batch_tokens must be positive, got {batch_tokens}")
        self.model = model.eval()
        self.config = model.config
        self.block_size = model.config.block_size
        self.vocab_size = model.config.vocab_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.batch_tokens = max(batch_tokens, self.block_size)
        self.cache_bytes = cache_bytes
        self.progress = progress
        self.tokens_run = 0
        """positions run through the network so far (the work done; shared contexts count once)"""

    # -- the network ---------------------------------------------------------

    def hidden(self, idx: torch.Tensor, **kwargs) -> torch.Tensor:
        """Final hidden states (B, T, n_embd) from the model's trunk (`GPT.hidden`), so that scoring can
        project just the positions it needs onto the vocabulary."""
        h = self.model.hidden(idx, **kwargs)
        self.tokens_run += idx.numel()
        return h

    def _token_scores(
        self,
        h: torch.Tensor,
        targets: torch.Tensor,
        filter_rows: torch.Tensor | None = None,
        banned: torch.Tensor | None = None,
        want_greedy: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """log p(target) and "target is the top choice" for hidden states h (N, C) and targets (N,).

        With `banned` token ids, also whether the target is the top choice once
        those ids are removed, on the rows where `filter_rows` is true (elsewhere
        the plain check)."""
        lps, greedy, filtered = [], [], []
        for i in range(0, h.shape[0], LOGIT_ROWS):
            logits = self.model.lm_head(h[i : i + LOGIT_ROWS])[..., : self.vocab_size].float()  # (n, V)
            tgt = targets[i : i + LOGIT_ROWS]
            t_logit = logits.gather(1, tgt[:, None])[:, 0]
            lps.append((t_logit - torch.logsumexp(logits, dim=-1)).double())
            if not want_greedy:
                continue
            greedy.append(t_logit >= logits.max(dim=-1).values)
            if banned is not None:
                rows = filter_rows[i : i + LOGIT_ROWS]
                logits[rows[:, None] & banned[None, :]] = -math.inf
                filtered.append((t_logit >= logits.max(dim=-1).values) & ~(rows & banned[tgt]))
        if not lps:
            empty = torch.zeros(0, device=h.device)
            return empty.double(), empty.bool(), None if banned is None else empty.bool()
        return torch.cat(lps), torch.cat(greedy) if want_greedy else None, None if banned is None else torch.cat(filtered)

    # -- long documents ------------------------------------------------------

    def windows(self, n_tokens: int, stride: int) -> list[tuple[int, int, int]]:
        """(start, length, scored) for a stream of `n_tokens` tokens that begins with <|endoftext|>.

        Window k runs the inputs s[start : start + length] and is scored on its
        last `scored` targets (target j is s[j + 1]); together the windows score
        targets 1 .. n_tokens - 1 exactly once. With stride == block_size the
        windows are the disjoint blocks s[kB : (k + 1)B].
        """
        B = self.block_size
        if not 1 <= stride <= B:
            raise GPT2Error(f"the window stride must be between 1 and the context ({B}), got {stride}")
        last = n_tokens - 1  # index of the last target
        if last < 1:
            return []
        out = [(0, min(B, last), min(B, last))]
        end = out[0][1]  # targets 1 .. end are scored
        while end < last:
            new_end = min(end + stride, last)
            # disjoint windows restart from nothing (even the short last one); a sliding one looks back B tokens
            start = end if stride == B else max(0, new_end - B)
            out.append((start, new_end - start, new_end - end))
            end = new_end
        return out

    @torch.inference_mode()
    def score_documents(self, docs: Sequence[Sequence[int]], bos: int, stride: int | None = None, desc: str = "scoring") -> DocumentScore:
        """Total NLL of every token of `docs`, each document prefixed by `bos` (<|endoftext|>)."""
        stride = stride or self.block_size
        streams = [np.asarray([bos, *doc], dtype=np.int64) for doc in docs]
        jobs = [(d, *w) for d, s in enumerate(streams) for w in self.windows(len(s), stride)]
        # longest first, so each batch pads as little as possible
        jobs.sort(key=lambda j: -j[2])
        nll, n_tokens = 0.0, 0
        with _progress(len(jobs), desc, "window", self.progress) as bar:
            i = 0
            while i < len(jobs):
                width = jobs[i][2]
                rows = max(1, self.batch_tokens // width)
                batch = jobs[i : i + rows]
                i += len(batch)
                idx = torch.zeros(len(batch), width, dtype=torch.long)
                tgt = torch.zeros(len(batch), width, dtype=torch.long)
                sel = torch.zeros(len(batch), width, dtype=torch.bool)
                for r, (d, start, length, scored) in enumerate(batch):
                    s = torch.from_numpy(streams[d][start : start + length + 1])
                    idx[r, :length] = s[:-1]
                    tgt[r, :length] = s[1:]
                    sel[r, length - scored : length] = True
                h = self.hidden(idx.to(self.device))
                sel = sel.to(self.device)
                lp, _, _ = self._token_scores(h[sel], tgt.to(self.device)[sel], want_greedy=False)
                nll -= lp.sum().item()
                n_tokens += lp.numel()
                bar.update(len(batch))
        return DocumentScore(nll=nll, n_tokens=n_tokens, n_windows=len(jobs))

    # -- continuations ---------------------------------------------------------

    @torch.inference_mode()
    def score(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
        banned: Sequence[int] | None = None,
        desc: str = "scoring",
    ) -> list[list[Scored]]:
        """Score each continuation of each `(context, [continuation, ...])` request.

        The context must hold at least one token (use <|endoftext|> to score a
        text from its start). Contexts too long for the model keep their last
        tokens. With `banned` token ids, each score also says whether its
        first token would still be the top choice with those ids removed
        (LAMBADA's stop-word filter).
        """
        B = self.block_size
        flat: list[tuple[int, int, list[int], list[int]]] = []  # (request, continuation, context, tokens)
        shared: list[int] = []
        for q, (context, conts) in enumerate(requests):
            context = [int(t) for t in context]
            conts = [[int(t) for t in c] for c in conts]
            if not context:
                raise GPT2Error("a scoring context must hold at least one token (start it with <|endoftext|>)")
            longest = max((len(c) for c in conts), default=0)
            if any(not c for c in conts):
                raise GPT2Error(f"request {q} has an empty continuation; there is nothing to score")
            if longest > B:
                raise GPT2Error(f"a continuation of {longest} tokens does not fit the model's context of {B} tokens")
            # single-token continuations need only the context's last position: always shared
            if len(conts) >= 2 and (len(context) >= SHARE_MIN_CONTEXT or longest == 1):
                shared.append(q)
            else:
                flat.extend((q, j, context, c) for j, c in enumerate(conts))
        out: list[list[Scored | None]] = [[None] * len(conts) for _, conts in requests]
        ban = None
        if banned is not None:
            ban = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            ban[torch.as_tensor(list(banned), dtype=torch.long)] = True
        total = len(flat) + sum(len(requests[q][1]) for q in shared)
        with _progress(total, desc, "seq", self.progress) as bar:
            self._score_flat(flat, out, ban, bar)
            self._score_shared([(q, *requests[q]) for q in shared], out, ban, bar)
        return out  # type: ignore[return-value]

    def _finish(self, out, keys, lp, greedy, filtered, lengths) -> None:
        lp, greedy = lp.cpu().numpy(), greedy.cpu().numpy()
        filtered = None if filtered is None else filtered.cpu().numpy()
        offset = 0
        for (q, j), n in zip(keys, lengths):
            out[q][j] = Scored(
                lp[offset : offset + n].copy(),
                greedy[offset : offset + n].copy(),
                None if filtered is None else filtered[offset : offset + n].copy(),
            )
            offset += n

    def _score_flat(self, items, out, ban, bar) -> None:
        """Each continuation run after its own context: sequences context + continuation[:-1]."""
        B = self.block_size
        seqs = []
        for q, j, context, cont in items:
            context = context[-(B - len(cont) + 1) :]  # keep the end of a context that does not fit
            seqs.append((q, j, context + cont[:-1], len(context), cont))
        seqs.sort(key=lambda s: -len(s[2]))
        i = 0
        while i < len(seqs):
            width = len(seqs[i][2])
            batch = seqs[i : i + max(1, self.batch_tokens // width)]
            i += len(batch)
            idx = torch.zeros(len(batch), width, dtype=torch.long)
            rows, cols, targets, first = [], [], [], []
            for r, (_, _, seq, n_ctx, cont) in enumerate(batch):
                idx[r, : len(seq)] = torch.tensor(seq)
                rows += [r] * len(cont)
                cols += range(n_ctx - 1, n_ctx - 1 + len(cont))
                targets += cont
                first += [True] + [False] * (len(cont) - 1)
            h = self.hidden(idx.to(self.device))
            h = h[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
            first_t = torch.tensor(first, device=self.device)
            lp, greedy, filtered = self._token_scores(h, torch.tensor(targets, device=self.device), first_t, ban)
            self._finish(out, [(s[0], s[1]) for s in batch], lp, greedy, filtered, [len(s[4]) for s in batch])
            bar.update(len(batch))

    def _kv_bytes_per_position(self) -> int:
        c = self.config
        return 2 * c.n_layer * c.n_embd * torch.finfo(self.dtype).bits // 8

    def _score_shared(self, items, out, ban, bar) -> None:
        """Contexts run once into a KV cache, then repeated (`KVCache.select`) for their continuations."""
        B = self.block_size
        prepared = []
        for q, context, conts in items:
            conts = [[int(t) for t in c] for c in conts]
            tail = max(len(c) for c in conts) - 1  # continuation tokens that are run as inputs
            context = [int(t) for t in context][-(B - tail) :]
            prepared.append((q, context, conts, tail))
        prepared.sort(key=lambda p: -len(p[1]))
        per_position = self._kv_bytes_per_position()
        i = 0
        while i < len(prepared):
            # grow the batch while the prefix pass, the continuation pass and the cache copies fit
            width = len(prepared[i][1])
            tail, rows, n = prepared[i][3], len(prepared[i][2]), 1
            while i + n < len(prepared):
                _, _, conts, t = prepared[i + n]
                new_tail, new_rows = max(tail, t), rows + len(conts)
                if (
                    width + new_tail > B
                    or (n + 1) * width > self.batch_tokens
                    or new_rows * max(new_tail, 1) > self.batch_tokens
                    or (n + 1 + new_rows) * (width + new_tail) * per_position > self.cache_bytes
                ):
                    break
                tail, rows, n = new_tail, new_rows, n + 1
            batch = prepared[i : i + n]
            i += n
            self._shared_batch(batch, width, tail, out, ban)
            bar.update(rows)

    def _shared_batch(self, batch, width: int, tail: int, out, ban) -> None:
        dev = self.device
        R = len(batch)
        idx = torch.zeros(R, width, dtype=torch.long)
        prefix_mask = torch.zeros(R, width, dtype=torch.long)
        for r, (_, context, _, _) in enumerate(batch):
            idx[r, : len(context)] = torch.tensor(context)
            prefix_mask[r, : len(context)] = 1
        cache = KVCache(self.config, R, width + tail, device=dev, dtype=self.dtype) if tail > 0 else None
        h_prefix = self.hidden(idx.to(dev), cache=cache)  # right padding: plain causal attention
        last = torch.tensor([len(b[1]) - 1 for b in batch], device=dev)
        h_last = h_prefix[torch.arange(R, device=dev), last]  # (R, C): predicts each continuation's first token

        # one row per continuation, sharing its request's cached context
        keys, row_of, conts = [], [], []
        for r, (q, _, cs, _) in enumerate(batch):
            for j, c in enumerate(cs):
                keys.append((q, j))
                row_of.append(r)
                conts.append(c)
        row_t = torch.tensor(row_of, device=dev)
        h_rest = None
        if tail > 0:
            ids = torch.zeros(len(conts), tail, dtype=torch.long)
            for k, c in enumerate(conts):
                ids[k, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            lengths = torch.tensor([len(b[1]) for b in batch], device=dev)[row_t]
            positions = lengths[:, None] + torch.arange(tail, device=dev)[None, :]
            mask = torch.cat([prefix_mask.to(dev)[row_t], torch.ones(len(conts), tail, dtype=torch.long, device=dev)], dim=1)
            h_rest = self.hidden(ids.to(dev), cache=cache.select(row_t), attention_mask=mask, positions=positions)

        hs, targets, first = [], [], []
        for k, c in enumerate(conts):
            hs.append(h_last[row_of[k] : row_of[k] + 1])
            if len(c) > 1:
                hs.append(h_rest[k, : len(c) - 1])
            targets += c
            first += [True] + [False] * (len(c) - 1)
        lp, greedy, filtered = self._token_scores(
            torch.cat(hs), torch.tensor(targets, device=dev), torch.tensor(first, device=dev), ban
        )
        self._finish(out, keys, lp, greedy, filtered, [len(c) for c in conts])
