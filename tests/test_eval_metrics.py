"""Metrics against hand-computed values and the reference packages (rouge-score, sacrebleu)."""

from __future__ import annotations

import math
import random

import pytest

from gpt2.evaluate import metrics as M


# ----------------------------------------------------------------------------- SQuAD / CoQA


@pytest.mark.parametrize(
    "text, want",
    [
        ("The  Denver Broncos!", "denver broncos"),
        ("an apple, a pear and THE fig.", "apple pear and fig"),
        ("theatre another", "theatre another"),  # articles only as whole words
        ("  ", ""),
        ("U.S.-born", "usborn"),
    ],
)
def test_squad_normalisation(text, want):
    assert M.normalize_answer(text) == want


@pytest.mark.parametrize(
    "pred, ref, em, f1",
    [
        ("Denver Broncos", "the Denver Broncos", 1.0, 1.0),
        ("Denver", "Denver Broncos", 0.0, 2 * 1.0 * 0.5 / 1.5),
        ("the cat sat on the mat", "a cat sat on a mat", 1.0, 1.0),
        ("x x y", "x y y", 0.0, 2 / 3),  # bag of words: each shared token counts at most min(count) times
        ("cat", "dog", 0.0, 0.0),
        ("Saint Bernadette Soubirous", "Saint Bernadette", 0.0, 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)),
        ("the", "a", 1.0, 1.0),  # both normalise to nothing
        ("the", "cat", 0.0, 0.0),
    ],
)
def test_exact_match_and_f1(pred, ref, em, f1):
    assert M.exact_match(pred, ref) == em
    assert M.token_f1(pred, ref) == pytest.approx(f1)


def test_max_over_references_and_coqa_leave_one_out():
    refs = ["alpha beta", "beta gamma", "x"]
    assert M.max_over_references(M.token_f1, "beta gamma", refs) == 1.0
    assert M.max_over_references(M.token_f1, "alpha", refs) == pytest.approx(2 / 3)
    # leaving out each reference in turn: 1 (b c still there), 0.5, 1, 1
    assert M.leave_one_out(M.token_f1, "beta gamma", ["alpha beta", "beta gamma", "gamma delta", "x"]) == pytest.approx(0.875)
    assert M.leave_one_out(M.token_f1, "b c", ["b c"]) == 1.0


# ----------------------------------------------------------------------------- ROUGE, BLEU


def test_rouge_by_hand():
    got = M.rouge(["the cat sat"], ["the cat ran away"])
    assert got["rouge1"] == pytest.approx(100 * 4 / 7)  # P 2/3, R 2/4
    assert got["rouge2"] == pytest.approx(100 * 0.4)  # P 1/2, R 1/3
    assert got["rougeL"] == pytest.approx(100 * 4 / 7)  # LCS "the cat"


def test_rouge_is_the_mean_of_rouge_score():
    from rouge_score import rouge_scorer

    preds = ["Police arrested two men.\nThey were charged.", "Stocks rose sharply on Monday", "nothing in common"]
    refs = ["Two men were arrested by police.\nCharges were filed.", "Stock markets rising on Monday", "completely different words"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(r, p) for p, r in zip(preds, refs)]
    got = M.rouge(preds, refs)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert got[name] == pytest.approx(100 * sum(d[name].fmeasure for d in direct) / 3)
    assert got["rouge1"] > 0  # stemming: "arrested"/"arrested", "rose"/"rising" share no stem, "stocks"/"stock" do


def test_bleu_matches_sacrebleu_and_records_its_signature():
    import sacrebleu

    hyps = ["Le chat est assis sur le tapis.", "Il pleut aujourd'hui.", "Bonjour le monde"]
    refs = ["Le chat était assis sur le tapis.", "Il pleut beaucoup aujourd'hui.", "Bonjour tout le monde"]
    score, signature = M.bleu(hyps, refs)
    assert score == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert M.bleu(refs, refs)[0] == pytest.approx(100.0)
    assert "tok:13a" in signature and "nrefs:1" in signature and "smooth:exp" in signature and "version:" in signature


# ----------------------------------------------------------------------------- MCC, thresholds, sentences


def test_matthews_correlation():
    assert M.matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12))
    assert M.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert M.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == -1.0
    assert M.matthews_corrcoef([1, 0, 1], [1, 1, 1]) == 0.0  # a constant prediction carries no information


def test_matthews_correlation_against_its_formula_on_random_data():
    import numpy as np

    rng = random.Random(0)
    y = [rng.randint(0, 1) for _ in range(500)]
    p = [rng.randint(0, 1) if rng.random() < 0.5 else t for t in y]
    # Pearson correlation of the two binary vectors is the MCC
    assert M.matthews_corrcoef(y, p) == pytest.approx(float(np.corrcoef(y, p)[0, 1]))


def test_best_threshold_is_the_best():
    rng = random.Random(1)
    labels = [rng.randint(0, 1) for _ in range(200)]
    scores = [rng.gauss(0.5 * y, 1.0) for y in labels]
    t, m = M.best_threshold(scores, labels)
    assert m == pytest.approx(M.matthews_corrcoef(labels, [int(s >= t) for s in scores]))
    for s in scores:  # no observed score makes a better cut
        assert M.matthews_corrcoef(labels, [int(x >= s) for x in scores]) <= m + 1e-12


@pytest.mark.parametrize(
    "text, want",
    [
        ('He left. "Why?" she asked.\nThe end', ["He left.", '"Why?"', "she asked.", "The end"]),
        ("One! Two? Three.", ["One!", "Two?", "Three."]),
        ("Dr. No", ["Dr.", "No"]),  # abbreviations are not special-cased
        ("3.14 is pi", ["3.14 is pi"]),
        ("", []),
    ],
)
def test_split_sentences(text, want):
    assert M.split_sentences(text) == want
