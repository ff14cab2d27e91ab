"""The fine-tuning tasks' metrics, as GLUE and the GPT-1 paper report them (GPT-1 Tables 2-4).

accuracy (most tasks), Matthews correlation (CoLA), F1 of the positive class
with accuracy (MRPC, QQP), Pearson and Spearman correlation (STS-B). Written
here in numpy (a few lines each; the Matthews correlation is the zero-shot
suite's) rather than importing scikit-learn and SciPy for them; tests/test_finetune_metrics.py checks each against those libraries.
Values are percentages, as the paper prints them (a correlation of 0.454 is 45.4).

>>> round(matthews([1, 1, 0, 0], [1, 0, 0, 0]), 1)
57.7
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpt2.evaluate.metrics import matthews_corrcoef


def accuracy(labels: Sequence, predictions: Sequence) -> float:
    y, p = np.asarray(labels), np.asarray(predictions)
    return 100.0 * float(np.mean(y == p)) if len(y) else 0.0


def f1(labels: Sequence[int], predictions: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (MRPC and QQP: "is a paraphrase / duplicate")."""
    y, p = np.asarray(labels) == positive, np.asarray(predictions) == positive
    tp = float(np.sum(y & p))
    denominator = float(np.sum(y) + np.sum(p))
    return 100.0 * 2 * tp / denominator if denominator else 0.0


def matthews(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary labels (CoLA); 0 when a class is never predicted or present.
    The same function as CoLA's zero-shot heuristic (gpt2/evaluate/metrics.py), as a percentage."""
    return 100.0 * matthews_corrcoef([int(y) for y in labels], [int(p) for p in predictions])


def pearson(labels: Sequence[float], predictions: Sequence[float]) -> float:
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(predictions, dtype=np.float64)
    y, p = y - y.mean(), p - p.mean()
    denominator = np.sqrt(np.sum(y * y) * np.sum(p * p))
    return 100.0 * float(np.sum(y * p) / denominator) if denominator else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def spearman(labels: Sequence[float], predictions: Sequence[float]) -> float:
    """Pearson correlation of the ranks (ties averaged)."""
    return pearson(_ranks(np.asarray(labels, dtype=np.float64)), _ranks(np.asarray(predictions, dtype=np.float64)))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": matthews, "pearson": pearson, "spearman": spearman}
"""name -> function(labels, predictions)"""
