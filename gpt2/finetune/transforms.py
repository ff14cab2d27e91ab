"""GPT-1's input transforms (section 3.3, Figure 1): a task's example as token sequences, and batches of them.

Three tokens are added to the vocabulary: start ⟨s⟩, delimiter $ and extract
⟨e⟩ (`SPECIAL_TOKENS`). An example becomes one or more sequences, each ending
in ⟨e⟩, whose final hidden state the task's head reads:

    classification    ⟨s⟩ text ⟨e⟩
    entailment        ⟨s⟩ premise $ hypothesis ⟨e⟩
    similarity        ⟨s⟩ a $ b ⟨e⟩  and  ⟨s⟩ b $ a ⟨e⟩
    multiple choice   ⟨s⟩ context [question] $ answer_k ⟨e⟩   for each answer k (the question after a line break)

Texts are encoded as ordinary text (a text that spells a special token cannot
produce one). An example longer than the context is never dropped: its longest
segment loses tokens until the sequence fits, from its end, except a
multiple-choice context, which keeps its end (the part next to the question and
the answer). Each truncated example is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gpt2.errors import GPT2Error
from gpt2.finetune.tasks import Example, TaskSpec
from gpt2.tokenizer import Tokenizer

SPECIAL_TOKENS = ("<|start|>", "<|delim|>", "<|extract|>")
"""GPT-1's start, delimiter and extract tokens, as this project spells them"""


@dataclass
class Encoded:
    """An example's token sequences (each ending in ⟨e⟩) and its label."""

    sequences: list[list[int]]
    label: int | float | None
    truncated: bool = False


def _fit(segments: list[list[int]], budget: int, keep_end: set[int]) -> tuple[list[list[int]], bool]:
    """Shorten the longest segment a token at a time until the lengths add up to at most `budget`
    (segments in `keep_end` lose their beginning, the others their end); returns (segments, whether any was cut)."""
    lengths = [len(s) for s in segments]
    excess = sum(lengths) - budget
    if excess <= 0:
        return segments, False
    if budget < len(segments):
        raise GPT2Error(f"the context leaves {budget} tokens for {len(segments)} texts; use a model with a longer context")
    while excess > 0:
        i = max(range(len(lengths)), key=lengths.__getitem__)
        lengths[i] -= 1
        excess -= 1
    return [s[len(s) - n :] if i in keep_end else s[:n] for i, (s, n) in enumerate(zip(segments, lengths))], True


class Transform:
    """Turns a task's examples into token sequences for a model with `max_len` positions."""

    def __init__(self, spec: TaskSpec, tokenizer: Tokenizer, max_len: int):
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.special_tokens]
        if missing:
            raise GPT2Error(f"the tokenizer has no {missing[0]} token; fine-tuning adds it (Tokenizer.add_special_tokens)")
        self.spec = spec
        self.tok = tokenizer
        self.start, self.delim, self.extract = (tokenizer.special_tokens[t] for t in SPECIAL_TOKENS)
        self.max_len = max_len

    def encode(self, example: Example) -> Encoded:
        kind = self.spec.kind
        texts = example.texts
        if kind == "multiple_choice" and len(texts) == 2:  # context and question: the question on a line of its own
            texts = (texts[0], "\n" + texts[1])
        enc = [self.tok.encode_ordinary(t) for t in texts]
        if kind == "classification":
            (text,), cut = _fit(enc, self.max_len - 2, set())
            return Encoded([[self.start, *text, self.extract]], example.label, cut)
        if kind in ("entailment", "similarity"):
            (a, b), cut = _fit(enc, self.max_len - 3, set())
            first = [self.start, *a, self.delim, *b, self.extract]
            if kind == "entailment":
                return Encoded([first], example.label, cut)
            return Encoded([first, [self.start, *b, self.delim, *a, self.extract]], example.label, cut)
        sequences, cut = [], False
        for answer in example.choices:  # multiple choice
            parts, c = _fit([*enc, self.tok.encode_ordinary(answer)], self.max_len - 3, {0})
            *context, ans = parts
            sequences.append([self.start, *(t for part in context for t in part), self.delim, *ans, self.extract])
            cut |= c
        return Encoded(sequences, example.label, cut)

    def encode_all(self, examples: list[Example]) -> tuple[list[Encoded], int]:
        """Every example encoded, and how many were truncated."""
        encoded = [self.encode(e) for e in examples]
        return encoded, sum(e.truncated for e in encoded)


def collate(batch: list[Encoded], pad: int, regression: bool) -> dict[str, torch.Tensor]:
    """A batch as tensors: ids (B * n, T) right-padded, extract (B, n) the ⟨e⟩ positions, lm_targets (B * n, T)
    the next token of every position that has one (-1 at padding and at ⟨e⟩), labels (B,) if the batch has them.

    Padding sits after ⟨e⟩, so with causal attention it changes nothing before it: no attention mask is needed.
    """
    sequences = [s for e in batch for s in e.sequences]
    n = len(batch[0].sequences)
    T = max(len(s) for s in sequences)
    ids = np.full((len(sequences), T), pad, dtype=np.int64)
    targets = np.full((len(sequences), T), -1, dtype=np.int64)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = s
        targets[i, : len(s) - 1] = s[1:]
    out = {
        "ids": torch.from_numpy(ids),
        "extract": torch.tensor([len(s) - 1 for s in sequences], dtype=torch.long).view(len(batch), n),
        "lm_targets": torch.from_numpy(targets),
    }
    if all(e.label is not None for e in batch):
        out["labels"] = torch.tensor([e.label for e in batch], dtype=torch.float32 if regression else torch.long)
    return out
