"""torchrun with 2 CPU processes (gloo): DDP and FSDP2 against one process with the same global batch.

Both layouts see the same windows at every step (the loader splits a step's
global batch across ranks) and average the same gradients, so they differ from
one process only by the order of float32 additions. Tolerance: losses and
weights within 2e-5 (relative) after 6 steps in float32.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import GPT2_BPE, REPO, SHARED
from gpt2.config import to_toml
from gpt2.train import Trainer
from test_train import _restore_threads, assert_same_weights, make_dataset, tiny_config  # noqa: F401

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run: 6 steps of 16 sequences, as 4 micro-batches of 4."""
    root = tmp_path_factory.mktemp("dist")
    data = make_dataset(root)
    cfg = dict(
        dtype="float32", max_steps=6, batch_size=4, global_batch_tokens=16 * 32,
        model={"dropout": 0.0}, eval={"interval": 3}, checkpoint={"interval": 3, "keep_last": 5},
    )
    Trainer(tiny_config(data, root / "single", **cfg)).run()
    return root, data, cfg


@pytest.fixture(scope="module")
def layouts(reference):
    """The same run under DDP and FSDP2 (2 processes), beside the single-process one: {layout: run directory}."""
    root, data, cfg = reference
    runs = {"one": root / "single"}
    for parallel in ("ddp", "fsdp"):
        r = torchrun(tiny_config(data, root / parallel, parallel=parallel, **cfg), root, parallel)
        assert "2 process(es) x 2 micro-batch(es) x 4 x 32 tokens" in r.stderr
        runs[parallel] = root / parallel
    return runs


def torchrun(cfg, root, name):
    toml = root / f"{name}.toml"
    toml.write_text(to_toml(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gpt2", "train", "--config", str(toml)],
        cwd=REPO, env={**os.environ, "GPT2_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def metrics(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"], [r["val_loss"] for r in records if r["kind"] == "eval"]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(reference, layouts, parallel):
    root, data, cfg = reference
    single_losses, single_val = metrics(root / "single")
    losses, val = metrics(root / parallel)
    assert len(losses) == 6 and len(val) == 2
    assert losses == pytest.approx(single_losses, rel=2e-5)
    assert val == pytest.approx(single_val, rel=2e-5)
    a = load_file(root / "single" / "checkpoints" / "step_0000006" / "model.safetensors")
    b = load_file(root / parallel / "checkpoints" / "step_0000006" / "model.safetensors")
    assert_same_weights(a, b, 2e-6)
    # the checkpoint holds both processes' random states, for an exact resume
    assert set(load_file(root / parallel / "checkpoints" / "step_0000006" / "rng.safetensors")) == {"rank0.cpu", "rank1.cpu"}


@pytest.mark.parametrize(
    "first, then", [("fsdp", "one"), ("one", "fsdp"), ("ddp", "one"), ("one", "ddp"), ("ddp", "fsdp"), ("fsdp", "ddp")]
)
def test_a_checkpoint_resumes_in_every_other_layout(reference, layouts, tmp_path, first, then):
    """A run checkpointed at step 3 in one layout (one process, DDP or FSDP2) and resumed to step 6 in another ends
    where the one-process run ends, up to float32 summation order; the global batch and the data order are kept."""
    root, data, cfg = reference
    run = tmp_path / f"{first}-{then}"
    shutil.copytree(layouts[first], run)
    shutil.rmtree(run / "checkpoints" / "step_0000006")
    resumed = tiny_config(data, run, resume=True, **{**cfg, "global_batch_tokens": 0})  # the batch comes from the checkpoint
    if then == "one":
        result = Trainer(resumed)
        assert result.job.tokens_per_step == 16 * 32 and result.loader.accum == 4
        result.run()
    else:
        r = torchrun(tiny_config(data, run, resume=True, parallel=then, **{**cfg, "global_batch_tokens": 0}), tmp_path, then)
        assert "keeping this run's global batch of 512 tokens per step" in r.stderr or first != "one", r.stderr[-2000:]
    want = load_file(root / "single" / "checkpoints" / "step_0000006" / "model.safetensors")
    got = load_file(run / "checkpoints" / "step_0000006" / "model.safetensors")
    assert_same_weights(want, got, 2e-6)
    losses, _ = metrics(run)
    assert losses == pytest.approx(metrics(root / "single")[0], rel=2e-5)


def test_a_user_error_under_torchrun_is_one_line_and_torchruns_root_cause(reference, tmp_path):
    """Rank 0 prints the one-line error once; torchrun's failure summary names it as the root cause (not "<N/A>")."""
    root, data, _ = reference
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gpt2", "train",
         "--data.dir", str(data), "--out", str(tmp_path / "run"), "--max-steps", "5", "--optim.warmup-steps", "10"],
        cwd=REPO, env={**os.environ, "GPT2_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    message = "gpt2 train: error: optim.warmup_steps (10) is longer than max_steps (5)"
    assert r.returncode != 0
    assert r.stderr.splitlines()[0].startswith(message)
    assert sum(line.startswith(message) for line in r.stderr.splitlines()) == 1
    root_cause = r.stderr.split("Root Cause")[1]  # the other process may show as stopped by torchrun instead
    assert f"traceback : {message}" in root_cause and "<N/A>" not in root_cause
    assert not (tmp_path / "run").exists()


def test_a_first_smoke_test_needs_no_warmup_setting(reference, tmp_path):
    """`gpt2 train --data.dir D --max-steps 50`: the default warm-up shrinks to a tenth of the run."""
    _, data, _ = reference
    cfg = tiny_config(data, tmp_path / "run", max_steps=50, optim={"warmup_steps": None})
    assert Trainer(cfg).warmup == 5


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_fine_tuning_on_two_processes_matches_one(tmp_path, parallel):
    """`gpt2 finetune` under torchrun: 2 processes x 4 examples per step end where one process with 2 micro-batches
    of 4 ends (float32 summation order aside), and score the evaluation split alike."""
    from gpt2.config import FinetuneConfig, from_dict
    from gpt2.finetune.run import finetune
    from gpt2.model import GPT, GPTConfig
    from gpt2.tokenizer import Tokenizer
    from gpt2.weights import save_model

    torch.manual_seed(0)
    save_model(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50257, pad_vocab_to=64)), tmp_path / "base",
               tokenizer=Tokenizer.load(GPT2_BPE))
    cfg = {"task": "stsb", "model": str(tmp_path / "base"), "seed": 3, "batch_size": 8, "micro_batch_size": 4,
           "max_steps": 4, "dtype": "float32", "dropout": 0.0, "max_len": 48, "threads": 1,
           "data": {"dir": str(SHARED / "glue"), "max_train_examples": 64}, "eval": {"interval": 0}, "log": {"plot": False, "peak_tflops": 1.0}}
    finetune(from_dict(FinetuneConfig, {**cfg, "out": str(tmp_path / "one")}, "test"))
    toml = tmp_path / "ft.toml"
    toml.write_text(to_toml(from_dict(FinetuneConfig, {**cfg, "out": str(tmp_path / parallel), "parallel": parallel}, "test")))
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gpt2", "finetune", "--config", str(toml)],
        cwd=REPO, env={**os.environ, "GPT2_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es) x 1 micro-batch(es) x 4" in r.stderr
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text())["metrics"] for name in ("one", parallel))
    assert two == pytest.approx(one, rel=1e-4)
    a, b = (load_file(tmp_path / name / "model" / "head.safetensors") for name in ("one", parallel))
    assert_same_weights(a, b, 2e-6)
    losses = [metrics_of(tmp_path / name) for name in ("one", parallel)]
    assert losses[1] == pytest.approx(losses[0], rel=2e-5)


def metrics_of(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"kind": "train"' in line]
