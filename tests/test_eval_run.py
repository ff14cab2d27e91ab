"""`gpt2 eval` / `gpt2 report`: results files, the Table 3 report, per-task caching and resuming, plots, errors."""

from __future__ import annotations

import json
import re

import matplotlib.image
import numpy as np
import pytest
import torch

from conftest import SHARED
from gpt2.config import EvalConfig, ReportConfig
from gpt2.errors import GPT2Error
from gpt2.evaluate import cloze, language_modeling, report
from gpt2.evaluate.datasets import SOURCES, cache_path
from gpt2.evaluate.run import evaluate, model_fingerprint
from gpt2.model import GPT, GPTConfig
from gpt2.tokenizer import Tokenizer

TASKS = ["lambada", "wikitext2", "wsc273"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2_OFFLINE", "1")
    monkeypatch.setenv("GPT2_CACHE", str(tmp_path / "cache"))


def tiny(seed: int = 0, n_embd: int = 32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=n_embd)).eval()


def config(out, **kw) -> EvalConfig:
    return EvalConfig(**{"model": "tiny", "out": out, "tasks": TASKS, "data_dir": SHARED, "limit": 12, **kw})


def test_results_and_report(gpt2_tokenizer, tmp_path):
    results = evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run"), progress=False)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["tasks"].keys() == set(TASKS) and saved["model"]["sha256"] == model_fingerprint(tiny())
    assert saved["model"]["n_params"] == tiny().num_params() and saved["settings"]["limit"] == 12
    lam = saved["tasks"]["lambada"]
    assert {m["id"] for m in lam["metrics"]} == {"acc", "acc-last-token", "acc-stopword-filter", "ppl"}
    assert all(m["variant"] and isinstance(m["value"], float) for t in saved["tasks"].values() for m in t["metrics"])
    assert lam["datasets"][0]["sha256"] == "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226"
    assert lam["n_examples"] == 12 and lam["tokens_scored"] >= 12 and lam["seconds"] > 0 and lam["positions_run"] > 0
    assert saved["tasks"]["wikitext2"]["details"]["original_words"] == len("".join(
        (SHARED / "wikitext2_tokens" / "wiki.test.tokens").read_text().splitlines(keepends=True)[:12]).split())
    assert saved["environment"]["torch"] == torch.__version__
    assert results["tasks"]["wsc273"]["metrics"] == saved["tasks"]["wsc273"]["metrics"]
    assert (tmp_path / "run" / "config.toml").read_text().count("limit = 12") == 1

    md = (tmp_path / "run" / "report.md").read_text()
    assert "| Model | LAMBADA (PPL) | LAMBADA (ACC) | CBT-CN (ACC) | CBT-NE (ACC) | WikiText2 (PPL) | PTB (PPL) |" in md
    assert "| 117M *paper* | 35.13 | 45.99 | 87.65 | 83.4 | 29.41 | 65.85 | 1.16 | 1.17 | 37.50 | 75.20 |" in md
    assert "| 762M *paper* | 10.87 | 60.12 | 93.45 | 88.0 | 19.93 | 40.31 | 0.97 | 1.02 | 22.05 | 44.575 |" in md  # as printed
    assert "| 1542M *paper* | 8.63 | 63.24 | 93.30 | 89.05 | 18.34 | 35.76 | 0.93 | 0.98 | 17.48 | 42.16 |" in md
    ppl = report._fmt(saved["tasks"]["lambada"]["metrics"][3]["value"])
    wt2 = report._fmt(saved["tasks"]["wikitext2"]["metrics"][0]["value"])
    row = next(line for line in md.splitlines() if line.startswith("| tiny ("))
    assert row.split(" | ")[1:6] == [ppl, "0.00", "—", "—", wt2]
    assert "70.70" in md and "acc-partial" in md  # WSC next to the paper's 1542M number
    assert "whole word: every token of the last word is the greedy choice" in md and "4aa8d02cd17c7191" in md


def test_interrupted_run_resumes_from_the_cache(gpt2_tokenizer, tmp_path, monkeypatch):
    reference = evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "reference"), progress=False)

    def interrupted(ctx):
        raise KeyboardInterrupt

    original = language_modeling.wikitext2
    monkeypatch.setattr(language_modeling, "wikitext2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run"), progress=False)
    done = sorted(p.name for p in (tmp_path / "run" / "tasks").glob("*.json"))
    assert len(done) == 1 and done[0].startswith("lambada-")
    assert not (tmp_path / "run" / "results.json").exists()

    def must_not_run(ctx):
        raise AssertionError("a cached task ran again")

    monkeypatch.setattr(language_modeling, "wikitext2", original)
    monkeypatch.setattr(cloze, "lambada", must_not_run)
    resumed = evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run"), progress=False)
    assert resumed["tasks"]["lambada"]["cached"] and not resumed["tasks"]["wsc273"]["cached"]
    for name in TASKS:
        assert resumed["tasks"][name]["metrics"] == reference["tasks"][name]["metrics"]


def test_an_interrupted_generation_task_resumes_at_its_next_prompt(gpt2_tokenizer, tmp_path):
    from gpt2.sample import generate

    def settings(out):  # Natural Questions, several small batches of prompts
        return config(out, tasks=["nq"], nq_shots=2, limit=10, batch_tokens=200)

    reference = evaluate(tiny(), gpt2_tokenizer, settings(tmp_path / "reference"), generate=generate, progress=False)
    calls = []

    def interrupted(model, prompts, *args, **kwargs):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return generate(model, prompts, *args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny(), gpt2_tokenizer, settings(tmp_path / "run"), generate=interrupted, progress=False)
    (partial,) = (tmp_path / "run" / "tasks").glob("nq-*.partial.jsonl")
    assert len(partial.read_text().splitlines()) == calls[0] + calls[1]
    with open(partial, "a") as f:
        f.write('{"desc": "Natural Questions", "pro')  # a line cut short by the interruption
    rerun = []

    def counted(model, prompts, *args, **kwargs):
        rerun.append(len(prompts))
        return generate(model, prompts, *args, **kwargs)

    resumed = evaluate(tiny(), gpt2_tokenizer, settings(tmp_path / "run"), generate=counted, progress=False)
    assert sum(rerun) == reference["tasks"]["nq"]["n_examples"] - calls[0] - calls[1]  # only the prompts not done
    assert resumed["tasks"]["nq"]["metrics"] == reference["tasks"]["nq"]["metrics"]
    ref, got = ([json.loads(line) for line in p.read_text().splitlines()]
                for d in ("reference", "run") for p in (tmp_path / d / "tasks").glob("nq-*.samples.jsonl"))
    assert [r["answer"] for r in got] == [r["answer"] for r in ref] and not partial.exists()
    # confidences come from the generation batches, which differ after a resume: equal up to float rounding
    assert [r["logprob"] for r in got] == pytest.approx([r["logprob"] for r in ref], rel=1e-6)


def test_new_settings_get_new_cache_entries_and_force_recomputes(gpt2_tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "run"
    evaluate(tiny(), gpt2_tokenizer, config(out, tasks=["lambada"]), progress=False)
    evaluate(tiny(), gpt2_tokenizer, config(out, tasks=["lambada"], limit=5, batch_tokens=100), progress=False)
    assert len(list((out / "tasks").glob("lambada-*[0-9a-f].json"))) == 2  # limit changes the numbers; nothing overwritten
    calls = []
    original = cloze.lambada
    monkeypatch.setattr(cloze, "lambada", lambda ctx: calls.append(1) or original(ctx))
    evaluate(tiny(), gpt2_tokenizer, config(out, tasks=["lambada"], limit=5, batch_tokens=999), progress=False)
    assert calls == []  # batch size does not change the numbers: served from the cache
    evaluate(tiny(), gpt2_tokenizer, config(out, tasks=["lambada"], limit=5, force=True), progress=False)
    assert calls == [1]


def test_tokenizers_differing_only_in_their_pattern_do_not_share_cached_results(gpt2_tokenizer, tmp_path):
    merges = [(a, b, new) for (a, b), new in gpt2_tokenizer.merges.items()]
    words = Tokenizer(gpt2_tokenizer.vocab, merges, gpt2_tokenizer.special_tokens, gpt2_tokenizer.byte_ids, pattern=r" ?\S+|\s+")
    assert words.fingerprint() != gpt2_tokenizer.fingerprint()
    first = evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run", tasks=["lambada"], limit=3), progress=False)
    second = evaluate(tiny(), words, config(tmp_path / "run", tasks=["lambada"], limit=3), progress=False)
    assert not second["tasks"]["lambada"]["cached"]
    assert first["tasks"]["lambada"]["cache_key"] != second["tasks"]["lambada"]["cache_key"]
    assert second["tokenizer"]["sha256"] == words.fingerprint()
    assert evaluate(tiny(), words, config(tmp_path / "run", tasks=["lambada"], limit=3), progress=False)["tasks"]["lambada"]["cached"]


def test_another_model_does_not_overwrite_results(gpt2_tokenizer, tmp_path):
    out = tmp_path / "run"
    evaluate(tiny(0), gpt2_tokenizer, config(out, tasks=["lambada"]), progress=False)
    with pytest.raises(GPT2Error, match="another model.*--force"):
        evaluate(tiny(1), gpt2_tokenizer, config(out, tasks=["lambada"]), progress=False)
    evaluate(tiny(1), gpt2_tokenizer, config(out, tasks=["lambada"], force=True), progress=False)
    assert json.loads((out / "results.json").read_text())["model"]["sha256"] == model_fingerprint(tiny(1))


def test_fingerprint_sees_every_weight():
    a, b = tiny(), tiny()
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.transformer.h[1].mlp.c_fc.bias[3] += 1e-7
    assert model_fingerprint(a) != model_fingerprint(b)


def test_missing_data_fails_before_any_work(gpt2_tokenizer, tmp_path):
    with pytest.raises(GPT2Error, match="cbt-cn-valid is not available.*GPT2_OFFLINE"):
        evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run", tasks=["lambada", "cbt-cn"]), progress=False)
    assert not (tmp_path / "run").exists()


def test_every_missing_dataset_is_named_at_once_with_where_it_goes(gpt2_tokenizer, tmp_path):
    with pytest.raises(GPT2Error) as e:
        evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run", tasks=["table3"]), progress=False)
    lines = str(e.value).splitlines()
    missing = ["cbt-cn-valid", "cbt-ne-valid", "enwik8", "text8", "wikitext103-test", "1bw-test"]  # SHARED has the others
    assert lines[0] == f"{len(missing)} datasets are not available:" and len(lines) == 1 + len(missing)
    for line, key in zip(lines[1:], missing):
        source = SOURCES[key]
        assert line.startswith(f"  - {key} is not available") and "GPT2_OFFLINE is set" in line
        assert f"download {source.url}" in line and f"--data-dir as {source.paths[0]}" in line and str(cache_path(source)) in line
    assert not (tmp_path / "run").exists()


def test_tokenizer_must_fit_the_model(gpt2_tokenizer, tmp_path):
    small = GPT(GPTConfig(block_size=32, vocab_size=1000, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(GPT2Error, match="50,257 tokens but the model predicts only 1,000"):
        evaluate(small, gpt2_tokenizer, config(tmp_path / "run"), progress=False)


def test_report_of_several_models_with_plots(gpt2_tokenizer, tmp_path):
    for name, n_embd in (("small", 32), ("large", 64)):
        evaluate(tiny(n_embd=n_embd), gpt2_tokenizer, config(tmp_path / name, model=name, tasks=["lambada", "wikitext2"]), progress=False)
    files = report.report_command(ReportConfig(results=[tmp_path / "large", tmp_path / "small" / "results.json"], out=tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    small, large = md.index("| small ("), md.index("| large (")
    assert small < large  # smallest model first
    for png in files[1:]:
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 400 and np.ptp(image) > 0
    assert sorted(p.name for p in files) == ["language_modeling.png", "report.md", "zero_shot_tasks.png"]

    # a second report into the same folder needs --force; nothing is touched without it
    before = {p: p.read_bytes() for p in files}
    (tmp_path / "report" / "report.md").write_text("my notes")
    with pytest.raises(GPT2Error, match="already holds report.md, language_modeling.png, zero_shot_tasks.png; pass --force"):
        report.report_command(ReportConfig(results=[tmp_path / "small"], out=tmp_path / "report"))
    assert (tmp_path / "report" / "report.md").read_text() == "my notes"
    assert all(p.read_bytes() == b for p, b in before.items() if p.suffix == ".png")
    report.report_command(ReportConfig(results=[tmp_path / "small"], out=tmp_path / "report", force=True))
    replaced = (tmp_path / "report" / "report.md").read_text()
    assert "| small (" in replaced and "| large (" not in replaced


def test_report_labels_tell_models_and_partial_runs_apart(gpt2_tokenizer, tmp_path, caplog):
    caplog.set_level("INFO")
    runs = [
        evaluate(tiny(0), gpt2_tokenizer, config(tmp_path / "a", model=str(tmp_path / "a" / "model"), tasks=["wikitext2"]), progress=False),
        evaluate(tiny(1), gpt2_tokenizer, config(tmp_path / "b", model=str(tmp_path / "b" / "model"), tasks=["wikitext2"], limit=5), progress=False),
    ]
    words = runs[0]["tasks"]["wikitext2"]["details"]["original_words"]
    assert re.search(rf"wikitext2: ppl [0-9,.]+, token-ppl [0-9,.]+ \(1 document, {words:,} words, [0-9.]+ s\)", caplog.text)
    size = report.params(tiny().num_params())
    assert report.labels(runs) == [f"a/model ({size}), --limit 12", f"b/model ({size}), --limit 5"]  # both folders are named "model"
    md = report.markdown(runs)
    assert f"| a/model ({size}), --limit 12 | —" in md and f"### b/model ({size}), --limit 5" in md
    assert f"| WikiText-2 | 1 document, {words:,} words |" in md and "1 examples" not in md

    # the same path evaluated twice: told apart by the weights
    same = [{**r, "model": {**r["model"], "path": "runs/x/model", "name": "model"}} for r in runs]
    a, b = (r["model"]["sha256"][:8] for r in runs)
    assert report.labels(same) == [f"runs/x/model {a} ({size}), --limit 12", f"runs/x/model {b} ({size}), --limit 5"]
    # sizes keep three figures, from thousands to billions
    assert [report.params(n) for n in (167_936, 4_203_520, 124_439_808, 1_557_611_200)] == ["168K", "4.2M", "124M", "1.56B"]
    assert report.labels([{**runs[1], "model": {**runs[1]["model"], "n_params": 167_936}}]) == ["model (168K), --limit 5"]

    # a plot's line joins only runs evaluated on the same examples
    from matplotlib.figure import Figure

    full = {**runs[0], "settings": {**runs[0]["settings"], "limit": None}, "model": {**runs[0]["model"], "n_params": 10**6}}
    ax = Figure().subplots()
    report._panel(ax, [runs[0], runs[1], full], [("wikitext2", "ppl", "")], "WikiText-2 perplexity", "WikiText-2")
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines() if line.get_label() != "(paper)"}
    assert lines == {"(ours)": [10**6], "(ours, --limit 5)": [runs[1]["model"]["n_params"]], "(ours, --limit 12)": [runs[0]["model"]["n_params"]]}


def test_cli_errors_are_one_line(cli, tmp_path):
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    (tmp_path / "damaged.json").write_text('{"format": "gpt2-eval-results", "version": 1, "model": {"name": "m"}, "tasks": "x"}')
    cases = [
        (["report", "--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")], "does not exist"),
        (["report", "--results", str(tmp_path / "bad.json")], "not a results file written by `gpt2 eval`"),
        (["report", "--results", str(tmp_path / "damaged.json"), "--out", str(tmp_path / "r")], "is damaged (results has no 'environment')"),
        (["eval", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist"),
        (["eval", "--model", "x", "--out", "o", "--tasks", "lambada,nope"], "unknown task 'nope'"),
        (["eval", "--model", "x", "--out", "o", "--windows", "both"], "disjoint"),
        (["eval", "--model", "x", "--out", "o", "--cola-threshold", "nan"], "--cola-threshold must be a finite number"),
        (["eval", "--model", "x", "--out", "o", "--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
    ]
    for args, fragment in cases:
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and fragment in r.stderr, (args, r.stderr)


def test_a_damaged_task_file_is_computed_again(gpt2_tokenizer, tmp_path):
    first = evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run", tasks=["lambada"]), progress=False)
    (cached,) = (tmp_path / "run" / "tasks").glob("lambada-*[0-9a-f].json")
    for damage in ('{"task": "lamb', "{}"):  # cut short; valid JSON without the record
        cached.write_text(damage)
        again = evaluate(tiny(), gpt2_tokenizer, config(tmp_path / "run", tasks=["lambada"]), progress=False)
        assert not again["tasks"]["lambada"]["cached"] and again["tasks"]["lambada"]["metrics"] == first["tasks"]["lambada"]["metrics"]
        assert json.loads(cached.read_text())["task"] == "lambada"


def test_gpt2_eval_on_model_directories(cli, gpt2_tokenizer, tmp_path):
    """`gpt2 eval` on the project's own directory and on its Hugging Face export: the same numbers as the library."""
    from gpt2.weights import export_hf, save_model

    model = tiny()
    save_model(model, tmp_path / "ours", gpt2_tokenizer)
    export_hf(model, tmp_path / "hf", gpt2_tokenizer)
    args = ["--tasks", "lambada,wsc273", "--data-dir", str(SHARED), "--limit", "6", "--threads", "1"]
    for name in ("ours", "hf"):
        r = cli("eval", "--model", str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"), *args)
        assert r.returncode == 0, r.stderr
        assert "lambada: acc" in r.stderr and "wrote" in r.stderr
    library = evaluate(model, gpt2_tokenizer, config(tmp_path / "lib", tasks=["lambada", "wsc273"], limit=6), progress=False)
    for name in ("ours", "hf"):
        saved = json.loads((tmp_path / f"out-{name}" / "results.json").read_text())
        assert saved["model"]["name"] == name and saved["environment"]["command"][1:3] == ["eval", "--model"]
        for task in ("lambada", "wsc273"):
            got = [m["value"] for m in saved["tasks"][task]["metrics"]]
            assert got == pytest.approx([m["value"] for m in library["tasks"][task]["metrics"]], rel=1e-5)
