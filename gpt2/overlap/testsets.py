"""The text of each evaluation task, read as `gpt2 eval` reads it, for the overlap study (GPT-2 paper, section 4).

A test set has documents (whose n-grams make up its Table 6 percentage;
n-grams never cross them) and, for the cloze and generation tasks, examples
in the order `gpt2 eval` scores them, each with the text that belongs to it:
its input and its right answer, as published.

    task                     documents                           an example
    wikitext2/103, ptb       the de-tokenized test file          —
    1bw                      each de-tokenized test sentence     —
    enwik8 / text8           the last 5M bytes / characters      —
    lambada                  each de-tokenized passage           the passage (context and last word)
    cbt-cn / cbt-ne          each question                       20 sentences + the query with the answer in place
    wsc273                   each schema                         the sentence, with its pronoun
    coqa                     each story with all its turns       the story, a question and its answers
    cnndm                    each test story                     the article and its highlights
    wmt14-*                  each sentence pair                  the source and the reference
    nq                       each question                       the question and its answers
    sst2 / cola              each sentence                       the sentence
    race                     each question                       the article, the question, the right option
    story-cloze              each story                          the four sentences and the right ending

The few-shot examples of WMT-14 and Natural Questions (the first ones of
the file, which `gpt2 eval` puts in every prompt and does not score) are
examples here too; `first_scored` says how many come before the first one
`gpt2 eval` scores. Files are found and verified by `gpt2.evaluate.datasets.locate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.evaluate import datasets as D
from gpt2.evaluate import detokenize
from gpt2.evaluate.language_modeling import TEST_TAIL
from gpt2.evaluate.tasks import TASKS, expand


@dataclass
class TestSet:
    name: str
    title: str
    kind: str
    """'lm', 'score' or 'generate' (as the task), 'file' for other inputs"""
    documents: list[str]
    examples: list[str] | None = None
    """per-example text in `gpt2 eval`'s order; None for the language-modelling tasks"""
    sources: list[dict] = field(default_factory=list)
    """what was read: {"source", "path", "sha256"}"""
    first_scored: dict[str, int] = field(default_factory=dict)
    """per EvalConfig setting: the examples before the first scored one equal that setting (shots)"""


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _whole(source: str, detok: Callable[[str], str]) -> Callable[[dict[str, Path]], tuple[list[str], None]]:
    def read(files: dict[str, Path]) -> tuple[list[str], None]:
        return [detok(D.read_text(files[source]))], None

    return read


def _one_billion_word(files: dict[str, Path]) -> tuple[list[str], None]:
    return [detokenize.one_billion_word(line) for line in _lines(D.read_text(files["1bw-test"]))], None


def _tail(source: str, encoding: str) -> Callable[[dict[str, Path]], tuple[list[str], None]]:
    def read(files: dict[str, Path]) -> tuple[list[str], None]:
        data = files[source].read_bytes()
        if len(data) < TEST_TAIL:
            raise GPT2Error(f"{files[source]} has {len(data):,} bytes; the test split is its last {TEST_TAIL:,}")
        return [data[-TEST_TAIL:].decode(encoding, errors="replace")], None

    return read


def _same(examples: list[str]) -> tuple[list[str], list[str]]:
    return examples, examples


def _lambada(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([detokenize.lambada(p) for p in D.load_lambada(files["lambada-test"])])


def _cbt(source: str) -> Callable[[dict[str, Path]], tuple[list[str], list[str]]]:
    def read(files: dict[str, Path]) -> tuple[list[str], list[str]]:
        return _same([
            detokenize.cbt(" ".join(ex.context)) + " " + detokenize.cbt(ex.query.replace("XXXXX", ex.candidates[ex.answer]))
            for ex in D.load_cbt(files[source])
        ])

    return read


def _wsc273(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([" ".join(p for p in (s.before, s.pronoun, s.after) if p) for s in D.load_wsc(files["wsc273"])])


def _coqa(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    documents, examples = [], []
    for s in D.load_coqa(files["coqa-dev"]):
        turns = [f"{q}\n{' / '.join(a)}" for q, a in zip(s.questions, s.answers)]
        documents.append("\n\n".join([s.story, *turns]))
        examples += [f"{s.story}\n\n{turn}" for turn in turns]
    return documents, examples


def _cnndm(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([s.article + "\n\n" + "\n".join(s.highlights) for s in D.load_cnndm(files["cnndm-stories"], files["cnndm-test-urls"])])


def _wmt(pair: str) -> Callable[[dict[str, Path]], tuple[list[str], list[str]]]:
    def read(files: dict[str, Path]) -> tuple[list[str], list[str]]:
        sources, targets = D.load_sgm(files[f"wmt14-{pair}-src"]), D.load_sgm(files[f"wmt14-{pair}-ref"])
        if len(sources) != len(targets):
            raise GPT2Error(f"WMT-14 {pair}: {len(sources)} source segments but {len(targets)} references")
        return _same([f"{s}\n{t}" for s, t in zip(sources, targets)])

    return read


def _nq(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([q + "\n" + "\n".join(answers) for q, answers in D.load_nq_open(files["nq-open-dev"])])


def _sst2(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([s for s, _ in D.load_sst2(files["sst2-dev"])])


def _cola(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([s for s, _ in D.load_cola([files["cola-in-domain-dev"], files["cola-out-of-domain-dev"]])])


def _race(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([f"{q.article}\n\n{q.question}\n{q.options[q.answer]}" for q in D.load_race(files["race-test"])])


def _story_cloze(files: dict[str, Path]) -> tuple[list[str], list[str]]:
    return _same([" ".join(s.strip() for s in sentences) + " " + endings[answer].strip()
                  for sentences, endings, answer in D.load_story_cloze(files["story-cloze-val"])])


READERS: dict[str, Callable[[dict[str, Path]], tuple[list[str], list[str] | None]]] = {
    "lambada": _lambada,
    "cbt-cn": _cbt("cbt-cn-valid"),
    "cbt-ne": _cbt("cbt-ne-valid"),
    "wikitext2": _whole("wikitext2-test", detokenize.wikitext),
    "ptb": _whole("ptb-test", detokenize.ptb),
    "enwik8": _tail("enwik8", "utf-8"),
    "text8": _tail("text8", "ascii"),
    "wikitext103": _whole("wikitext103-test", detokenize.wikitext),
    "1bw": _one_billion_word,
    "wsc273": _wsc273,
    "coqa": _coqa,
    "cnndm": _cnndm,
    "wmt14-en-fr": _wmt("en-fr"),
    "wmt14-fr-en": _wmt("fr-en"),
    "nq": _nq,
    "sst2": _sst2,
    "cola": _cola,
    "race": _race,
    "story-cloze": _story_cloze,
}
FIRST_SCORED = {"wmt14-en-fr": {"wmt_shots": 5}, "wmt14-fr-en": {"wmt_shots": 5}, "nq": {"nq_shots": 5}}
"""the EvalConfig settings (with their defaults) that hold back the first examples as few-shot examples"""


def task_names(names: list[str]) -> list[str]:
    """Task and group names (as `gpt2 eval --tasks` takes them) -> task names; unknown ones are one-line errors."""
    try:
        return expand(names)
    except ValueError as e:
        raise GPT2Error(f"--tasks: {e}") from None


def task_test_set(name: str, data_dir: Path | None = None) -> TestSet:
    """The test set of one evaluation task, its files found (or downloaded) and verified as `gpt2 eval` does."""
    task = TASKS[name]
    resolved = {key: D.locate(D.SOURCES[key], data_dir) for key in task.sources}
    documents, examples = READERS[name]({k: r.path for k, r in resolved.items()})
    sources = [{"source": k, "path": str(r.path), "sha256": r.sha256} for k, r in resolved.items()]
    return TestSet(name, task.title, task.kind, documents, examples, sources, dict(FIRST_SCORED.get(name, {})))


def file_test_set(path: Path, jsonl_field: str = "text") -> TestSet:
    """Another test set: a text file (one example) or a JSON-lines file (one example per line)."""
    from gpt2.download import sha256_file
    from gpt2.overlap.documents import iter_documents, list_inputs

    inputs = list_inputs([path])
    docs = [d for inp in inputs for d in iter_documents(inp, jsonl_field)]
    sources = [{"source": "file", "path": str(i.path), "sha256": sha256_file(i.path)} for i in inputs if i.kind != "shards"]
    return TestSet(Path(path).name, Path(path).name, "file", docs, docs, sources)
