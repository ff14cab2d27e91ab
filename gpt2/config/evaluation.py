"""Settings of the evaluation commands: eval, report, and the overlap study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt2.config.core import check_output_file, check_seed, opt
from gpt2.errors import ConfigError


# ---- evaluation -----------------------------------------------------------------


@dataclass
class EvalConfig:
    """`gpt2 eval`: the GPT-2 paper's zero-shot evaluations (section 3) and GPT-1's zero-shot heuristics on one model.

    Writes OUT/results.json (every number with its variant, dataset checksums, model, tokens scored, time) and
    OUT/report.md (laid out like the paper's Table 3, the paper's numbers beside ours). Each finished task is
    cached in OUT/tasks/, so an interrupted run resumes where it stopped.
    """

    model: str = opt(help="model directory: the project's own (model.safetensors + model.json; or a training run's folder, "
                          "or one of its checkpoints), a Hugging Face GPT-2 one, or OpenAI's release")
    out: Path = opt(help="directory for results.json, report.md and the per-task cache")
    tasks: list[str] = opt(
        ["table3"],
        "tasks or groups, comma-separated. Tasks: lambada cbt-cn cbt-ne wikitext2 ptb enwik8 text8 wikitext103 1bw wsc273 "
        "coqa cnndm wmt14-en-fr wmt14-fr-en nq sst2 cola race story-cloze. Groups: table3 generation gpt1 paper all",
    )
    tokenizer: str | None = opt(None, "tokenizer directory, or 'gpt2' (default: the model directory's own, else OpenAI's GPT-2)")
    data_dir: Path | None = opt(None, "folder of local dataset copies, searched (by canonical path, then file name) before the cache and downloads")
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:1, mps")
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "weights and activations (log-softmax is always float32)")
    batch_tokens: int = opt(8192, "tokens per forward pass; lower it if memory runs out (results do not depend on it beyond float rounding)")
    windows: list[str] = opt(
        ["disjoint"], "language-modelling variants: 'disjoint' (stride = context) and/or 'sliding' (stride --stride; costs context/stride times more)"
    )
    stride: int = opt(32, "stride of the sliding-window variant, in tokens")
    limit: int | None = opt(None, "only the first N examples of each task (the first N lines for language modelling): a quick, labelled partial run")
    seed: int = opt(0, "seed of the sampled summaries (CNN/Daily Mail) and of the random-3 baseline")
    wmt_shots: int = opt(5, "example pairs before each WMT-14 sentence (taken from the start of the test set, which is then not scored)")
    nq_shots: int = opt(5, "question/answer pairs before each Natural Questions question (from the start of the dev set, then not scored)")
    cola_threshold: float | None = opt(None, "CoLA: mean log-prob threshold for 'acceptable' (default: the best one on the data, reported as an upper bound)")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    force: bool = opt(False, "recompute tasks already cached in --out, and replace results of another model there")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        from gpt2.evaluate.tasks import expand

        try:  # --tasks a,b,c and --tasks a b c both work
            self.tasks = expand([t for item in self.tasks for t in str(item).split(",") if t.strip()])
        except ValueError as e:
            raise ConfigError(f"--tasks: {e}") from None
        if not self.tasks:
            raise ConfigError("--tasks is empty; name at least one task or group")
        self.windows = list(dict.fromkeys(w.strip() for item in self.windows for w in str(item).split(",") if w.strip()))
        if not self.windows or any(w not in ("disjoint", "sliding") for w in self.windows):
            raise ConfigError(f"--windows takes 'disjoint', 'sliding' or both, got {','.join(self.windows) or 'nothing'}")
        for name in ("batch_tokens", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be positive, got {self.limit}")
        for name in ("wmt_shots", "nq_shots", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")


@dataclass
class ReportConfig:
    """`gpt2 report`: Table 3 and Figure-1 / Figure-4 style plots (metric against parameter count) from several
    `gpt2 eval` runs."""

    results: list[Path] = opt(help="results.json files, or the --out directories of `gpt2 eval` runs")
    out: Path = opt(Path("report"), "directory for report.md and the PNG plots")
    force: bool = opt(False, "replace a report.md or plots already in --out")

    def __post_init__(self) -> None:
        if not self.results:
            raise ConfigError("--results needs at least one results.json (or a `gpt2 eval` output directory)")


# ---- the overlap study (gpt2 overlap ...) -----------------------------------------


def _names(values: list[str]) -> list[str]:
    """'a,b c' style lists of names -> ['a', 'b', 'c']."""
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


@dataclass
class OverlapBuildConfig:
    """`gpt2 overlap build`: a Bloom filter of the n-grams of training text (GPT-2 paper, section 4), sized for a
    false-positive rate, memory-mapped for queries; reports the rate measured on random strings."""

    input: list[Path] = opt(help="training text: text files (one document each), JSON lines (.jsonl, one document per line; "
                                 ".gz / .zst), `gpt2 prepare` dataset directories, or directories of files")
    out: Path = opt(help="the filter file to write")
    n: int = opt(8, "words per n-gram (the paper: 8)")
    fp_rate: float = opt(1e-8, "false-positive rate the filter is sized for (the paper: 1e-8)")
    jsonl_field: str = opt("text", "the field of each JSON line that holds the document")
    splits: list[str] = opt(["train"], "splits of `gpt2 prepare` datasets to read (train, val)")
    workers: int = opt(0, "processes that hash text (0: one per CPU core)")
    random_queries: int = opt(1_000_000, "random strings looked up to measure the false-positive rate (the paper: 1M)")
    force: bool = opt(False, "replace an existing --out file")

    def __post_init__(self) -> None:
        if not self.input:
            raise ConfigError("--input needs at least one file or directory")
        if not 1 <= self.n <= 64:
            raise ConfigError(f"--n must be between 1 and 64, got {self.n}")
        if not 1e-15 <= self.fp_rate < 1:
            raise ConfigError(f"--fp-rate must be in [1e-15, 1), got {self.fp_rate}")
        self.splits = _names(self.splits)
        if not self.splits or set(self.splits) - {"train", "val"}:
            raise ConfigError(f"--splits takes train and/or val, got {','.join(self.splits) or 'nothing'}")
        if self.workers < 0 or self.random_queries < 0:
            raise ConfigError("--workers and --random-queries must be 0 or more")
        if not self.jsonl_field:
            raise ConfigError("--jsonl-field must not be empty")
        check_output_file(self.out, self.force, "--out")


@dataclass
class OverlapReportConfig:
    """`gpt2 overlap report`: the share of each test set's n-grams found in a filter (the paper's Table 6), the
    overlap of every example, and, given a `gpt2 eval` folder, every metric on all / clean / dirty examples."""

    filter: Path = opt(help="a filter written by `gpt2 overlap build`")
    out: Path = opt(help="directory for overlap.json, overlap.md, examples/TASK.jsonl and overlap_histogram.png")
    tasks: list[str] = opt([], "evaluation tasks or groups, read as `gpt2 eval` reads them (e.g. wikitext2,ptb,lambada,wsc273)")
    input: list[Path] = opt([], "other test sets: text or JSON-lines files (each line an example)")
    own_train: list[str] = opt([], "NAME=FILE: also look the test set NAME up in its own training split FILE (Table 6's second column)")
    results: Path | None = opt(None, "a `gpt2 eval` output folder: recompute its metrics on all, clean and dirty examples")
    data_dir: Path | None = opt(None, "folder of local dataset copies, as for `gpt2 eval --data-dir`")
    n: int | None = opt(None, "n-gram length expected of the filter (default: the filter's own)")
    dirty_threshold: float = opt(0.15, "an example is dirty above this fraction of its n-grams found (the paper: 15%)")
    jsonl_field: str = opt("text", "the field of each JSON line that holds the text")
    verify: bool = opt(True, "check the filter's bits against their checksum first (reads the whole file once)")
    force: bool = opt(False, "replace a report already in --out")

    def __post_init__(self) -> None:
        self.tasks = _names(self.tasks)
        if not self.tasks and not self.input:
            raise ConfigError("name test sets with --tasks (e.g. wikitext2,ptb,lambada) and/or --input FILE")
        if not 0 <= self.dirty_threshold < 1:
            raise ConfigError(f"--dirty-threshold must be in [0, 1), got {self.dirty_threshold}")
        if self.n is not None and not 1 <= self.n <= 64:
            raise ConfigError(f"--n must be between 1 and 64, got {self.n}")
        for item in self.own_train:
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ConfigError(f"--own-train takes NAME=FILE (e.g. wikitext2=wiki.train.tokens), got {item!r}")


@dataclass
class OverlapDecontaminateConfig:
    """`gpt2 overlap decontaminate`: remove the text of training documents that overlaps evaluation sets, by GPT-3's
    rule (Brown et al. 2020, appendix C): cut out each 13-gram found with 200 characters on either side, drop pieces
    under 200 characters and documents cut into more than 10 pieces; write the rest as JSON lines."""

    input: list[Path] = opt(help="training text: text files, JSON lines (.jsonl; .gz / .zst), `gpt2 prepare` datasets, directories")
    out: Path = opt(help="JSON-lines file of the kept pieces ({\"text\", \"source\", \"document\", \"piece\"} per line)")
    tasks: list[str] = opt([], "evaluation tasks or groups whose text is removed (read as `gpt2 eval` reads them)")
    test_input: list[Path] = opt([], "other test sets whose text is removed: text or JSON-lines files")
    data_dir: Path | None = opt(None, "folder of local dataset copies, as for `gpt2 eval --data-dir`")
    n: int = opt(13, "words per n-gram (GPT-3: 13)")
    window: int = opt(200, "characters removed on either side of each n-gram found (GPT-3: 200)")
    min_piece: int = opt(200, "pieces shorter than this many characters are dropped (GPT-3: 200)")
    max_pieces: int = opt(10, "a document cut into more pieces than this is dropped whole (GPT-3: 10)")
    max_doc_frequency: int = opt(10, "ignore test n-grams found in more training documents than this: common phrases, not "
                                     "contamination (GPT-3: 10; 0: use every n-gram; costs a first pass)")
    jsonl_field: str = opt("text", "the field of each JSON line that holds the document")
    splits: list[str] = opt(["train"], "splits of `gpt2 prepare` datasets to read (train, val)")
    force: bool = opt(False, "replace an existing --out file")

    def __post_init__(self) -> None:
        self.tasks = _names(self.tasks)
        self.splits = _names(self.splits)
        if not self.input:
            raise ConfigError("--input needs at least one file or directory")
        if not self.tasks and not self.test_input:
            raise ConfigError("name what to remove with --tasks (e.g. lambada,wikitext2) and/or --test-input FILE")
        if not 1 <= self.n <= 64:
            raise ConfigError(f"--n must be between 1 and 64, got {self.n}")
        if min(self.window, self.min_piece, self.max_doc_frequency) < 0 or self.max_pieces < 1:
            raise ConfigError("--window, --min-piece and --max-doc-frequency must be 0 or more, --max-pieces at least 1")
        if not self.splits or set(self.splits) - {"train", "val"}:
            raise ConfigError(f"--splits takes train and/or val, got {','.join(self.splits) or 'nothing'}")
        check_output_file(self.out, self.force, "--out")
