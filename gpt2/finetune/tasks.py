"""The labelled tasks of GPT-1's fine-tuning (Tables 2-4): their files, formats, published sizes, labels and metrics.

Each task reads its authors' published files in their own format (GLUE tsv, the
MSR paraphrase files, Story Cloze csv/tsv, RACE json, SNLI jsonl, SciTail tsv).
Files are found like the evaluation datasets (gpt2/evaluate/datasets.py):
under --data.dir, in the cache, or downloaded from the canonical URL; the
number of examples read is checked against the published size of the split.
Task names follow `gpt2 eval` where both have the task (sst2, cola,
story-cloze). The evaluation split is the dev set where the test labels are
not public (GLUE), the test set otherwise (MRPC's MSR test file, SNLI,
SciTail, Story Cloze, RACE).

Kinds, after GPT-1 section 3.3 and Figure 1:
- classification: one text;
- entailment: premise and hypothesis, in that order;
- similarity: two texts in both orders, their extract states added (a regression for STS-B);
- multiple_choice: a context (and a question) with each answer; one logit per answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt2.errors import GPT2Error
from gpt2.evaluate import datasets as D
from gpt2.evaluate.datasets import Source
from gpt2.textfile import json_lines

Kind = Literal["classification", "entailment", "similarity", "multiple_choice"]


@dataclass
class Example:
    """One labelled (or, for `predict`, unlabelled) example."""

    texts: tuple[str, ...]
    """classification: (text,); entailment and similarity: (first, second); multiple choice: (context,) or (context, question)"""
    label: int | float | None = None
    """a class index, a score (regression), the index of the right choice, or None"""
    choices: tuple[str, ...] = ()
    """multiple choice: the answers"""


# ============================================================================
# Readers: one per published format. Each names the file and line of a malformed row.


def _lines(path: Path) -> list[str]:
    """The lines of a file, split at line feeds only (a sentence may hold U+2028 or U+0085), a BOM and CRs dropped."""
    text = D.read_text(path).removeprefix("\ufeff")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _label(value: str, labels: tuple[str, ...] | None, where: str) -> int | float:
    """A label of the file as this task's class index (or a float score when `labels` is None)."""
    if labels is None:
        try:
            return float(value)
        except ValueError:
            raise GPT2Error(f"{where}: the score must be a number, got {value!r}") from None
    if value in labels:
        return labels.index(value)
    raise GPT2Error(f"{where}: the label {value!r} is not one of this task's labels ({', '.join(labels)})")


def read_header_tsv(texts: tuple[str, ...], label: str | None, labels: tuple[str, ...] | None, values: tuple[str, ...] | None = None):
    """A GLUE tsv with a header row: the columns named in `texts` and `label` (whose `values` are the file's
    spellings of `labels`, in order; by default `labels` themselves). Rows are split on tabs, unquoted, as GLUE
    reads them. Without a label column (an unlabelled file) labels are None."""

    def read(path: Path) -> list[Example]:
        lines = _lines(path)
        if not lines:
            raise GPT2Error(f"{path} is empty")
        head = lines[0].split("\t")
        missing = [c for c in texts if c not in head]
        if missing:
            raise GPT2Error(f"{path} has no column {missing[0]!r} in its header ({', '.join(head)}); is it the right file?")
        cols = [head.index(c) for c in texts]
        lab = head.index(label) if label is not None and label in head else None
        spellings = values or labels
        out = []
        for n, line in enumerate(lines[1:], 2):
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < len(head) and max(cols + [lab or 0]) >= len(parts):
                raise GPT2Error(f"{path}:{n}: {len(parts)} columns where the header has {len(head)}")
            y = None
            if lab is not None:
                raw = parts[-1] if label == head[-1] else parts[lab]
                y = _label(raw, spellings, f"{path}:{n}")
            out.append(Example(tuple(parts[c] for c in cols), y))
        return out

    return read


def read_plain_tsv(columns: tuple[str, ...], texts: tuple[int, ...], label: int, labels: tuple[str, ...]):
    """A tsv without a header whose rows have these `columns`: the texts and the label at those indices."""

    def read(path: Path) -> list[Example]:
        out = []
        for n, line in enumerate(_lines(path), 1):
            parts = line.split("\t")
            if len(parts) != len(columns):
                raise GPT2Error(f"{path}:{n} is not a row of {len(columns)} columns ({', '.join(columns)})")
            out.append(Example(tuple(parts[i] for i in texts), _label(parts[label], labels, f"{path}:{n}")))
        return out

    return read


read_cola = read_plain_tsv(("source", "label 0/1", "mark", "sentence"), (3,), 1, ("0", "1"))
"""CoLA's raw tsv, no header: source, label (0/1), original mark, sentence."""
read_scitail = read_plain_tsv(("premise", "hypothesis", "label entails/neutral"), (0, 1), 2, ("entails", "neutral"))
"""SciTail's tsv_format, no header: premise, hypothesis, label."""


def read_msr_paraphrase(path: Path) -> list[Example]:
    """The MSR Paraphrase Corpus files (MRPC): header `Quality #1 ID #2 ID #1 String #2 String`."""
    return read_header_tsv(("#1 String", "#2 String"), "Quality", ("0", "1"))(path)


def read_snli(path: Path) -> list[Example]:
    """SNLI 1.0 jsonl: sentence1, sentence2, gold_label. Pairs without a gold label ('-': the annotators did not
    agree) are not examples of the task; the published split sizes count them out too."""
    labels = ("entailment", "neutral", "contradiction")
    out = []
    for n, row in json_lines(path, _lines(path)):
        try:
            gold, first, second = row["gold_label"], row["sentence1"], row["sentence2"]
        except (KeyError, TypeError) as e:
            raise GPT2Error(f"{path}:{n} is not an SNLI line (no {e})") from None
        if gold == "-":
            continue
        out.append(Example((first, second), _label(gold, labels, f"{path}:{n}")))
    return out


def read_story_cloze(path: Path) -> list[Example]:
    """Story Cloze Test csv/tsv: four sentences of context, two endings, the right one (1 or 2)."""
    return [Example((" ".join(sentences),), answer, tuple(endings)) for sentences, endings, answer in D.load_story_cloze(path)]


def read_race(directory: Path) -> list[Example]:
    """RACE: one JSON file per article (article, questions, options, answers A-D)."""
    return [Example((q.article, q.question), q.answer, tuple(q.options)) for q in D.load_race(directory)]


# ============================================================================
# Tasks


@dataclass(frozen=True)
class Split:
    sources: tuple[Source, ...]
    read: Callable[[Path], list[Example]]
    size: int | None
    """published number of examples (checked when the published files are read)"""
    name: str = "train"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    kind: Kind
    labels: tuple[str, ...] | None
    """class names; None for a regression (STS-B)"""
    train: Split
    eval: Split
    metrics: tuple[str, ...]
    """the first is the task's main metric (GPT-1 Tables 2-4)"""
    paper: dict[str, float]
    """GPT-1's result on the task (test sets / GLUE server), by metric"""
    choices: int = 0
    """answers per question (multiple choice)"""

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def sequences(self) -> int:
        """Token sequences per example: 1, 2 (both orders) or one per answer."""
        return {"similarity": 2, "multiple_choice": self.choices}.get(self.kind, 1)


_GLUE = "https://dl.fbaipublicfiles.com/glue/data/"
_SENTEVAL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"
_COLA = "https://raw.githubusercontent.com/nyu-mll/CoLA-baselines/dd095d3646ed05a315280aaa8ed4ec84ba435b3e/acceptability_corpus/cola_public/raw/"
_RACE = "http://www.cs.cmu.edu/~glai1/data/race/RACE.tar.gz"


def _glue(task: str, file: str, hint: str) -> Source:
    return Source(f"glue-{task.lower()}-{file.removesuffix('.tsv')}", (f"{task}/{file}",), _GLUE + f"{task}.zip", member=f"{task}/{file}", hint=hint)


def _race(split: str, level: str) -> Source:
    return Source(f"race-{split}-{level}", (f"RACE/{split}/{level}",), _RACE, member=f"RACE/{split}/{level}", is_dir=True)


_STORY_HOW = ("request the Story Cloze Test (Spring 2016) from https://cs.rochester.edu/nlp/rocstories/ and put its "
              "validation and test files in --data.dir")
_STORY_VAL = D.SOURCES["story-cloze-val"]
_STORY_TEST = Source(
    "story-cloze-test",
    ("cloze_test_test__spring2016 - cloze_test_ALL_test.csv", "cloze_test_test__spring2016.csv", "cloze_test_test__spring2016.tsv"),
    how=_STORY_HOW,
)
_MNLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI_2 = ("entailment", "not_entailment")


def _entailment_tsv(first: str, second: str, labels: tuple[str, ...]):
    return read_header_tsv((first, second), "gold_label" if labels is _MNLI_LABELS else "label", labels)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            "cola", "CoLA (linguistic acceptability)", "classification", ("unacceptable", "acceptable"),
            Split((Source("cola-in-domain-train", ("cola_public/raw/in_domain_train.tsv", "in_domain_train.tsv"), _COLA + "in_domain_train.tsv",
                          sha256="f320a10f92d3bce6b29152fde322a362eac39238e50d8de0c8815457fdf4fc12"),), read_cola, 8551),
            Split((D.SOURCES["cola-in-domain-dev"], D.SOURCES["cola-out-of-domain-dev"]), read_cola, 1043, "dev"),
            ("mcc", "accuracy"), {"mcc": 45.4},
        ),
        TaskSpec(
            "sst2", "SST-2 (sentiment)", "classification", ("negative", "positive"),
            Split((_glue("SST-2", "train.tsv", r"(?i)sst"),), read_header_tsv(("sentence",), "label", ("negative", "positive"), ("0", "1")), 67349),
            Split((D.SOURCES["sst2-dev"],), read_header_tsv(("sentence",), "label", ("negative", "positive"), ("0", "1")), 872, "dev"),
            ("accuracy",), {"accuracy": 91.3},
        ),
        TaskSpec(
            "mrpc", "MRPC (paraphrase)", "similarity", ("not_paraphrase", "paraphrase"),
            Split((Source("mrpc-train", ("msr_paraphrase_train.txt",), _SENTEVAL + "msr_paraphrase_train.txt"),), read_msr_paraphrase, 4076),
            Split((Source("mrpc-test", ("msr_paraphrase_test.txt",), _SENTEVAL + "msr_paraphrase_test.txt"),), read_msr_paraphrase, 1725, "test"),
            ("f1", "accuracy"), {"f1": 82.3},
        ),
        TaskSpec(
            "qqp", "QQP (duplicate questions)", "similarity", ("not_duplicate", "duplicate"),
            Split((_glue("QQP", "train.tsv", r"(?i)qqp"),), read_header_tsv(("question1", "question2"), "is_duplicate", ("not_duplicate", "duplicate"), ("0", "1")), 363846),
            Split((_glue("QQP", "dev.tsv", r"(?i)qqp"),), read_header_tsv(("question1", "question2"), "is_duplicate", ("not_duplicate", "duplicate"), ("0", "1")), 40430, "dev"),
            ("f1", "accuracy"), {"f1": 70.3},
        ),
        TaskSpec(
            "stsb", "STS-B (semantic similarity)", "similarity", None,
            Split((_glue("STS-B", "train.tsv", r"(?i)sts"),), read_header_tsv(("sentence1", "sentence2"), "score", None), 5749),
            Split((_glue("STS-B", "dev.tsv", r"(?i)sts"),), read_header_tsv(("sentence1", "sentence2"), "score", None), 1500, "dev"),
            ("pearson", "spearman"), {"pearson": 82.0},
        ),
        TaskSpec(
            "rte", "RTE (entailment)", "entailment", _NLI_2,
            Split((_glue("RTE", "train.tsv", r"(?i)rte"),), _entailment_tsv("sentence1", "sentence2", _NLI_2), 2490),
            Split((_glue("RTE", "dev.tsv", r"(?i)rte"),), _entailment_tsv("sentence1", "sentence2", _NLI_2), 277, "dev"),
            ("accuracy",), {"accuracy": 56.0},
        ),
        TaskSpec(
            "mnli-m", "MultiNLI, matched", "entailment", _MNLI_LABELS,
            Split((_glue("MNLI", "train.tsv", r"(?i)mnli"),), _entailment_tsv("sentence1", "sentence2", _MNLI_LABELS), 392702),
            Split((_glue("MNLI", "dev_matched.tsv", r"(?i)mnli"),), _entailment_tsv("sentence1", "sentence2", _MNLI_LABELS), 9815, "dev_matched"),
            ("accuracy",), {"accuracy": 82.1},
        ),
        TaskSpec(
            "mnli-mm", "MultiNLI, mismatched", "entailment", _MNLI_LABELS,
            Split((_glue("MNLI", "train.tsv", r"(?i)mnli"),), _entailment_tsv("sentence1", "sentence2", _MNLI_LABELS), 392702),
            Split((_glue("MNLI", "dev_mismatched.tsv", r"(?i)mnli"),), _entailment_tsv("sentence1", "sentence2", _MNLI_LABELS), 9832, "dev_mismatched"),
            ("accuracy",), {"accuracy": 81.4},
        ),
        TaskSpec(
            "qnli", "QNLI (question answering as entailment; GLUE's QNLIv2)", "entailment", _NLI_2,
            Split((Source("glue-qnli-train", ("QNLI/train.tsv",), _GLUE + "QNLIv2.zip", member="QNLI/train.tsv", hint=r"(?i)qnli"),),
                  _entailment_tsv("question", "sentence", _NLI_2), 104743),
            Split((Source("glue-qnli-dev", ("QNLI/dev.tsv",), _GLUE + "QNLIv2.zip", member="QNLI/dev.tsv", hint=r"(?i)qnli"),),
                  _entailment_tsv("question", "sentence", _NLI_2), 5463, "dev"),
            ("accuracy",), {"accuracy": 88.1},
        ),
        TaskSpec(
            "snli", "SNLI", "entailment", _MNLI_LABELS,
            Split((Source("snli-train", ("snli_1.0/snli_1.0_train.jsonl", "snli_1.0_train.jsonl"), "https://nlp.stanford.edu/projects/snli/snli_1.0.zip",
                          member="snli_1.0/snli_1.0_train.jsonl"),), read_snli, 549367),
            Split((Source("snli-test", ("snli_1.0/snli_1.0_test.jsonl", "snli_1.0_test.jsonl"), "https://nlp.stanford.edu/projects/snli/snli_1.0.zip",
                          member="snli_1.0/snli_1.0_test.jsonl"),), read_snli, 9824, "test"),
            ("accuracy",), {"accuracy": 89.9},
        ),
        TaskSpec(
            "scitail", "SciTail", "entailment", ("entails", "neutral"),
            Split((Source("scitail-train", ("SciTailV1.1/tsv_format/scitail_1.0_train.tsv", "scitail_1.0_train.tsv"),
                          "http://data.allenai.org.s3.amazonaws.com/downloads/SciTailV1.1.zip", member="SciTailV1.1/tsv_format/scitail_1.0_train.tsv"),),
                  read_scitail, 23097),
            Split((Source("scitail-test", ("SciTailV1.1/tsv_format/scitail_1.0_test.tsv", "scitail_1.0_test.tsv"),
                          "http://data.allenai.org.s3.amazonaws.com/downloads/SciTailV1.1.zip", member="SciTailV1.1/tsv_format/scitail_1.0_test.tsv"),),
                  read_scitail, 2126, "test"),
            ("accuracy",), {"accuracy": 88.3},
        ),
        TaskSpec(
            "story-cloze", "Story Cloze Test (trained on its validation set, as GPT-1)", "multiple_choice", ("ending 1", "ending 2"),
            Split((_STORY_VAL,), read_story_cloze, 1871), Split((_STORY_TEST,), read_story_cloze, 1871, "test"),
            ("accuracy",), {"accuracy": 86.5}, choices=2,
        ),
        TaskSpec(
            "race-m", "RACE, middle school", "multiple_choice", ("A", "B", "C", "D"),
            Split((_race("train", "middle"),), read_race, 25421), Split((_race("test", "middle"),), read_race, 1436, "test"),
            ("accuracy",), {"accuracy": 62.9}, choices=4,
        ),
        TaskSpec(
            "race-h", "RACE, high school", "multiple_choice", ("A", "B", "C", "D"),
            Split((_race("train", "high"),), read_race, 62445), Split((_race("test", "high"),), read_race, 3498, "test"),
            ("accuracy",), {"accuracy": 57.4}, choices=4,
        ),
    ]
}

# the sources live with the evaluation datasets', so that the cache and the archives' unpacking serve both
for _task in TASKS.values():
    for _split in (_task.train, _task.eval):
        for _source in _split.sources:
            D.SOURCES.setdefault(_source.key, _source)


def task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise GPT2Error(f"unknown fine-tuning task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def load_split(spec: TaskSpec, split: Split, data_dir: Path | None, file: Path | None = None) -> tuple[list[Example], list[dict]]:
    """The examples of a split and where they came from. `file` (a file in the task's format) replaces the
    published one, whose size is then not checked."""
    if file is not None:
        file = Path(file)
        if not file.exists():
            raise GPT2Error(f"{spec.name} {split.name} file {file} does not exist")
        examples = split.read(file)
        records = [{"path": str(file), "origin": "given", "sha256": D._tree_sha256(file)}]  # a resume checks the data by it
    else:
        examples, records = [], []
        for source in split.sources:
            found = D.locate(source, data_dir)
            examples += split.read(found.path)
            records.append(found.record())
        if split.size is not None and len(examples) != split.size:
            where = ", ".join(r["path"] for r in records)
            raise GPT2Error(
                f"{where} holds {len(examples):,} {spec.name} examples, but the published {split.name} split has {split.size:,}: "
                f"is it the right file? (give your own data with --data.train / --data.eval)"
            )
    if not examples:
        raise GPT2Error(f"the {spec.name} {split.name} data holds no examples")
    bad = _check_examples(spec, examples)
    if bad:
        raise GPT2Error(f"{spec.name} {split.name} data: {bad}")
    return examples, records


def _check_examples(spec: TaskSpec, examples: list[Example], any_choices: bool = False) -> str | None:
    """What is wrong with examples that do not fit the task (read from a file of another task, say), or None.
    `any_choices`: multiple-choice examples may have another number of answers, the same for all (predict)."""
    texts = {"classification": 1, "entailment": 2, "similarity": 2}.get(spec.kind)
    choices = len(examples[0].choices) if any_choices and examples else spec.choices
    for i, ex in enumerate(examples):
        if texts is not None and len(ex.texts) != texts:
            return f"example {i} has {len(ex.texts)} texts; a {spec.kind} task takes {texts}"
        if spec.kind == "multiple_choice" and (len(ex.choices) != choices or choices < 2):
            return f"example {i} has {len(ex.choices)} answers; every example needs the same number, at least 2 ({spec.name}: {spec.choices})"
        if ex.label is not None and not spec.regression and not 0 <= ex.label < (choices if spec.kind == "multiple_choice" else len(spec.labels)):
            return f"example {i} has the label {ex.label}, outside this task's labels"
    return None


def read_predict_input(spec: TaskSpec, path: Path) -> list[Example]:
    """Examples to label: JSON lines with the task's fields (text / text_a, text_b / context, question, choices,
    optionally label), or a file (or RACE folder) in the task's published format, labels included where that
    format has them."""
    examples = _read_jsonl(spec, path) if path.suffix == ".jsonl" else spec.eval.read(path)
    if not examples:
        raise GPT2Error(f"{path} holds no examples")
    bad = _check_examples(spec, examples, any_choices=True)
    if bad:
        raise GPT2Error(f"{path}: {bad}")
    return examples


def _read_jsonl(spec: TaskSpec, path: Path) -> list[Example]:
    fields = {"classification": ("text",), "entailment": ("text_a", "text_b"), "similarity": ("text_a", "text_b")}.get(spec.kind)
    out = []
    for n, row in json_lines(path, _lines(path)):
        if not isinstance(row, dict):
            raise GPT2Error(f"{path}:{n}: expected a JSON object")
        where = f"{path}:{n}"
        if fields is not None:
            missing = [f for f in fields if not isinstance(row.get(f), str)]
            if missing:
                raise GPT2Error(f"{where}: a {spec.kind} example needs the string field(s) {', '.join(fields)}; {missing[0]!r} is missing")
            texts = tuple(row[f] for f in fields)
            choices: tuple[str, ...] = ()
        else:
            if not isinstance(row.get("context"), str) or not isinstance(row.get("choices"), list):
                raise GPT2Error(f"{where}: a multiple-choice example needs \"context\" (a string) and \"choices\" (a list)")
            texts = (row["context"],) + ((row["question"],) if isinstance(row.get("question"), str) else ())
            choices = tuple(str(c) for c in row["choices"])
        label = row.get("label")
        if label is not None and not spec.regression:
            names = spec.labels if spec.kind != "multiple_choice" else None
            if isinstance(label, str) and names and label in names:
                label = names.index(label)
            elif not isinstance(label, int) or isinstance(label, bool):
                raise GPT2Error(f"{where}: the label must be one of {', '.join(spec.labels)} (or its index), got {label!r}")
        out.append(Example(texts, label, choices))
    if not out:
        raise GPT2Error(f"{path} holds no examples")
    return out
