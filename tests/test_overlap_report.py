"""`gpt2 overlap report`: Table 6 percentages equal an exact set computation on the shared datasets, per-example
overlap, and a `gpt2 eval` run's metrics recomputed on all / clean / dirty examples."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from conftest import SHARED, read_text
from gpt2.cli import main
from gpt2.config import EvalConfig, OverlapReportConfig
from gpt2.evaluate import detokenize
from gpt2.evaluate.datasets import load_lambada, load_wsc
from gpt2.overlap.report import report_command
from test_overlap_ngrams import reference_words

TRAIN = [SHARED / "wikitext2_tokens" / "wiki.valid.tokens", SHARED / "ptb" / "ptb.valid.txt"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    monkeypatch.setenv("GPT2_CACHE", str(tmp_path / "cache"))


def grams(text: str, n: int = 8) -> list[tuple]:
    w = reference_words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def build(tmp_path, *inputs, name="train.bloom"):
    path = tmp_path / name
    assert main(["-q", "overlap", "build", "--input", *map(str, inputs), "--out", str(path), "--workers", "1", "--random-queries", "1000"]) == 0
    return path


def test_table6_percentages_equal_an_exact_set_computation(tmp_path):
    bloom = build(tmp_path, *TRAIN)
    report = report_command(OverlapReportConfig(
        filter=bloom, out=tmp_path / "report", tasks=["wikitext2", "ptb", "lambada"], data_dir=SHARED,
        own_train=[f"ptb={TRAIN[1]}"],
    ))
    train = {g for p in TRAIN for g in grams(read_text(p))}
    passages = [detokenize.lambada(p) for p in load_lambada(SHARED / "lambada" / "lambada_test.jsonl")]
    test_sets = {
        "wikitext2": [detokenize.wikitext(read_text(SHARED / "wikitext2_tokens" / "wiki.test.tokens"))],
        "ptb": [detokenize.ptb(read_text(SHARED / "ptb" / "ptb.test.txt"))],
        "lambada": passages,
    }
    for name, docs in test_sets.items():
        every = [g for d in docs for g in grams(d)]
        got = report["test_sets"][name]
        assert (got["ngrams"], got["found"]) == (len(every), sum(g in train for g in every)), name
        assert got["percent"] == pytest.approx(100 * sum(g in train for g in every) / len(every))
        assert (got["distinct_ngrams"], got["distinct_found"]) == (len(set(every)), len(set(every) & train))
    assert report["test_sets"]["ptb"]["found"] > 100  # PTB valid and test share many 8-grams
    own = report["test_sets"]["ptb"]["own_train"]
    ptb_valid = set(grams(read_text(TRAIN[1])))
    ptb_test = grams(detokenize.ptb(read_text(SHARED / "ptb" / "ptb.test.txt")))
    assert own["kind"] == "exact" and own["found"] == sum(g in ptb_valid for g in ptb_test)

    # LAMBADA per passage, in `gpt2 eval`'s order
    lines = (tmp_path / "report" / "examples" / "lambada.jsonl").read_text().splitlines()
    assert len(lines) == 5153
    for i in (0, 1, 2, 100, 5152):
        g = grams(passages[i])
        record = json.loads(lines[i])
        assert record["index"] == i and record["ngrams"] == len(g) and record["found"] == sum(x in train for x in g)
    saved = json.loads((tmp_path / "report" / "overlap.json").read_text())
    assert saved["test_sets"]["wikitext2"]["paper"] == {"webtext_train_percent": 1.63, "own_train_percent": 0.66}
    md = (tmp_path / "report" / "overlap.md").read_text()
    assert "| PTB | 78,736 |" in md and "| 1BW | — | — | — | 3.75% | 13.19% |" in md
    assert "| WikiText-2 |" in md and "| LAMBADA | 5,153 |" in md
    assert matplotlib.image.imread(tmp_path / "report" / "overlap_histogram.png").shape[2] in (3, 4)
    # the report is not written over without --force
    with pytest.raises(Exception, match="--force"):
        report_command(OverlapReportConfig(filter=bloom, out=tmp_path / "report", tasks=["ptb"], data_dir=SHARED))


TASKS = ["lambada", "wsc273", "sst2", "cola", "story-cloze", "nq"]


def test_metrics_on_clean_and_dirty_examples_of_an_eval_run(gpt2_tokenizer, tmp_path):
    from gpt2.evaluate.run import evaluate
    from gpt2.model import GPT, GPTConfig
    from gpt2.sample import generate

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()
    cfg = EvalConfig(model="tiny", out=tmp_path / "eval", tasks=TASKS, data_dir=SHARED, limit=12, nq_shots=2)
    results = evaluate(model, gpt2_tokenizer, cfg, generate=generate, progress=False)

    # training text that holds LAMBADA passages 0, 3 and 7 whole, half of passage 5, and WSC schema 2
    passages = [detokenize.lambada(p) for p in load_lambada(SHARED / "lambada" / "lambada_test.jsonl")]
    words5 = passages[5].split()
    schema = load_wsc(SHARED / "wsc" / "WSCollection.xml")[2]
    docs = [passages[0], passages[3], "Filler text. " + passages[7], " ".join(words5[: len(words5) // 2]),
            f"{schema.before} {schema.pronoun} {schema.after}", read_text(TRAIN[1])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    bloom = build(tmp_path, tmp_path / "train.jsonl")
    code = main(["-q", "overlap", "report", "--filter", str(bloom), "--tasks", ",".join(TASKS), "--data-dir", str(SHARED),
                 "--results", str(tmp_path / "eval"), "--out", str(tmp_path / "report")])
    assert code == 0
    report = json.loads((tmp_path / "report" / "overlap.json").read_text())
    overlap = [json.loads(line)["overlap"] for line in (tmp_path / "report" / "examples" / "lambada.jsonl").read_text().splitlines()]
    assert [i for i in range(12) if overlap[i] == 1.0] == [0, 3, 7] and 0.15 < overlap[5] < 1.0
    for task in TASKS:  # on all examples, the recomputed metrics are the ones gpt2 eval reported
        c = report["test_sets"][task]["clean_dirty"]
        assert "skipped" not in c, c
        reported = {m["id"]: m["value"] for m in results["tasks"][task]["metrics"]}
        assert c["all"]["examples"] == results["tasks"][task]["n_examples"]
        assert c["all"]["metrics"] == pytest.approx({k: reported[k] for k in c["all"]["metrics"]}, rel=1e-12), task
        assert c["reported"] == {k: reported[k] for k in c["all"]["metrics"]}
    lam = report["test_sets"]["lambada"]["clean_dirty"]
    samples = [json.loads(line) for line in next((tmp_path / "eval" / "tasks").glob("lambada-*.samples.jsonl")).read_text().splitlines()]
    dirty = [0, 3, 5, 7]
    clean = [i for i in range(12) if overlap[i] == 0]
    assert lam["dirty"]["examples"] == 4 and lam["clean"]["examples"] == len(clean) >= 6
    ppl = lambda idx: float(np.exp(-np.mean([samples[i]["logprob"] for i in idx])))  # noqa: E731
    assert lam["dirty"]["metrics"]["ppl"] == pytest.approx(ppl(dirty)) and lam["clean"]["metrics"]["ppl"] == pytest.approx(ppl(clean))
    assert lam["dirty"]["metrics"]["acc-last-token"] == pytest.approx(100 * np.mean([samples[i]["greedy_last_token"] for i in dirty]))
    # WSC: schema 2 and its twin (schemas come in pairs that differ in a word or two) share 8-grams with the text
    texts = [f"{s.before} {s.pronoun} {s.after}" for s in load_wsc(SHARED / "wsc" / "WSCollection.xml")]
    shared = [sum(g in set(grams(texts[2])) for g in grams(t)) / max(len(grams(t)), 1) for t in texts]
    wsc = report["test_sets"]["wsc273"]
    assert wsc["examples"]["any_overlap"] == sum(x > 0 for x in shared) == 2
    assert wsc["clean_dirty"]["dirty"]["examples"] == sum(x > 0.15 for x in shared[:12])
    # NQ's first scored example is the one after the shots
    assert report["test_sets"]["nq"]["clean_dirty"]["first_example"] == 2
    md = (tmp_path / "report" / "overlap.md").read_text()
    assert "## Metrics on all, clean and dirty examples" in md and "| LAMBADA | acc-stopword-filter |" in md


@pytest.mark.slow
def test_every_local_task_against_an_exact_computation(tmp_path):
    """All the shared text that is no test set as training text (two worker processes, fp 1e-8); every task whose
    data is here: the report's counts equal exact sets of word tuples."""
    from gpt2.overlap.testsets import task_test_set

    train_files = [SHARED / "tinyshakespeare" / "input.txt", SHARED / "botchan" / "botchan.txt", *TRAIN,
                   *sorted((SHARED / "glue").rglob("*train*")), SHARED / "glue" / "STS-B" / "dev.tsv"]
    bloom = tmp_path / "shared.bloom"
    assert main(["-q", "overlap", "build", "--input", *map(str, train_files), "--out", str(bloom), "--workers", "2"]) == 0
    tasks = ["wikitext2", "ptb", "lambada", "wsc273", "nq", "sst2", "cola", "story-cloze", "cnndm"]
    report = report_command(OverlapReportConfig(filter=bloom, out=tmp_path / "report", tasks=tasks, data_dir=SHARED))
    train = {g for p in train_files for g in grams(read_text(p))}
    for task in tasks:
        ts = task_test_set(task, SHARED)
        every = [g for d in ts.documents for g in grams(d)]
        got = report["test_sets"][task]
        assert (got["ngrams"], got["found"]) == (len(every), sum(g in train for g in every)), task
        lines = (tmp_path / "report" / "examples" / f"{task}.jsonl").read_text().splitlines() if ts.examples else []
        for i, text in enumerate(ts.examples or []):
            g = grams(text)
            assert json.loads(lines[i])["found"] == sum(x in train for x in g), (task, i)
    assert report["test_sets"]["cola"]["found"] > 100
