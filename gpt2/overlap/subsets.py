"""The metrics of `gpt2 eval` recomputed on a subset of a task's examples (GPT-2 paper, section 4).

The paper asks whether overlap explains the results: on LAMBADA, dropping
every example with any overlap moves accuracy from 63.2% to 62.9%. Given a
`gpt2 eval` output folder, each task's per-example records
(`tasks/NAME-KEY.samples.jsonl`, in the order the examples were scored) are
enough to recompute its metrics on any subset, with the same definitions as
gpt2/evaluate/cloze.py and generation.py:

    lambada      acc, acc-last-token, acc-stopword-filter, ppl
    cbt-*        acc                   wsc273       acc-partial, acc-full
    sst2, race, story-cloze   acc      cola         mcc, acc (at the run's threshold)
    coqa         f1, f1-loo, em        cnndm        rouge1/2/L with and without "TL;DR:" (not the baselines)
    wmt14-*      bleu                  nq           em, em-top1pct

On all examples the numbers equal those `gpt2 eval` reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gpt2.evaluate import metrics as M


def _pct(flags: list) -> float:
    return 100.0 * sum(bool(f) for f in flags) / len(flags) if flags else float("nan")


def _lambada(samples: list[dict], record: dict) -> dict[str, float]:
    return {
        "acc": _pct([s["greedy"] for s in samples]),
        "acc-last-token": _pct([s["greedy_last_token"] for s in samples]),
        "acc-stopword-filter": _pct([s["greedy_stopword_filter"] for s in samples]),
        "ppl": math.exp(-sum(s["logprob"] for s in samples) / len(samples)) if samples else float("nan"),
    }


def _picks(samples: list[dict], record: dict) -> dict[str, float]:
    return {"acc": _pct([s["pick"] == s["answer"] for s in samples])}


def _wsc273(samples: list[dict], record: dict) -> dict[str, float]:
    return {"acc-partial": _pct([s["partial"] == s["answer"] for s in samples]),
            "acc-full": _pct([s["full"] == s["answer"] for s in samples])}


def _cola(samples: list[dict], record: dict) -> dict[str, float]:
    threshold = record["details"]["threshold"]
    labels = [s["label"] for s in samples]
    preds = [int(s["score"] >= threshold) for s in samples]
    return {"mcc": 100 * M.matthews_corrcoef(labels, preds), "acc": _pct([p == y for p, y in zip(preds, labels)])}


def _coqa(samples: list[dict], record: dict) -> dict[str, float]:
    if not samples:
        return {"f1": float("nan"), "f1-loo": float("nan"), "em": float("nan")}
    n = len(samples)
    return {
        "f1": 100 * sum(M.max_over_references(M.token_f1, s["answer"], s["references"]) for s in samples) / n,
        "f1-loo": 100 * sum(M.leave_one_out(M.token_f1, s["answer"], s["references"]) for s in samples) / n,
        "em": 100 * sum(M.max_over_references(M.exact_match, s["answer"], s["references"]) for s in samples) / n,
    }


def _cnndm(samples: list[dict], record: dict) -> dict[str, float]:
    if not samples:
        return {}
    refs = [s["reference"] for s in samples]
    out = {}
    for prefix, field in (("", "summary"), ("no-hint-", "no_hint")):
        for name, value in M.rouge([s[field] for s in samples], refs).items():
            out[prefix + name] = value
    return out


def _wmt(samples: list[dict], record: dict) -> dict[str, float]:
    if not samples:
        return {"bleu": float("nan")}
    return {"bleu": M.bleu([s["hypothesis"] for s in samples], [s["reference"] for s in samples])[0]}


def _nq(samples: list[dict], record: dict) -> dict[str, float]:
    if not samples:
        return {"em": float("nan"), "em-top1pct": float("nan")}
    correct = [M.max_over_references(M.exact_match, s["answer"], s["references"]) for s in samples]
    top = max(1, math.ceil(len(samples) / 100))
    best = sorted(range(len(samples)), key=lambda i: -samples[i]["logprob"])[:top]
    return {"em": 100 * sum(correct) / len(samples), "em-top1pct": 100 * sum(correct[i] for i in best) / top}


RECOMPUTE: dict[str, tuple[Callable[[list[dict], dict], dict[str, float]], tuple[str, ...]]] = {
    "lambada": (_lambada, ("greedy", "greedy_last_token", "greedy_stopword_filter", "logprob")),
    "cbt-cn": (_picks, ("pick", "answer")),
    "cbt-ne": (_picks, ("pick", "answer")),
    "wsc273": (_wsc273, ("full", "partial", "answer")),
    "sst2": (_picks, ("pick", "answer")),
    "race": (_picks, ("pick", "answer")),
    "story-cloze": (_picks, ("pick", "answer")),
    "cola": (_cola, ("score", "label")),
    "coqa": (_coqa, ("answer", "references")),
    "cnndm": (_cnndm, ("summary", "no_hint", "reference")),
    "wmt14-en-fr": (_wmt, ("hypothesis", "reference")),
    "wmt14-fr-en": (_wmt, ("hypothesis", "reference")),
    "nq": (_nq, ("answer", "references", "logprob")),
}
"""task -> (metrics of a list of per-example records, the fields each record needs)"""


def missing_fields(task: str, samples: list[dict]) -> list[str]:
    """The fields RECOMPUTE needs that the records lack (written by an older `gpt2 eval`)."""
    need = RECOMPUTE[task][1]
    return sorted({f for s in samples for f in need if f not in s})


def recompute(task: str, samples: list[dict], record: dict) -> dict[str, float]:
    """The task's metrics on these examples' records (`record` is the task's entry of results.json)."""
    return RECOMPUTE[task][0](samples, record)
