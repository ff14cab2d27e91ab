"""Fine-tuning heads and the model they make with a GPT (GPT-1 sections 3.2-3.3).

A head reads the final hidden state at each sequence's extract token ⟨e⟩:
dropout (0.1), then a linear layer W_y initialised from N(0, 0.02) with a zero
bias. `Classify` sums the states of an example's sequences first (one sequence,
or the two orders of a similarity pair) and gives a logit per class, or one
score for a regression (STS-B); `Choose` gives one logit per answer of a
multiple-choice question, the softmax running over the answers. Heads are
modules beside the network: the GPT itself is unchanged but for the three
added tokens' embedding rows.

`TaskModel` is the module that training runs: the task's loss L2 plus
lm_coef (λ = 0.5) times the language-model loss L1 on the same inputs, padding
excluded and the added tokens included as targets: L3 = L2 + λ L1.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2.model import GPT
from gpt2.train.loss import lm_loss


class _Head(nn.Module):
    def __init__(self, n_embd: int, n_out: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(n_embd, n_out)
        nn.init.normal_(self.linear.weight, 0.0, 0.02)
        nn.init.zeros_(self.linear.bias)


class Classify(_Head):
    """(B, n, C) extract states -> (B, classes) logits, or (B,) scores when `regression`."""

    def __init__(self, n_embd: int, classes: int, dropout: float = 0.1, regression: bool = False):
        super().__init__(n_embd, 1 if regression else classes, dropout)
        self.regression = regression

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        out = self.linear(self.dropout(states.sum(1)))  # the orders of a similarity pair added element-wise
        return out.squeeze(-1) if self.regression else out

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(scores.float(), labels.float())
        return F.cross_entropy(scores.float(), labels)

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.float() if self.regression else scores.argmax(-1)


class Choose(_Head):
    """(B, k, C) extract states of k answers -> (B, k) logits, a softmax over the answers."""

    regression = False

    def __init__(self, n_embd: int, dropout: float = 0.1):
        super().__init__(n_embd, 1, dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(states)).squeeze(-1)

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores.float(), labels)

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.argmax(-1)


class TaskModel(nn.Module):
    """A GPT and a head: forward gives (L3, {"task_loss": L2, "lm_loss": L1}) for a batch of `transforms.collate`."""

    def __init__(self, gpt: GPT, head: nn.Module, lm_coef: float = 0.5):
        super().__init__()
        self.gpt = gpt
        self.head = head
        self.lm_coef = lm_coef

    def scores(self, ids: torch.Tensor, extract: torch.Tensor) -> torch.Tensor:
        """The head's output for each example: logits, answer logits or scores."""
        return self._scores(self.gpt.hidden(ids), extract)

    def _scores(self, hidden: torch.Tensor, extract: torch.Tensor) -> torch.Tensor:
        B, n = extract.shape
        rows = torch.arange(B * n, device=hidden.device)
        states = hidden[rows, extract.reshape(-1)]  # (B * n, C): the final hidden state at each ⟨e⟩
        return self.head(states.view(B, n, -1))

    def forward(self, ids, extract, lm_targets=None, labels=None):
        """With labels: (L3, its parts) for training. Without: the scores (what `scores` gives), so that
        evaluation too goes through forward, which DDP and FSDP2 wrap."""
        hidden = self.gpt.hidden(ids)  # (B * n, T, C)
        if labels is None:
            return self._scores(hidden, extract)
        task = self.head.loss(self._scores(hidden, extract), labels)
        if not self.lm_coef:
            return task, {"task_loss": task.detach()}
        real = lm_targets >= 0
        lm = lm_loss(hidden[real], self.gpt.lm_head.weight, lm_targets[real], self.gpt.config.vocab_size)
        return task + self.lm_coef * lm, {"task_loss": task.detach(), "lm_loss": lm.detach()}
