"""Which prompts run together: grouping by a shared beginning, ordering, and batches under a token budget.

Generation (gpt2/sample.py), the evaluation tasks that generate
(gpt2/evaluate/generation.py) and the server (gpt2/serve/engine.py) batch
requests with these rules:

- `shared_prefixes`: prompts that begin alike (sorted by their tokens, so that
  they are neighbours) form groups whose common beginning runs once;
  `sharing_plan` says whether that pays for one batch;
- `batch_order` and `token_batches`: the order in which many prompts are
  batched (groups together, longest first) and the batches themselves, each
  padded to its longest prompt plus the new tokens within a token budget,
  never splitting a group that fits.
"""

from __future__ import annotations

from collections.abc import Sequence

# A beginning shared by several prompts of a batch runs once when it is at least this many tokens
# (shorter ones cost less to repeat than to run apart and copy into every row's cache).
SHARE_MIN_PREFIX = 32


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """len of the longest common prefix (slice comparisons in a bisection: C speed on long prompts)."""
    a, b = list(a), list(b)
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
            shared = min(m, common_length(prev, prompts[r]), len(prompts[r]) - 1)
            # joining: n rows share `shared` tokens; apart: n - 1 rows share m
            if shared >= min_shared and len(rows) * shared >= (len(rows) - 1) * m:
                groups[-1] = (shared, rows + [r])
                continue
        groups.append((len(prompts[r]) - 1, [r]))
    return [(m if len(rows) > 1 else 0, rows) for m, rows in groups]


def sharing_plan(contexts: list[list[int]], span: int, block_size: int) -> list[tuple[int, list[int]]] | None:
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


def batch_order(prompts: list[list[int]], todo: list[int]) -> tuple[list[int], list[int]]:
    """`todo` in the order of batching, and the group of each position in that order: groups of prompts
    that begin alike stay together (the groups longest first, each group's prompts longest first), so
    that a batch holds few lengths and its prompts' common beginnings run once."""
    groups = [[todo[r] for r in rows] for _, rows in shared_prefixes([prompts[i] for i in todo])]
    for g in groups:
        g.sort(key=lambda i: -len(prompts[i]))
    groups.sort(key=lambda g: -len(prompts[g[0]]))
    return [i for g in groups for i in g], [k for k, g in enumerate(groups) for _ in g]


def token_batches(prompts: list[list[int]], order: list[int], group: list[int], new_tokens: int, budget: int) -> list[list[int]]:
    """Split `order` (with each position's `group`, from `batch_order`) into batches: rows while the
    batch, padded to its longest prompt plus `new_tokens`, fits `budget` tokens (one row at least),
    ending a batch before a group it would split unless the group alone is larger."""
    batches, i = [], 0
    while i < len(order):
        n, longest = 1, len(prompts[order[i]])
        while i + n < len(order):
            wider = max(longest, len(prompts[order[i + n]]))
            if (n + 1) * (wider + new_tokens) > budget:
                break
            n, longest = n + 1, wider
        if i + n < len(order) and group[i + n] == group[i + n - 1] and group[i] != group[i + n - 1]:
            n = group.index(group[i + n - 1], i) - i  # end the batch before a group it would split
        batches.append(order[i : i + n])
        i += n
    return batches
