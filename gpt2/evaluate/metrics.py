"""Metrics of the zero-shot suite, each the public definition its benchmark uses.

* SQuAD answer normalisation, exact match and token F1 (Rajpurkar et al.
  2016, the official evaluate-v1.1 script; CoQA's script uses the same
  normalisation), with CoQA's leave-one-out averaging over references.
* ROUGE-1/2/L F1 via Google's `rouge-score` package (the reimplementation of
  ROUGE-1.5.5 most summarisation papers now report), Porter stemming on.
* BLEU via `sacrebleu` (Post 2018), whose signature pins tokenisation and
  smoothing so scores are comparable.
* Matthews correlation (CoLA's GLUE metric) and the sentence splitter used to
  keep the first three generated sentences of a summary.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a / an / the, collapse white space (SQuAD)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (bag of words)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty ("unknown" answers normalise to words, so rare)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_over_references(metric, prediction: str, references: Sequence[str]) -> float:
    return max(metric(prediction, r) for r in references)


def leave_one_out(metric, prediction: str, references: Sequence[str]) -> float:
    """CoQA's official averaging: the mean, over each reference left out, of the max over the others.

    This puts a system on the same footing as a human answer, which is scored
    against the other references only. With a single reference it is the plain score.
    """
    if len(references) < 2:
        return max_over_references(metric, prediction, references)
    scores = [max_over_references(metric, prediction, references[:i] + references[i + 1 :]) for i in range(len(references))]
    return sum(scores) / len(scores)


# ---------------------------------------------------------------------------- summaries

# a sentence ends at . ! or ? (possibly followed by closing quotes or brackets) before white space
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]\u201d\u2019]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ., ! or ? followed by white space; newlines also end a sentence.

    >>> split_sentences('He left. "Why?" she asked.\\nThe end')
    ['He left.', '"Why?"', 'she asked.', 'The end']
    """
    out = []
    for line in text.splitlines():
        pos = 0
        for m in _SENTENCE_END.finditer(line):
            out.append(line[pos : m.start() + len(m.group(0).rstrip())].strip())
            pos = m.end()
        out.append(line[pos:].strip())
    return [s for s in out if s]


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (in %) over pairs; sentences may be separated by newlines."""
    from rouge_score import rouge_scorer

    absl = logging.getLogger("absl")  # rouge-score announces "Using default tokenizer." at INFO on every scorer
    level = absl.level
    absl.setLevel(max(level, logging.WARNING))
    try:
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    finally:
        absl.setLevel(level)
    totals = Counter()
    for p, r in zip(predictions, references, strict=True):
        for name, s in scorer.score(r, p).items():
            totals[name] += s.fmeasure
    n = max(len(predictions), 1)
    return {name: 100 * totals[name] / n for name in ("rouge1", "rouge2", "rougeL")}


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus BLEU with sacrebleu's defaults (13a tokenisation, exp smoothing) and its signature."""
    from sacrebleu.metrics import BLEU

    metric = BLEU()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return score.score, str(metric.get_signature())


# ---------------------------------------------------------------------------- classification


def matthews_corrcoef(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary labels (0 when a row or column of the table is empty)."""
    tp = sum(1 for y, p in zip(labels, predictions) if y and p)
    tn = sum(1 for y, p in zip(labels, predictions) if not y and not p)
    fp = sum(1 for y, p in zip(labels, predictions) if not y and p)
    fn = sum(1 for y, p in zip(labels, predictions) if y and not p)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """The threshold t (predict 1 when score >= t) that maximises the Matthews correlation, and that value.

    Candidates are the midpoints between consecutive distinct scores, plus one
    below all of them; ties go to the lowest threshold.
    """
    distinct = sorted(set(scores))
    candidates = [distinct[0] - 1.0] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])]
    best = (candidates[0], -2.0)
    for t in candidates:
        m = matthews_corrcoef(labels, [int(s >= t) for s in scores])
        if m > best[1]:
            best = (t, m)
    return best
