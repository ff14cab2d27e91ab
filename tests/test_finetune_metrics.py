"""The fine-tuning metrics (gpt2/finetune/metrics.py) against scikit-learn and SciPy, on random and edge-case data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from gpt2.finetune import metrics as M


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)  # mostly right, as a trained model is
    assert M.accuracy(y, p) == pytest.approx(100 * sk.accuracy_score(y, p))
    assert M.f1(y, p) == pytest.approx(100 * sk.f1_score(y, p, zero_division=0))
    assert M.matthews(y, p) == pytest.approx(100 * sk.matthews_corrcoef(y, p))
    three = rng.integers(0, 3, n)  # MNLI's three classes
    guess = rng.integers(0, 3, n)
    assert M.accuracy(three, guess) == pytest.approx(100 * sk.accuracy_score(three, guess))


def test_edge_cases_match_scikit_learn():
    y, constant = [1, 0, 1, 1], [1, 1, 1, 1]
    assert M.matthews(y, constant) == 100 * sk.matthews_corrcoef(y, constant) == 0.0  # one class predicted: 0, not NaN
    assert M.f1([0, 0], [0, 0]) == 100 * sk.f1_score([0, 0], [0, 0], zero_division=0) == 0.0
    assert M.accuracy([], []) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, 300) * 5) / 5  # STS-B scores come in steps of 0.2: many ties
    pred = gold + rng.normal(0, 1.0, 300)
    assert M.pearson(gold, pred) == pytest.approx(100 * stats.pearsonr(gold, pred).statistic)
    assert M.spearman(gold, pred) == pytest.approx(100 * stats.spearmanr(gold, pred).statistic)
    tied = np.round(pred)  # ties on both sides
    assert M.spearman(gold, tied) == pytest.approx(100 * stats.spearmanr(gold, tied).statistic)
