"""The evaluation datasets: where each comes from, how it is checked, and how it is read.

Each dataset is read from its canonical file format (the file its authors
publish). A file is looked for, in order:

1. under `--data-dir` (by its canonical relative path, else by file name
   anywhere below it), for copies the user already has;
2. in the cache, `$GPT2_CACHE/eval/<source>/` (default `~/.cache/gpt2/eval`);
3. at its canonical URL, downloaded once into the cache (never with
   `GPT2_OFFLINE=1`, which turns a missing file into a one-line error that
   says where to put it).

A download is verified against a published checksum where one exists (sha256,
or the md5 that sacrebleu pins for WMT). Several datasets have none that could
be verified (WikiText, PTB, CBT, CoQA, SST-2, RACE, enwik8, text8, 1BW, the WSC
XML); those are verified by size and format instead (`Source.check`: the
published token or example counts, the exact byte size), and the report
records the sha256 of every file that was read, so two results can always be
told apart. Story Cloze and the CNN/Daily Mail stories are handed out by their
authors on request or through a file host that needs a browser; the error
message says how to get them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


from gpt2 import download
from gpt2.errors import GPT2Error

log = logging.getLogger(__name__)


# ============================================================================
# Where the files come from


@dataclass(frozen=True)
class Source:
    """One file (or directory) a task reads."""

    key: str
    """name of this source (and of its folder in the cache)"""
    paths: tuple[str, ...]
    """relative paths under --data-dir, canonical first; the last component is also searched for anywhere below it"""
    url: str | None = None
    """canonical download (a file, or a .zip / .tar.gz holding `member`)"""
    member: str | None = None
    """path of the file inside the archive at `url`"""
    sha256: str | None = None
    """published or verified sha256 of the file at `url` (None: none could be verified)"""
    md5: str | None = None
    """published md5 of the file at `url`, when that is the only checksum published"""
    check: Callable[[Path], str | None] | None = None
    """size / format verification; returns what is wrong, or None"""
    how: str = ""
    """how to obtain the file when it cannot be downloaded"""
    hint: str | None = None
    """a regular expression the path must match when found by name below --data-dir (tells WikiText-2 from -103)"""
    is_dir: bool = False


def _count_tokens_check(expected: int, what: str) -> Callable[[Path], str | None]:
    """Word-level LM test files: words + one <eos> per line, the count their papers publish."""

    def check(path: Path) -> str | None:
        text = path.read_text(encoding="utf-8")
        n = len(text.split()) + text.count("\n")
        return None if n == expected else f"{path} has {n:,} tokens (words + line ends), the {what} has {expected:,}"

    return check


def _size_check(expected: int) -> Callable[[Path], str | None]:
    def check(path: Path) -> str | None:
        n = path.stat().st_size
        return None if n == expected else f"{path} has {n:,} bytes, expected {expected:,}"

    return check


def _parses(loader: Callable[[Path], list], minimum: int, what: str) -> Callable[[Path], str | None]:
    def check(path: Path) -> str | None:
        try:
            n = len(loader(path))
        except GPT2Error as e:
            return str(e)
        return None if n >= minimum else f"{path} holds {n} {what}, expected at least {minimum}"

    return check


# ============================================================================
# Loaders: canonical format -> plain Python records


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise GPT2Error(f"{path} is not UTF-8 text ({e}); is it the right file?") from None


def load_lambada(path: Path) -> list[str]:
    """OpenAI's LAMBADA test jsonl: one {"text": passage} per line, the passage's last word is the target."""
    texts = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise GPT2Error(f"{path}:{n} is not a LAMBADA record ({{\"text\": ...}}); is it OpenAI's lambada_test.jsonl?") from None
    if not texts:
        raise GPT2Error(f"{path} holds no LAMBADA passages")
    return texts


@dataclass
class ClozeExample:
    """A Children's Book Test question."""

    context: list[str]
    """the 20 sentences before the query (tokenized, as in the file)"""
    query: str
    """the 21st sentence, with XXXXX where the answer goes"""
    candidates: list[str]
    answer: int
    """index of the right candidate"""


def load_cbt(path: Path) -> list[ClozeExample]:
    """CBT (Hill et al. 2016) files `cbtest_{CN,NE}_*.txt`: blocks of 21 numbered lines, the 21st being
    `21 query<TAB>answer<TAB><TAB>cand1|cand2|...|cand10`, blocks separated by a blank line."""
    examples, block = [], []
    for n, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        number, _, sentence = line.partition(" ")
        if not number.isdigit():
            raise GPT2Error(f"{path}:{n} does not start with a sentence number; is it a CBT file (cbtest_*.txt)?")
        if int(number) != len(block) + 1:
            raise GPT2Error(f"{path}:{n}: expected sentence {len(block) + 1}, found {number}")
        if int(number) < 21:
            block.append(sentence)
            continue
        parts = sentence.split("\t")
        if len(parts) != 4 or "XXXXX" not in parts[0]:
            raise GPT2Error(f"{path}:{n}: the question line must be 'query<TAB>answer<TAB><TAB>candidates' with XXXXX in the query")
        query, answer, _, cands = parts
        candidates = [c for c in cands.split("|") if c]
        if answer not in candidates:
            raise GPT2Error(f"{path}:{n}: the answer {answer!r} is not among the candidates")
        examples.append(ClozeExample(block, query, candidates, candidates.index(answer)))
        block = []
    if block:
        raise GPT2Error(f"{path} ends in the middle of a question ({len(block)} context sentences without a query)")
    if not examples:
        raise GPT2Error(f"{path} holds no CBT questions")
    return examples


@dataclass
class WinogradSchema:
    before: str
    """text before the pronoun"""
    pronoun: str
    after: str
    """text after the pronoun"""
    candidates: list[str]
    answer: int


def load_wsc(path: Path, n: int = 273) -> list[WinogradSchema]:
    """E. Davis's WSCollection.xml (ISO-8859-1); WSC273 is its first 273 schemas."""
    try:
        root = ET.fromstring(path.read_bytes())
    except ET.ParseError as e:
        raise GPT2Error(f"{path} is not valid XML ({e}); is it WSCollection.xml?") from None

    def clean(node) -> str:
        return " ".join((node.text or "").split()) if node is not None else ""

    schemas = []
    for i, s in enumerate(root.findall("schema")[:n]):
        answers = [clean(a) for a in s.findall("answers/answer")]
        correct = clean(s.find("correctAnswer")).rstrip(".").strip()
        if len(answers) != 2 or correct not in ("A", "B") or s.find("text/pron") is None:
            raise GPT2Error(f"{path}: schema {i} lacks two answers, a correctAnswer A/B or a pronoun")
        schemas.append(
            WinogradSchema(clean(s.find("text/txt1")), clean(s.find("text/pron")), clean(s.find("text/txt2")), answers, "AB".index(correct))
        )
    if len(schemas) < n:
        raise GPT2Error(f"{path} holds {len(schemas)} schemas; WSC273 needs the first {n} of WSCollection.xml")
    return schemas


@dataclass
class CoQAStory:
    story: str
    questions: list[str]
    answers: list[list[str]]
    """per turn: the main answer, then the additional answers (up to 3)"""


def load_coqa(path: Path) -> list[CoQAStory]:
    """CoQA (Reddy et al. 2019) coqa-dev-v1.0.json: {"data": [{"story", "questions", "answers", "additional_answers"}]}."""
    try:
        data = json.loads(read_text(path))["data"]
        stories = []
        for d in data:
            questions = [q["input_text"] for q in d["questions"]]
            answers = [[a["input_text"]] for a in d["answers"]]
            for extra in (d.get("additional_answers") or {}).values():
                for turn, a in enumerate(extra):
                    answers[turn].append(a["input_text"])
            if len(answers) != len(questions):
                raise GPT2Error(f"{path}: story {d.get('id')} has {len(questions)} questions but {len(answers)} answers")
            stories.append(CoQAStory(d["story"], questions, answers))
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
        raise GPT2Error(f"{path} is not a CoQA file ({type(e).__name__}: {e}); is it coqa-dev-v1.0.json?") from None
    if not stories:
        raise GPT2Error(f"{path} holds no CoQA stories")
    return stories


@dataclass
class Story:
    """A CNN / Daily Mail story: the article and its highlights (the reference summary)."""

    name: str
    article: str
    highlights: list[str]


def parse_story(text: str, name: str = "") -> Story:
    """A .story file: the article's paragraphs, then `@highlight` / sentence pairs."""
    parts = text.split("@highlight")
    article = "\n".join(line.strip() for line in parts[0].strip().splitlines() if line.strip())
    highlights = [" ".join(p.split()) for p in parts[1:] if p.strip()]
    return Story(name, article, highlights)


def load_cnndm(story_dir: Path, url_list: Path) -> list[Story]:
    """The test stories listed in `url_list` (abisee's all_test.txt; file name = sha1 of the URL) found
    below `story_dir` (cnn/stories, dailymail/stories, or any folder of .story files)."""
    names = [hashlib.sha1(u.strip().encode()).hexdigest() for u in read_text(url_list).splitlines() if u.strip()]
    found = {p.stem: p for p in story_dir.rglob("*.story")}
    stories = [parse_story(read_text(found[n]), n) for n in names if n in found]
    stories = [s for s in stories if s.article and s.highlights]  # a few test stories have an empty article
    if not stories:
        raise GPT2Error(
            f"none of the {len(names):,} test stories of {url_list} is below {story_dir}: put the CNN and Daily Mail "
            f"story folders (cnn_stories.tgz, dailymail_stories.tgz from https://cs.nyu.edu/~kcho/DMQA/) there"
        )
    if len(stories) < len(names):
        log.warning("CNN/Daily Mail: %s of the %s test stories are present below %s; scoring those", f"{len(stories):,}", f"{len(names):,}", story_dir)
    return stories


_SEG = re.compile(r"<seg[^>]*>(.*)</seg>")


def load_sgm(path: Path) -> list[str]:
    """WMT's SGML-like test files (`<seg id="1">text</seg>`, one per line), whitespace collapsed as sacrebleu does."""
    segs = [" ".join(m.group(1).split()) for line in read_text(path).splitlines() if (m := _SEG.search(line))]
    if not segs:
        raise GPT2Error(f"{path} holds no <seg> lines; is it a WMT .sgm file?")
    return segs


def load_nq_open(path: Path) -> list[tuple[str, list[str]]]:
    """NQ-open (Lee et al. 2019) jsonl: {"question": ..., "answer": [...]} per line."""
    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append((str(d["question"]), [str(a) for a in d["answer"]]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise GPT2Error(f"{path}:{n} is not an NQ-open record ({{\"question\", \"answer\": [...]}})") from None
    if not out:
        raise GPT2Error(f"{path} holds no questions")
    return out


def load_story_cloze(path: Path) -> list[tuple[list[str], list[str], int]]:
    """Story Cloze Test (Mostafazadeh et al. 2016), .csv as distributed or .tsv: InputStoryid, InputSentence1-4,
    RandomFifthSentenceQuiz1, RandomFifthSentenceQuiz2, AnswerRightEnding (1 or 2).
    Returns (four sentences, two endings, index of the right ending)."""
    text = read_text(path)
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows or "AnswerRightEnding" not in rows[0]:
        raise GPT2Error(f"{path} has no Story Cloze header (InputStoryid, ..., AnswerRightEnding)")
    head = {name: i for i, name in enumerate(rows[0])}
    out = []
    try:
        for row in rows[1:]:
            if not row:
                continue
            sentences = [row[head[f"InputSentence{k}"]] for k in range(1, 5)]
            endings = [row[head["RandomFifthSentenceQuiz1"]], row[head["RandomFifthSentenceQuiz2"]]]
            out.append((sentences, endings, int(row[head["AnswerRightEnding"]]) - 1))
    except (KeyError, IndexError, ValueError) as e:
        raise GPT2Error(f"{path}: malformed Story Cloze row ({e})") from None
    return out


def load_cola(paths: list[Path]) -> list[tuple[str, int]]:
    """CoLA raw tsv (no header): source, label (0/1), original mark, sentence."""
    out = []
    for path in paths:
        for n, line in enumerate(read_text(path).splitlines(), 1):
            parts = line.split("\t")
            if len(parts) != 4 or parts[1] not in ("0", "1"):
                raise GPT2Error(f"{path}:{n} is not a CoLA row (source, label 0/1, mark, sentence)")
            out.append((parts[3], int(parts[1])))
    return out


def load_sst2(path: Path) -> list[tuple[str, int]]:
    """GLUE SST-2 dev.tsv: header `sentence<TAB>label`, label 1 = positive."""
    lines = read_text(path).splitlines()
    if not lines or lines[0].split("\t") != ["sentence", "label"]:
        raise GPT2Error(f"{path} does not start with the header 'sentence<TAB>label'; is it GLUE's SST-2 dev.tsv?")
    out = []
    for n, line in enumerate(lines[1:], 2):
        sentence, _, label = line.rpartition("\t")
        if label not in ("0", "1"):
            raise GPT2Error(f"{path}:{n}: the label must be 0 or 1, got {label!r}")
        out.append((sentence, int(label)))
    return out


@dataclass
class RaceQuestion:
    article: str
    question: str
    options: list[str]
    answer: int


def load_race(directory: Path) -> list[RaceQuestion]:
    """RACE (Lai et al. 2017): one JSON file per article ({"article", "questions", "options", "answers"}),
    under test/middle and test/high. Files are read in sorted order."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".txt", ".json"))
    out = []
    for p in files:
        try:
            d = json.loads(read_text(p))
            for q, opts, a in zip(d["questions"], d["options"], d["answers"], strict=True):
                out.append(RaceQuestion(d["article"], q, list(opts), "ABCD".index(a)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise GPT2Error(f"{p} is not a RACE article file ({type(e).__name__}: {e})") from None
    if not out:
        raise GPT2Error(f"no RACE article files below {directory}")
    return out


# ============================================================================
# The sources

_WT2_ZIP = "https://wikitext.smerity.com/wikitext-2-v1.zip"
_WT103_ZIP = "https://wikitext.smerity.com/wikitext-103-v1.zip"
_CBT_TGZ = "http://www.thespermwhale.com/jaseweston/babi/CBTest.tgz"
# sacrebleu's pinned md5 for the filtered newstest2014 (what `sacrebleu -t wmt14` scores against)
_WMT14_TGZ = "https://statmt.org/wmt14/test-filtered.tgz"
_WMT14_MD5 = "84c597844c1542e29c2aff23aaee4310"
_COLA = "https://raw.githubusercontent.com/nyu-mll/CoLA-baselines/dd095d3646ed05a315280aaa8ed4ec84ba435b3e/acceptability_corpus/cola_public/raw/"

SOURCES: dict[str, Source] = {
    s.key: s
    for s in [
        Source(
            "wikitext2-test", ("wikitext-2/wiki.test.tokens",), _WT2_ZIP, member="wikitext-2/wiki.test.tokens",
            check=_count_tokens_check(245_569, "WikiText-2 test set"), hint=r"(?i)wiki(text)?[-_]?2(?!\d)",
        ),
        Source(
            "wikitext103-test", ("wikitext-103/wiki.test.tokens",), _WT103_ZIP, member="wikitext-103/wiki.test.tokens",
            check=_count_tokens_check(245_569, "WikiText-103 test set"), hint=r"(?i)103",
        ),
        Source(
            "ptb-test", ("simple-examples/data/ptb.test.txt", "ptb.test.txt"),
            "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz", member="./simple-examples/data/ptb.test.txt",
            check=_count_tokens_check(82_430, "Penn Treebank test set"),
        ),
        Source(
            "1bw-test",
            ("heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050", "news.en.heldout-00000-of-00050"),
            "http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output.tar.gz",
            member="1-billion-word-language-modeling-benchmark-r13output/heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050",
        ),
        Source("enwik8", ("enwik8",), "http://mattmahoney.net/dc/enwik8.zip", member="enwik8", check=_size_check(100_000_000)),
        Source("text8", ("text8",), "http://mattmahoney.net/dc/text8.zip", member="text8", check=_size_check(100_000_000)),
        Source(
            "lambada-test", ("lambada_test.jsonl",), "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
            sha256="4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
        ),
        Source(
            "cbt-cn-valid", ("CBTest/data/cbtest_CN_valid_2000ex.txt", "cbtest_CN_valid_2000ex.txt"), _CBT_TGZ,
            member="CBTest/data/cbtest_CN_valid_2000ex.txt", check=_parses(load_cbt, 2000, "questions"),
        ),
        Source(
            "cbt-ne-valid", ("CBTest/data/cbtest_NE_valid_2000ex.txt", "cbtest_NE_valid_2000ex.txt"), _CBT_TGZ,
            member="CBTest/data/cbtest_NE_valid_2000ex.txt", check=_parses(load_cbt, 2000, "questions"),
        ),
        Source(
            "wsc273", ("WSCollection.xml",), "https://cs.nyu.edu/faculty/davise/papers/WinogradSchemas/WSCollection.xml",
            check=_parses(load_wsc, 273, "schemas"),
        ),
        Source("coqa-dev", ("coqa-dev-v1.0.json",), "https://nlp.stanford.edu/data/coqa/coqa-dev-v1.0.json", check=_parses(load_coqa, 1, "stories")),
        Source(
            "cnndm-test-urls", ("url_lists/all_test.txt", "all_test.txt"),
            "https://raw.githubusercontent.com/abisee/cnn-dailymail/b15ad0a2db0d407a84b8ca9b5731e1f1c4bd24b9/url_lists/all_test.txt",
            sha256="c4f5efb5ec2126430a5c156efbd13d0e9c4cb490169e552c38b4a51981a009bd",
        ),
        Source(
            "cnndm-stories", ("cnn_dailymail", "cnn_stories", "cnn"), is_dir=True,
            how="download cnn_stories.tgz and dailymail_stories.tgz from https://cs.nyu.edu/~kcho/DMQA/, unpack them into "
            "one folder named cnn_dailymail, and pass its parent as --data-dir",
        ),
        *(
            Source(
                f"wmt14-{pair}-{side}", (f"test/newstest2014-fren-{side}.{lang}.sgm", f"newstest2014-fren-{side}.{lang}.sgm"),
                _WMT14_TGZ, member=f"test/newstest2014-fren-{side}.{lang}.sgm", md5=_WMT14_MD5, check=_parses(load_sgm, 1, "segments"),
            )
            for pair, side, lang in [("en-fr", "src", "en"), ("en-fr", "ref", "fr"), ("fr-en", "src", "fr"), ("fr-en", "ref", "en")]
        ),
        Source(
            "nq-open-dev", ("NQ-open.dev.jsonl",),
            "https://raw.githubusercontent.com/google-research-datasets/natural-questions/"
            "fb26a3073b1fe636c97302890a27b491d6530130/nq_open/NQ-open.dev.jsonl",
            sha256="f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616",
        ),
        Source(
            "sst2-dev", ("SST-2/dev.tsv",), "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip", member="SST-2/dev.tsv",
            check=_parses(load_sst2, 872, "sentences"), hint=r"(?i)sst",
        ),
        Source("cola-in-domain-dev", ("cola_public/raw/in_domain_dev.tsv", "in_domain_dev.tsv"), _COLA + "in_domain_dev.tsv",
               sha256="77176f6a03faa5a1c4f23c69971fc1bff565931112fb65af47b2d6e24b7f42f7"),
        Source("cola-out-of-domain-dev", ("cola_public/raw/out_of_domain_dev.tsv", "out_of_domain_dev.tsv"), _COLA + "out_of_domain_dev.tsv",
               sha256="201b9c57b2a20f1282242eec0ed8995729e3be19c29a46c047b3727338836c05"),
        Source("race-test", ("RACE/test",), "http://www.cs.cmu.edu/~glai1/data/race/RACE.tar.gz", member="RACE/test", is_dir=True),
        Source(
            "story-cloze-val",
            ("cloze_test_val__spring2016 - cloze_test_ALL_val.csv", "cloze_test_val__spring2016.csv", "cloze_test_val__spring2016.tsv"),
            check=_parses(load_story_cloze, 1871, "stories"),
            how="request the Story Cloze Test (Spring 2016) from https://cs.rochester.edu/nlp/rocstories/ and put "
            "'cloze_test_val__spring2016 - cloze_test_ALL_val.csv' in --data-dir",
        ),
    ]
}


# ============================================================================
# Finding and fetching


@dataclass
class Resolved:
    """Where a source was found, and the checksum of what was read."""

    source: Source
    path: Path
    origin: str
    """'data-dir', 'cache' or 'download'"""
    sha256: str = field(default="")

    def record(self) -> dict:
        return {"source": self.source.key, "path": str(self.path), "sha256": self.sha256, "origin": self.origin}


def _tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (sorted relative paths and contents)."""
    if path.is_file():
        return download.sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0")
        h.update(download.sha256_file(p).encode())
    return h.hexdigest()


def _verify(source: Source, path: Path, downloaded: bool) -> None:
    if source.sha256 and not source.is_dir and not source.member:
        digest = download.sha256_file(path)
        if digest != source.sha256:
            raise GPT2Error(
                f"{path} has sha256 {digest}, but the published {source.key} file has {source.sha256}: "
                f"{'the download is corrupt' if downloaded else 'it is another version or a damaged copy'}; "
                f"replace it with the file from {source.url}"
            )
    if source.check is not None:
        problem = source.check(path)
        if problem:
            raise GPT2Error(f"{problem}: this is not the canonical {source.key} file; get it from {source.url or source.how}")


def _exists(path: Path, source: Source) -> bool:
    return path.is_dir() if source.is_dir else path.is_file()


def _in_data_dir(source: Source, data_dir: Path) -> Path | None:
    for rel in source.paths:
        if _exists(data_dir / rel, source):
            return data_dir / rel
    hint = re.compile(source.hint) if source.hint else None
    for rel in source.paths:
        name = Path(rel).name
        for p in sorted(data_dir.rglob(name)):
            if _exists(p, source) and (hint is None or hint.search(str(p.relative_to(data_dir)))):
                return p
    return None


def cache_path(source: Source) -> Path:
    return download.cache_dir() / "eval" / source.key / Path(source.member or source.paths[0]).name


def locate(source: Source, data_dir: Path | None = None) -> Resolved:
    """Find `source` under data_dir, in the cache, or download it; verify it; return where it is."""
    if data_dir is not None:
        data_dir = Path(data_dir)
        found = _in_data_dir(source, data_dir)
        if found is not None:
            _verify(source, found, downloaded=False)
            return Resolved(source, found, "data-dir", _tree_sha256(found))
    cached = cache_path(source)
    if _exists(cached, source):
        _verify(source, cached, downloaded=False)
        return Resolved(source, cached, "cache", _tree_sha256(cached))
    where = f" (looked below {data_dir} and in {cached.parent})" if data_dir else f" (looked in {cached.parent})"
    if source.url is None:
        raise GPT2Error(f"{source.key} is not available{where}: {source.how}")
    if download.offline():
        raise GPT2Error(
            f"{source.key} is not available{where} and GPT2_OFFLINE is set: download {source.url}"
            + (f" and take {source.member} from it," if source.member else ",")
            + f" then put it in --data-dir as {source.paths[0]} or at {cached}; or unset GPT2_OFFLINE"
        )
    _fetch(source, cached)
    _verify(source, cached, downloaded=True)
    return Resolved(source, cached, "download", _tree_sha256(cached))


def locate_all(keys: Iterable[str], data_dir: Path | None = None) -> dict[str, Resolved]:
    """`locate` every source named in `keys`. If some cannot be had, one error lists them all, each with
    what to fetch and where it goes, so that they can be fixed together rather than one run at a time."""
    resolved, problems = {}, []
    for key in dict.fromkeys(keys):
        try:
            resolved[key] = locate(SOURCES[key], data_dir)
        except GPT2Error as e:
            problems.append(str(e))
    if len(problems) == 1:
        raise GPT2Error(problems[0])
    if problems:
        raise GPT2Error(f"{len(problems)} datasets are not available:\n" + "\n".join(f"  - {p}" for p in problems))
    return resolved


def _download(url: str, dest: Path, sha256: str | None, md5: str | None) -> None:
    """Download to dest, checking a published sha256 / md5 when there is one (else the format check follows)."""
    download.fetch(url, sha256, dest, md5=md5)


def _fetch(source: Source, dest: Path) -> None:
    if source.member is None:
        _download(source.url, dest, source.sha256, source.md5)
        return
    # an archive: download it once, unpack every member that some source needs, then drop it
    archive = download.cache_dir() / "eval" / "_archives" / Path(source.url).name
    if not archive.is_file():
        _download(source.url, archive, source.sha256, source.md5)
    wanted = {s.member: cache_path(s) for s in SOURCES.values() if s.url == source.url and s.member}
    _extract(archive, wanted)
    if not _exists(dest, source):
        raise GPT2Error(f"{archive} does not contain {source.member}; the archive at {source.url} has changed")
    if all(_exists(p, s) for s in SOURCES.values() if s.url == source.url and s.member for p in [cache_path(s)]):
        archive.unlink()


def _extract(archive: Path, wanted: dict[str, Path]) -> None:
    """Copy the members named in `wanted` (files, or directories with everything below them) out of a zip / tar."""

    def norm(name: str) -> str:
        return name.removeprefix("./").rstrip("/")

    def target(name: str) -> Path | None:
        name = norm(name)
        if ".." in Path(name).parts:  # never write outside the cache
            return None
        for member, dest in wanted.items():
            if name == norm(member):
                return dest
            if name.startswith(norm(member) + "/"):
                return dest / name[len(norm(member)) + 1 :]
        return None

    def write(dest: Path, f) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with open(part, "wb") as out:
            shutil.copyfileobj(f, out)
        os.replace(part, dest)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir() and (dest := target(info.filename)) is not None:
                    with z.open(info) as f:
                        write(dest, f)
        return
    try:
        with tarfile.open(archive) as t:
            for m in t:
                if m.isfile() and (dest := target(m.name)) is not None:
                    write(dest, t.extractfile(m))
    except (tarfile.TarError, gzip.BadGzipFile, EOFError) as e:
        raise GPT2Error(f"{archive} is not a readable archive ({e}); delete it and run again") from None
