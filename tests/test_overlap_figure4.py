"""Figure 4 of the paper (section 4, memorisation): `gpt2 report` plots training and held-out perplexity against
model size from the training runs of the evaluated models."""

from __future__ import annotations

import json
import math

import matplotlib.image
import pytest
import torch

from conftest import SHARED
from gpt2.config import EvalConfig, ReportConfig
from gpt2.evaluate import report

pytestmark = pytest.mark.usefixtures("one_thread")


def metrics(run, losses: list[tuple[int, str, float]]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "kind": kind, ("loss" if kind == "train" else "val_loss"): v}) for s, kind, v in losses]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 9, "ki')  # and a line cut short by a kill


def test_training_and_held_out_loss_of_a_run(tmp_path):
    run = tmp_path / "runs" / "small"
    metrics(run, [(1, "train", 5.0), (2, "train", 4.0), (2, "eval", 4.5), (3, "train", 3.0), (4, "train", float("nan")),
                  (5, "train", 2.0), (5, "eval", 3.5), (6, "train", 1.0)])
    assert report.train_and_held_out_loss(run) == (2.5, 3.5, 5)  # steps 3-5 (the NaN skipped), the evaluation at 5
    for path in (run, run / "model", run / "checkpoints" / "step_5"):
        assert report.training_run(str(path)) == run
    assert report.training_run(str(tmp_path / "elsewhere" / "model")) is None
    metrics(tmp_path / "no-eval", [(1, "train", 5.0)])
    assert report.train_and_held_out_loss(tmp_path / "no-eval") is None


def test_report_draws_figure4_from_the_runs(gpt2_tokenizer, tmp_path, monkeypatch):
    from gpt2.evaluate.run import evaluate
    from gpt2.model import GPT, GPTConfig

    monkeypatch.setenv("GPT2_OFFLINE", "1")
    outs = []
    for width, (train, held_out) in ((32, (4.0, 4.4)), (64, (3.0, 3.6))):
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=width)).eval()
        run = tmp_path / "runs" / f"w{width}"
        metrics(run, [(10, "train", train), (10, "eval", held_out)])
        out = tmp_path / "evals" / f"w{width}"
        evaluate(model, gpt2_tokenizer, EvalConfig(model=str(run / "model"), out=out, tasks=["lambada"], data_dir=SHARED, limit=2), progress=False)
        outs.append(out)
    files = report.report_command(ReportConfig(results=outs, out=tmp_path / "report"))
    assert tmp_path / "report" / report.TRAIN_HELD_OUT_PLOT in files
    assert matplotlib.image.imread(tmp_path / "report" / report.TRAIN_HELD_OUT_PLOT).ndim == 3
    losses = [report.train_and_held_out_loss(report.training_run(str(tmp_path / "runs" / f"w{w}" / "model"))) for w in (32, 64)]
    assert [math.exp(t) for t, _, _ in losses] == pytest.approx([math.exp(4.0), math.exp(3.0)])
    # evaluations of models that come from no training run: no Figure 4, and no error
    runs = [report.load_results(o) for o in outs]
    for r in runs:
        r["model"]["path"] = str(tmp_path / "hf" / "gpt2")
    assert report.plot_train_vs_held_out(runs, tmp_path) == [] and not (tmp_path / report.TRAIN_HELD_OUT_PLOT).exists()
