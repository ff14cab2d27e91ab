"""Checkpoints (gpt2/checkpoint.py): exact round trip, rotation, atomicity, corrupt files.

The end-to-end resume tests (kill -9 between checkpoints and during a save)
are in test_train.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from gpt2 import checkpoint, distributed
from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig


def trained_state(steps: int = 3):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=200))
    opt = torch.optim.AdamW(gpt.parameters(), lr=1e-2, betas=(0.9, 0.95), fused=True)
    for _ in range(steps):
        x = torch.randint(0, 200, (2, 16))
        gpt(x, x)[1].backward()
        opt.step()
        opt.zero_grad()
    return gpt, opt


def save(root, step, val_loss=None, **kw):
    gpt, opt = trained_state(1)
    model_state, optim_state = distributed.full_state(gpt, opt)
    model_state.pop("lm_head.weight")
    rng = {"rank0.cpu": torch.get_rng_state()}
    return checkpoint.save(root, step, model_state, optim_state, rng, {"val_loss": val_loss}, **kw)


def test_round_trip_is_exact(tmp_path):
    gpt, opt = trained_state()
    model_state, optim_state = distributed.full_state(gpt, opt)
    model_state.pop("lm_head.weight")  # tied to the embedding: stored once
    rng = {"rank0.cpu": torch.get_rng_state()}
    path = checkpoint.save(tmp_path, 3, model_state, optim_state, rng, {"tokens": 96, "note": "x"})
    assert path.name == "step_0000003" and checkpoint.latest(tmp_path) == path
    ck = checkpoint.load(path)
    assert ck.step == 3 and ck.state["tokens"] == 96 and ck.state["format"] == "gpt2-checkpoint"
    assert ck.model.keys() == model_state.keys()
    assert all(torch.equal(ck.model[k], v) and ck.model[k].dtype == v.dtype for k, v in model_state.items())
    assert ck.optimizer["state"].keys() == optim_state["state"].keys()
    for name, entry in optim_state["state"].items():
        for key, value in entry.items():
            assert torch.equal(ck.optimizer["state"][name][key], value), (name, key)
    assert ck.optimizer["param_groups"] == optim_state["param_groups"]
    assert torch.equal(ck.rng["rank0.cpu"], rng["rank0.cpu"])
    # loading it into a fresh model and optimizer continues exactly as the original
    gpt2, opt2 = trained_state(0)
    model_state = dict(ck.model, **{"lm_head.weight": ck.model["transformer.wte.weight"]})
    distributed.load_full_state(gpt2, opt2, model_state, ck.optimizer, distributed.Dist())
    x = torch.randint(0, 200, (2, 16))
    for g, o in ((gpt, opt), (gpt2, opt2)):
        g(x, x)[1].backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(gpt.parameters(), gpt2.parameters()))


def test_keep_the_last_k_and_the_best(tmp_path):
    for step, loss in zip(range(1, 7), [5.0, 3.0, None, 6.0, 7.0, 8.0]):
        save(tmp_path / "a", step, loss, keep_last=2)
        save(tmp_path / "b", step, loss, keep_last=2, keep_best=False)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "a")] == [2, 5, 6]
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "b")] == [5, 6]


def test_half_written_checkpoints_are_never_loaded(tmp_path):
    save(tmp_path, 1)
    # what a save killed after its first file leaves behind
    stale = tmp_path / ".step_0000002.tmp-12345"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    incomplete = tmp_path / "step_0000003"  # a directory someone made by hand, without state.json
    incomplete.mkdir()
    assert checkpoint.latest(tmp_path).name == "step_0000001"
    save(tmp_path, 2)
    assert not stale.exists()  # the next save clears it away
    assert checkpoint.latest(tmp_path).name == "step_0000002"


def test_corrupt_or_foreign_checkpoints_are_user_errors(tmp_path):
    path = save(tmp_path, 1)
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:100])
    with pytest.raises(GPT2Error, match="cannot be read"):
        checkpoint.load(path)
    path = save(tmp_path, 2)
    state = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**state, "format_version": 99}))
    with pytest.raises(GPT2Error, match="not a version-1 gpt2-checkpoint"):
        checkpoint.load(path)
    (path / "rng.safetensors").unlink()
    with pytest.raises(GPT2Error, match="rng.safetensors is missing"):
        checkpoint.load(path)


def test_saving_a_step_twice_keeps_the_first(tmp_path):
    first = save(tmp_path, 5, 1.0)
    before = (first / "model.safetensors").read_bytes()
    torch.manual_seed(123)
    assert save(tmp_path, 5, 2.0) == first
    assert (first / "model.safetensors").read_bytes() == before
    assert json.loads((first / "state.json").read_text())["val_loss"] == 1.0
