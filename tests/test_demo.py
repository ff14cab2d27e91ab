"""The end-to-end demo (gpt2/demo.py) and the training recipes in configs/.

The default suite runs the demo's whole pipeline with a tiny model on part of
Tiny Shakespeare; the slow test runs the real demo (what `make demo` runs) and
checks that the model beats zlib on the held-out text and writes like a play.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, SHARED, read_text
from gpt2.config import TrainConfig, resolve, to_dict
from gpt2.demo import RECIPE, train_config
from gpt2.errors import GPT2Error
from test_train import _restore_threads  # noqa: F401

CORPUS = SHARED / "tinyshakespeare" / "input.txt"
CONFIGS = REPO / "configs"


def report(stdout: str) -> dict:
    bpb, loss, zlib_bpb = re.search(
        r"held-out text: ([\d.]+) bits per byte \(loss ([\d.]+) nats per token\); zlib -9 on the same text: ([\d.]+) bits per byte", stdout
    ).groups()
    samples = re.split(r"^--- sample.*---$", stdout, flags=re.M)[1:]
    return {"bpb": float(bpb), "loss": float(loss), "zlib_bpb": float(zlib_bpb), "samples": [s.strip("\n") for s in samples]}


def test_demo_pipeline_with_a_tiny_model(cli, tmp_path, caplog, capsys):
    text = "".join(read_text(CORPUS).splitlines(keepends=True)[:4000])
    (tmp_path / "shakespeare.txt").write_text(text)
    (tmp_path / "tiny.toml").write_text(
        "threads = 1\nbatch_size = 8\n[model]\nn_layer = 2\nn_head = 2\nn_embd = 64\nblock_size = 64\n[eval]\ninterval = 10\nsamples = 0\n"
        "[log]\npeak_tflops = 1.0\ntensorboard = false\n"
    )
    args = ["demo", "--out", str(tmp_path / "demo"), "--steps", "20", "--vocab-size", "512", "--train-config", str(tmp_path / "tiny.toml")]
    r = cli(*args, env={"GPT2_DEMO_CORPUS": str(tmp_path / "shakespeare.txt")})
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "demo"
    got = report(r.stdout)
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    last_eval = [rec for rec in records if rec["kind"] == "eval"][-1]
    assert last_eval["step"] == 20
    assert got["bpb"] == pytest.approx(last_eval["val_bpb"], abs=6e-4) and got["loss"] == pytest.approx(last_eval["val_loss"], abs=6e-4)
    # zlib's figure, recomputed from the held-out documents the manifest describes
    import zlib

    from gpt2.config import PrepareConfig
    from gpt2.data.prepare import split_documents

    held_out = "".join(split_documents(PrepareConfig(input=[tmp_path / "shakespeare.txt"], out=out / "data", text_documents="paragraph"), "val"))
    assert len(held_out) > 0.03 * len(text)
    assert got["zlib_bpb"] == pytest.approx(8 * len(zlib.compress(held_out.encode(), 9)) / len(held_out.encode()), abs=6e-4)
    assert len(got["samples"]) == 3
    assert got["samples"][1].startswith("ROMEO:\n") and got["samples"][2].startswith("First Citizen:\n")
    assert (out / "train" / "loss.png").stat().st_size > 10_000
    tok = json.loads((out / "tokenizer" / "bpe.json").read_text())
    assert len(tok["merges"]) == 512 - 256 - 1
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["settings"]["text_documents"] == "paragraph" and manifest["documents"]["held_out"] > 0

    # a second run (here in-process) reports on the finished one without training again
    from gpt2.config import DemoConfig
    from gpt2.demo import demo

    caplog.set_level("INFO")
    again = demo(DemoConfig(corpus=tmp_path / "shakespeare.txt", out=out, steps=20, vocab_size=512, train_config=tmp_path / "tiny.toml"))
    assert "nothing to do" in caplog.text and "resumed from" in caplog.text and "step 20" in caplog.text
    assert report(capsys.readouterr().out)["bpb"] == got["bpb"] == pytest.approx(again["val_bpb"], abs=6e-4)
    assert again["steps"] == 20

    # a re-run with another vocabulary or corpus is refused before it touches the earlier demo
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "tensorboard" not in p.parts}
    (tmp_path / "other.txt").write_text(text[: len(text) // 2])
    with pytest.raises(GPT2Error, match="holds a demo made with another tokenizer"):
        demo(DemoConfig(corpus=tmp_path / "shakespeare.txt", out=out, steps=20, vocab_size=400, train_config=tmp_path / "tiny.toml"))
    from gpt2.tokenizer import Tokenizer

    with pytest.MonkeyPatch.context() as mp:  # the same tokenizer, another corpus: the shards' check refuses
        mp.setattr(Tokenizer, "train", lambda *args, **kwargs: Tokenizer.load(out / "tokenizer"))
        with pytest.raises(GPT2Error, match="holds a demo made from another corpus"):
            demo(DemoConfig(corpus=tmp_path / "other.txt", out=out, steps=20, vocab_size=512, train_config=tmp_path / "tiny.toml"))
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "tensorboard" not in p.parts} == before


def test_demo_corpus_errors(cli, tmp_path):
    r = cli("demo", "--out", str(tmp_path / "demo"), env={"GPT2_DEMO_CORPUS": str(tmp_path / "missing.txt")})
    assert r.returncode == 2 and "demo corpus" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = cli("demo", "--out", str(tmp_path / "demo"), env={"GPT2_DEMO_CORPUS": "", "GPT2_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2 and "GPT2_OFFLINE" in r.stderr and "Tiny Shakespeare" in r.stderr
    assert not (tmp_path / "demo").exists()


def test_configs_demo_toml_is_the_demo_recipe():
    from_file = resolve(TrainConfig, {}, CONFIGS / "demo.toml")
    built_in = train_config(Path("runs/demo"))
    assert to_dict(from_file) == {**to_dict(built_in), "resume": False}
    assert from_file.max_steps == RECIPE["max_steps"]


@pytest.mark.parametrize("name, preset, layers, width", [
    ("gpt2-124m", "gpt2", 12, 768), ("gpt2-355m", "gpt2-medium", 24, 1024),
    ("gpt2-774m", "gpt2-large", 36, 1280), ("gpt2-1558m", "gpt2-xl", 48, 1600),
])
def test_paper_configs(name, preset, layers, width):
    from gpt2.model import GPTConfig
    from gpt2.train import flops_per_token

    path = CONFIGS / f"{name}.toml"
    cfg = resolve(TrainConfig, {}, path)
    assert cfg.model.preset == preset and cfg.model.block_size == 1024 and cfg.model.vocab_size == 50257
    assert cfg.global_batch_tokens == 512 * 1024  # 512 sequences of 1024 tokens (section 2.3)
    model = GPTConfig.from_name(preset)
    assert (model.n_layer, model.n_embd) == (layers, width)
    header = path.read_text().split("\n\n")[0]
    for word in ("Hardware:", "Tokens:", "Expected time:"):
        assert word in header
    tokens = float(re.search(r"Tokens:\s+(\d+)B tokens", header).group(1)) * 1e9
    assert cfg.max_steps == round(tokens / cfg.global_batch_tokens)
    gflop = float(re.search(r"([\d.]+) GFLOP per token", header).group(1))
    assert gflop == pytest.approx(flops_per_token(GPTConfig.from_name(preset), 1024) / 1e9, abs=1e-3)
    assert tomllib.loads(path.read_text())["data"]["dir"]


@pytest.mark.slow
def test_the_real_demo(cli, tmp_path):
    """`make demo`: a few minutes on 2 cores; the model must beat zlib clearly and write speeches. No time limit:
    a busy machine makes it slower, not red. Run again, it reports on the finished run with the same samples."""
    r = cli("demo", "--corpus", str(CORPUS), "--out", str(tmp_path / "demo"), timeout=None)
    assert r.returncode == 0, r.stderr[-3000:]
    got = report(r.stdout)
    again = cli("demo", "--corpus", str(CORPUS), "--out", str(tmp_path / "demo"), timeout=None)
    assert again.returncode == 0, again.stderr[-3000:]
    step_samples = [re.findall(r"^sample \d+ at step 400:\n.*?\n\n", run.stderr, flags=re.M | re.S) for run in (r, again)]
    assert step_samples[0] and step_samples[0] == step_samples[1]  # a fixed seed per step
    assert report(again.stdout) == got
    trained = re.search(r"^trained 400 steps .* in (\S+): ", r.stderr, flags=re.M).group(1)
    assert f"trained in {trained}; " in r.stdout  # the demo and the trainer tell the same time
    assert f"trained in {trained} over several runs; this run took " in again.stdout
    assert got["bpb"] < 0.8 * got["zlib_bpb"]
    assert got["bpb"] < 2.6
    text = "\n".join(got["samples"])
    speakers = re.findall(r"^([A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)*):$", text, flags=re.M)
    assert len(speakers) >= 3  # speeches headed by a speaker's name, as in the corpus
    words = re.findall(r"[a-z]+", text.lower())
    common = {"the", "and", "i", "to", "of", "you", "my", "a", "that", "in", "is", "me", "not", "with", "it", "be", "your", "thou"}
    assert sum(w in common for w in words) > 0.2 * len(words)
