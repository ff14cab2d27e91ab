"""torchrun with 2 CPU processes (gloo): DDP and FSDP2 against one process with the same global batch.

Both layouts see the same windows at every step (the loader splits a step's
global batch across ranks) and average the same gradients, so they differ from
one process only by the order of float32 additions. Tolerance: losses and
weights within 2e-5 (relative) after 6 steps in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from conftest import REPO
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
        model={"dropout": 0.0}, eval={"interval": 3}, checkpoint={"interval": 6},
    )
    Trainer(tiny_config(data, root / "single", **cfg)).run()
    return root, data, cfg


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
def test_two_processes_match_one(reference, parallel):
    root, data, cfg = reference
    r = torchrun(tiny_config(data, root / parallel, parallel=parallel, **cfg), root, parallel)
    assert "2 process(es) x 2 micro-batch(es) x 4 x 32 tokens" in r.stderr
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
