"""Atomic writes (gpt2/atomic.py) end with the permissions a plain write would have, under any umask:
exported models, Hugging Face exports, checkpoints, tokenizers, dataset manifests and evaluation results."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from gpt2 import checkpoint
from gpt2.atomic import ordinary_mode, umask, write_atomic
from gpt2.data.shards import write_manifest
from gpt2.model import GPT, GPTConfig
from gpt2.tokenizer import Tokenizer
from gpt2.weights import export_hf, model_state, save_model


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def tiny() -> tuple[GPT, Tokenizer]:
    torch.manual_seed(0)
    tok = Tokenizer.train(["a tiny corpus, a tiny vocabulary"], vocab_size=262)
    return GPT(GPTConfig(block_size=16, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=16)), tok


def modes(root: Path) -> dict[str, str]:
    """Every path at and below `root` -> its permission bits in octal."""
    return {str(p.relative_to(root.parent)): oct(stat.S_IMODE(p.stat().st_mode)) for p in [root, *sorted(root.rglob("*"))]}


def expected(root: Path, mask: int) -> dict[str, str]:
    """What open() and mkdir() would have given the same paths."""
    return {str(p.relative_to(root.parent)): oct((0o777 if p.is_dir() else 0o666) & ~mask) for p in [root, *sorted(root.rglob("*"))]}


def test_the_umask_is_read_without_changing_it(mask):
    assert umask() == mask and umask() == mask
    assert ordinary_mode() == 0o666 & ~mask and ordinary_mode(directory=True) == 0o777 & ~mask


def test_models_checkpoints_tokenizers_and_manifests_are_as_readable_as_plain_files(mask, tmp_path):
    model, tok = tiny()
    written = [
        save_model(model, tmp_path / "model", tok),
        export_hf(model, tmp_path / "model_hf", tok),
        tok.save(tmp_path / "tokenizer"),
    ]
    state = model_state(model)
    rng = {"rank0.cpu": torch.get_rng_state()}
    written.append(checkpoint.save(tmp_path / "checkpoints", 1, state, {"state": {}, "param_groups": []}, rng, {}))
    (tmp_path / "data").mkdir()
    write_manifest(tmp_path / "data", {"format": "x"})
    written.append(tmp_path / "data")
    write_atomic(tmp_path / "results.json", "{}\n")
    for root in written:
        assert len(modes(root)) > 1
        assert modes(root) == expected(root, mask)
    assert oct(stat.S_IMODE((tmp_path / "results.json").stat().st_mode)) == oct(0o666 & ~mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "data", "model", "model_hf", "results.json", "tokenizer"]


def test_a_replaced_file_keeps_its_mode(tmp_path):
    model, tok = tiny()
    out = save_model(model, tmp_path / "model", tok)
    os.chmod(out / "model.safetensors", 0o640)
    os.chmod(out / "bpe.json", 0o604)
    torch.nn.init.normal_(model.transformer.wpe.weight)
    save_model(model, out, tok, overwrite=True)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "bpe.json").stat().st_mode) == 0o604
    write_atomic(out / "bpe.json", "replaced")
    assert stat.S_IMODE((out / "bpe.json").stat().st_mode) == 0o604 and (out / "bpe.json").read_text() == "replaced"


def test_gpt2_convert_writes_a_folder_others_can_read(cli, tmp_path):
    model, tok = tiny()
    save_model(model, tmp_path / "ours", tok)
    old = os.umask(0o022)  # the child process inherits it
    try:
        r = cli("convert", "--input", str(tmp_path / "ours"), "--output", str(tmp_path / "exported_hf"), "--to", "hf")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert modes(tmp_path / "exported_hf") == expected(tmp_path / "exported_hf", 0o022)
    assert modes(tmp_path / "exported_hf")["exported_hf/model.safetensors"] == "0o644"


def test_docstring_example():
    import doctest

    import gpt2.atomic

    result = doctest.testmod(gpt2.atomic)
    assert result.attempted > 0 and result.failed == 0
