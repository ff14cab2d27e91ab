"""Weights in and out: Hugging Face directories both ways (checked by transformers itself), the project's format
bit-exact, OpenAI's TF checkpoint layout (a real TensorFlow-written checkpoint), and the errors for bad files."""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GPT2_BPE

from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig
from gpt2.tokenizer import Tokenizer
from gpt2.weights import export_hf, load_model, read_tf_checkpoint, save_model

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
CONFIGS = [dict(n_layer=1, n_head=1, n_embd=8, vocab_size=17, n_positions=8),
           dict(n_layer=2, n_head=4, n_embd=32, vocab_size=101, n_positions=24),
           dict(n_layer=3, n_head=2, n_embd=48, vocab_size=300, n_positions=40)]


def random_hf(seed=0, **config):
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **config)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    return hf


def random_gpt(seed=0, **config) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3)
    return model


def tokens(vocab, shape=(2, 8), seed=1):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def assert_same_state(a: GPT, b: GPT):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['n_layer']}x{c['n_embd']}x{c['vocab_size']}")
def test_import_hugging_face_directory(tmp_path, config):
    hf = random_hf(**config)
    hf.save_pretrained(tmp_path)
    model, tokenizer = load_model(tmp_path)
    assert tokenizer is None and not model.training
    idx = tokens(config["vocab_size"], (2, config["n_positions"]))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)


def test_import_pytorch_model_bin_and_old_key_names(tmp_path):
    hf = random_hf(**CONFIGS[1])
    hf.config.to_json_file(tmp_path / "config.json")
    # the layout of older releases: no "transformer." prefix, causal-mask buffers saved as attn.bias
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 24, 24))
    torch.save(state, tmp_path / "pytorch_model.bin")
    model, _ = load_model(tmp_path)
    idx = tokens(101)
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)


class Exploit:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_pickles_with_code_are_never_run(tmp_path):
    random_hf(**CONFIGS[0]).config.to_json_file(tmp_path / "config.json")
    evil = Exploit()
    evil.target = str(tmp_path / "pwned")
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": evil}, f)
    with pytest.raises(GPT2Error, match="not safe to unpickle"):
        load_model(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['n_layer']}x{c['n_embd']}x{c['vocab_size']}")
def test_export_loads_in_transformers(tmp_path, config):
    model = random_gpt(block_size=config["n_positions"], vocab_size=config["vocab_size"], n_layer=config["n_layer"],
                       n_head=config["n_head"], n_embd=config["n_embd"], pad_vocab_to=64)
    export_hf(model, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vocab_size == config["vocab_size"]  # the padding rows are not exported
    idx = tokens(config["vocab_size"], (2, config["n_positions"]))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=1e-5)
    back, _ = load_model(tmp_path / "hf")  # and back again, bit for bit
    sa, sb = model.state_dict(), back.state_dict()
    for k in sb:
        assert torch.equal(sa[k][: sb[k].shape[0]], sb[k]), k


def test_export_without_biases_and_gpt1(tmp_path):
    plain = random_gpt(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16, bias=False)
    export_hf(plain, tmp_path / "nobias")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "nobias").eval()
    gpt1 = random_gpt(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16, norm="post")
    export_hf(gpt1, tmp_path / "gpt1")
    hf1 = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "gpt1").eval()
    idx = tokens(50)
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, plain(idx)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hf1(idx).logits, gpt1(idx)[0], atol=1e-5, rtol=1e-5)
    back, _ = load_model(tmp_path / "gpt1")
    assert back.config.norm == "post"
    assert_same_state(back, gpt1)


def test_export_includes_a_tokenizer_transformers_reads(tmp_path, gpt2_tokenizer):
    model = random_gpt(block_size=16, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)
    export_hf(model, tmp_path, gpt2_tokenizer)
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "Hello world! Ünïcödé, 日本語 and  spaces\n<|endoftext|> the end"
    ours = gpt2_tokenizer.encode(text, allowed_special="all")
    assert hf_tok.encode(text) == ours and auto.encode(text) == ours
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == 50256


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_own_format_round_trip_is_bit_exact(tmp_path, dtype):
    model = random_gpt(block_size=16, vocab_size=300, n_layer=2, n_head=2, n_embd=16, pad_vocab_to=64, dropout=0.1).to(dtype)
    tok = Tokenizer.train(["the cat sat on the mat, the end " * 20], vocab_size=270)
    save_model(model, tmp_path / "m", tok)
    stored = load_file(tmp_path / "m" / "model.safetensors")
    assert "lm_head.weight" not in stored and stored["transformer.wte.weight"].shape == (320, 16)  # tied: stored once
    description = json.loads((tmp_path / "m" / "model.json").read_text())
    assert description["format"] == "gpt2-model" and description["config"]["pad_vocab_to"] == 64
    back, back_tok = load_model(tmp_path / "m")
    assert back.config == model.config
    assert back.lm_head.weight is back.transformer.wte.weight
    assert_same_state(back, model)
    assert back_tok.encode("the cat sat") == tok.encode("the cat sat")
    as_float, _ = load_model(tmp_path / "m", dtype=torch.float32, pad_vocab_to=1)
    assert as_float.transformer.wte.weight.shape == (300, 16) and as_float.lm_head.weight.dtype == torch.float32


def test_save_unwraps_compiled_models(tmp_path):
    model = random_gpt(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8)
    save_model(torch.compile(model), tmp_path / "m")
    assert "_orig_mod" not in "".join(load_file(tmp_path / "m" / "model.safetensors"))
    assert_same_state(load_model(tmp_path / "m")[0], model)


def test_a_different_model_is_not_overwritten(tmp_path):
    a = random_gpt(seed=1, block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8)
    b = random_gpt(seed=2, block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8)
    save_model(a, tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    save_model(a, tmp_path / "m")  # the same model again: fine
    with pytest.raises(GPT2Error, match="already holds a different model"):
        save_model(b, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    save_model(b, tmp_path / "m", overwrite=True)
    assert_same_state(load_model(tmp_path / "m")[0], b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary directories left behind


def test_a_model_of_another_kind_is_named_and_only_replaced_with_force(cli, tmp_path):
    from gpt2.weights import detect_layout

    model = random_gpt(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8)
    save_model(model, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    r = cli("convert", "--input", str(tmp_path / "m"), "--output", str(tmp_path / "m2"), "--to", "hf")
    assert r.returncode == 0, r.stderr
    r = cli("convert", "--input", str(tmp_path / "m2"), "--output", str(tmp_path / "m"), "--to", "hf")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"gpt2 convert: error: {tmp_path / 'm'} already holds a model in this project's format (model.json), not a Hugging Face model; "
        "choose another directory or pass --force"
    )
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before  # nothing touched
    with pytest.raises(GPT2Error, match=r"already holds a Hugging Face model \(config.json\), not a model in this project's format"):
        save_model(model, tmp_path / "m2")
    # --force replaces it: the folder then describes its new weights, and only them
    export_hf(model, tmp_path / "m", overwrite=True)
    assert detect_layout(tmp_path / "m") == "hf" and not (tmp_path / "m" / "model.json").exists()
    assert_same_state(load_model(tmp_path / "m")[0], model)
    save_model(model, tmp_path / "m2", overwrite=True)
    assert detect_layout(tmp_path / "m2") == "gpt2" and not (tmp_path / "m2" / "config.json").exists()
    assert_same_state(load_model(tmp_path / "m2")[0], model)


def test_a_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import gpt2.weights as W

    def broken(state, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(W, "_save_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(random_gpt(block_size=8, vocab_size=20, n_layer=1, n_head=1, n_embd=8), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_shape_and_name_mismatches_name_the_tensor(tmp_path):
    model = random_gpt(block_size=8, vocab_size=20, n_layer=2, n_head=2, n_embd=8)
    save_model(model, tmp_path / "own")
    state = load_file(tmp_path / "own" / "model.safetensors")
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(31, 8)
    save_file(state, tmp_path / "own" / "model.safetensors")
    with pytest.raises(GPT2Error, match=r"transformer\.h\.1\.mlp\.c_fc\.weight .* shape \(31, 8\) .* needs \(32, 8\)"):
        load_model(tmp_path / "own")
    del state["transformer.h.1.mlp.c_fc.weight"]
    save_file(state, tmp_path / "own" / "model.safetensors")
    with pytest.raises(GPT2Error, match=r"lacks the tensor transformer\.h\.1\.mlp\.c_fc\.weight"):
        load_model(tmp_path / "own")

    hf = random_hf(**CONFIGS[1])
    hf.save_pretrained(tmp_path / "hf")
    state = load_file(tmp_path / "hf" / "model.safetensors")
    state["transformer.h.0.attn.c_attn.weight"] = torch.zeros(32, 64)  # HF's (in, out) layout
    save_file(state, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(GPT2Error, match=r"transformer\.h\.0\.attn\.c_attn\.weight .* shape \(32, 64\) .* needs \(32, 96\)"):
        load_model(tmp_path / "hf")


def test_bad_directories_give_one_line_errors(tmp_path):
    with pytest.raises(GPT2Error, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GPT2Error, match="holds no model"):
        load_model(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(GPT2Error, match="model_type 'llama' is not supported"):
        load_model(bad)
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2", "activation_function": "relu"}))
    with pytest.raises(GPT2Error, match="activation_function='relu'"):
        load_model(bad)
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8}))
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GPT2Error, match="not a readable safetensors file"):
        load_model(bad)


def test_openai_tensorflow_checkpoint(tmp_path):
    """tests/data/openai_tiny was written by TensorFlow (make_openai_tiny.py); values.npz holds the same values."""
    fixture = DATA / "openai_tiny"
    values = np.load(fixture / "values.npz")
    tensors = read_tf_checkpoint(fixture / "model.ckpt")
    assert sorted(tensors) == sorted(k.replace(".", "/") for k in values.files)
    for key in values.files:
        assert np.array_equal(tensors[key.replace(".", "/")], values[key])
    # the reference: transformers' GPT-2, whose Conv1D weights have OpenAI's [in, out] layout
    hp = json.loads((fixture / "hparams.json").read_text())
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=hp["n_vocab"], n_positions=hp["n_ctx"], n_embd=hp["n_embd"], n_head=hp["n_head"], n_layer=hp["n_layer"])).eval()
    state = {}
    for key in values.files:
        parts = key.split(".")[1:]
        if parts[0] in ("wte", "wpe"):
            state[f"transformer.{parts[0]}.weight"] = values[key]
            continue
        if parts[0].startswith("h"):
            parts = ["h", parts[0][1:], *parts[1:]]
        leaf = {"g": "weight", "b": "bias", "w": "weight"}[parts[-1]]
        value = values[key][0] if parts[-1] == "w" else values[key]
        state["transformer." + ".".join(parts[:-1] + [leaf])] = value
    missing = hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False).missing_keys
    assert set(missing) <= {"lm_head.weight"}
    model, tokenizer = load_model(fixture)
    assert tokenizer is None
    idx = tokens(hp["n_vocab"], (2, hp["n_ctx"]))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)
    # a damaged index is an error, not garbage
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in fixture.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.ckpt.index").write_bytes((fixture / "model.ckpt.index").read_bytes()[:-20])
    with pytest.raises(GPT2Error, match="not a TensorFlow checkpoint index"):
        load_model(broken)


def test_convert_command(tmp_path, cli, capsys):
    from gpt2.cli import main

    hf = random_hf(**CONFIGS[1])
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "tok").mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / "tok" / name).write_bytes((GPT2_BPE / name).read_bytes())
    assert main(["convert", "--input", str(tmp_path / "hf"), "--output", str(tmp_path / "own"), "--dtype", "bfloat16"]) == 0
    model, _ = load_model(tmp_path / "own")
    assert model.lm_head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(model.transformer.h[1].mlp.c_fc.weight, hf.transformer.h[1].mlp.c_fc.weight.t().bfloat16())
    assert main(["convert", "--input", str(tmp_path / "own"), "--output", str(tmp_path / "hf2"), "--to", "hf", "--dtype", "float32"]) == 0
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf2").eval()
    idx = tokens(101)
    with torch.no_grad():
        torch.testing.assert_close(back(idx).logits, model.float()(idx)[0], atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    assert main(["convert", "--input", str(tmp_path / "hf"), "--output", str(tmp_path / "x"), "--tokenizer", str(tmp_path / "tok")]) == 2
    assert "wrong tokenizer" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # the command line as users run it: a refused overwrite is one line and exit status 2
    r = cli("convert", "--input", str(tmp_path / "hf"), "--output", str(tmp_path / "own"))
    assert r.returncode == 2 and "already holds a different model" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("gpt2 convert: error: ")


def test_presets_command_prints_the_released_sizes(capsys):
    from gpt2.cli import main

    assert main(["presets", "--pad-vocab-to", "128"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt1"]
    for r in rows:  # padding rows are not parameters of the model: the counts stay the released ones
        assert round(int(r[7].replace(",", "")) / 1e6) == int(r[8].rstrip("M"))
