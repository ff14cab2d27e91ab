"""The task table of the zero-shot suite: names, datasets, and what each task hands back.

A task is a plain function `run(ctx: Context) -> TaskOutput`, named here as
"module:function" so that listing tasks (and validating `--tasks`) imports
neither torch nor the datasets. Tasks live by kind:

    language_modeling   WikiText-2/-103, PTB, 1BW, enwik8, text8 (Table 3)
    cloze               LAMBADA, CBT, WSC273 (Table 3, section 3.3-3.4) and the
                        GPT-1 zero-shot heuristics (SST-2, CoLA, RACE, Story Cloze)
    generation          CoQA, CNN/Daily Mail, WMT-14, Natural Questions (sections 3.5-3.8)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    run: str
    """"module:function" taking a Context"""
    sources: tuple[str, ...]
    """keys of gpt2.evaluate.datasets.SOURCES the task reads"""
    kind: str
    """'lm', 'score' or 'generate'"""
    settings: tuple[str, ...] = ()
    """EvalConfig fields that change this task's numbers (part of its cache key)"""


_LM = ("limit", "windows", "stride")
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("lambada", "LAMBADA", "gpt2.evaluate.cloze:lambada", ("lambada-test",), "score", ("limit",)),
        Task("cbt-cn", "CBT-CN", "gpt2.evaluate.cloze:cbt_cn", ("cbt-cn-valid",), "score", ("limit",)),
        Task("cbt-ne", "CBT-NE", "gpt2.evaluate.cloze:cbt_ne", ("cbt-ne-valid",), "score", ("limit",)),
        Task("wikitext2", "WikiText-2", "gpt2.evaluate.language_modeling:wikitext2", ("wikitext2-test",), "lm", _LM),
        Task("ptb", "PTB", "gpt2.evaluate.language_modeling:ptb", ("ptb-test",), "lm", _LM),
        Task("enwik8", "enwik8", "gpt2.evaluate.language_modeling:enwik8", ("enwik8",), "lm", _LM),
        Task("text8", "text8", "gpt2.evaluate.language_modeling:text8", ("text8",), "lm", _LM),
        Task("wikitext103", "WikiText-103", "gpt2.evaluate.language_modeling:wikitext103", ("wikitext103-test",), "lm", _LM),
        Task("1bw", "1BW", "gpt2.evaluate.language_modeling:one_billion_word", ("1bw-test",), "lm", _LM),
        Task("wsc273", "Winograd Schema Challenge (WSC273)", "gpt2.evaluate.cloze:wsc273", ("wsc273",), "score", ("limit",)),
        Task("coqa", "CoQA", "gpt2.evaluate.generation:coqa", ("coqa-dev",), "generate", ("limit",)),
        Task(
            "cnndm", "CNN / Daily Mail (TL;DR:)", "gpt2.evaluate.generation:cnndm", ("cnndm-stories", "cnndm-test-urls"), "generate",
            ("limit", "seed"),
        ),
        Task(
            "wmt14-en-fr", "WMT-14 English -> French", "gpt2.evaluate.generation:wmt14_en_fr", ("wmt14-en-fr-src", "wmt14-en-fr-ref"),
            "generate", ("limit", "wmt_shots"),
        ),
        Task(
            "wmt14-fr-en", "WMT-14 French -> English", "gpt2.evaluate.generation:wmt14_fr_en", ("wmt14-fr-en-src", "wmt14-fr-en-ref"),
            "generate", ("limit", "wmt_shots"),
        ),
        Task("nq", "Natural Questions (open, dev)", "gpt2.evaluate.generation:natural_questions", ("nq-open-dev",), "generate", ("limit", "nq_shots")),
        Task("sst2", "SST-2 (GPT-1 heuristic)", "gpt2.evaluate.cloze:sst2", ("sst2-dev",), "score", ("limit",)),
        Task("cola", "CoLA (GPT-1 heuristic)", "gpt2.evaluate.cloze:cola", ("cola-in-domain-dev", "cola-out-of-domain-dev"), "score", ("limit", "cola_threshold")),
        Task("race", "RACE (GPT-1 heuristic)", "gpt2.evaluate.cloze:race", ("race-test",), "score", ("limit",)),
        Task("story-cloze", "Story Cloze (GPT-1 heuristic)", "gpt2.evaluate.cloze:story_cloze", ("story-cloze-val",), "score", ("limit",)),
    ]
}

GROUPS: dict[str, tuple[str, ...]] = {
    "table3": ("lambada", "cbt-cn", "cbt-ne", "wikitext2", "ptb", "enwik8", "text8", "wikitext103", "1bw"),
    "generation": ("coqa", "cnndm", "wmt14-en-fr", "wmt14-fr-en", "nq"),
    "gpt1": ("sst2", "cola", "race", "story-cloze"),
    "paper": (),  # filled below: every task of the GPT-2 paper
    "all": tuple(TASKS),
}
GROUPS["paper"] = GROUPS["table3"] + ("wsc273",) + GROUPS["generation"]


def expand(names: list[str]) -> list[str]:
    """Task and group names -> task names, in order, without repeats. Unknown names raise ValueError."""
    out: list[str] = []
    for name in names:
        name = name.strip().lower()
        if name in GROUPS:
            out += [t for t in GROUPS[name] if t not in out]
        elif name in TASKS:
            if name not in out:
                out.append(name)
        else:
            raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}; groups: {', '.join(GROUPS)}")
    return out


# ----------------------------------------------------------------------------
# what a task receives and returns


@dataclass
class Context:
    """Everything a task needs: the model, its tokenizer, the scorer, the files and the settings."""

    model: Any
    tokenizer: Any
    scorer: Any
    """a gpt2.evaluate.scoring.Scorer over `model`"""
    files: dict[str, Path]
    """source key -> local path (already verified)"""
    config: Any
    """the EvalConfig (limit, windows, stride, seed, shots, ...)"""
    generate: Callable | None = None
    """gpt2.sample.generate or a function with its signature (generation tasks only)"""
    progress: bool | None = None
    partial: Path | None = None
    """where generation tasks append each finished prompt's tokens, so an interrupted task resumes there"""

    @property
    def eot(self) -> int:
        return self.tokenizer.eot_token

    def limited(self, items: list) -> list:
        limit = self.config.limit
        return items[:limit] if limit else items

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Encode texts as ordinary text (a literal '<|endoftext|>' in a dataset stays text)."""
        return self.tokenizer.encode_batch(list(texts), disallowed_special=())


@dataclass
class Metric:
    id: str
    """stable key, e.g. 'acc', 'acc-last-token', 'ppl', 'ppl-sliding'"""
    name: str
    """what is measured, e.g. 'accuracy'"""
    variant: str
    """exactly how: scoring rule, windows, normalisation, references"""
    value: float
    unit: str = ""
    """'%', 'ppl', 'bpb', 'bpc', 'F1', 'BLEU', ..."""
    lower_is_better: bool = False

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "name", "variant", "value", "unit", "lower_is_better")}


@dataclass
class TaskOutput:
    metrics: list[Metric]
    n_examples: int
    """examples (or documents) evaluated"""
    tokens_scored: int
    """BPE tokens whose probability entered a metric, or tokens generated"""
    details: dict = field(default_factory=dict)
    """anything else a reader needs: unit counts, truncations, a metric's signature"""
    samples: list[dict] = field(default_factory=list)
    """per-example predictions, written beside the results for inspection"""
