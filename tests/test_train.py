"""The training loop (gpt2/train.py): loss, optimizer set-up, schedule, FLOPs, learning, exact resume, NaN handling, logs.

References: the loss against F.cross_entropy on the GPT's own logits in
float64; FLOPs against torch.utils.flop_counter; resume against an
uninterrupted run (bit for bit); gradient accumulation against one big batch.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, SHARED, read_text
from gpt2 import checkpoint
from gpt2.train import loss as loss_mod
from gpt2.train import optim as optim_mod
from gpt2.config import PrepareConfig, TrainConfig, from_dict, to_toml
from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig
from gpt2.train import LMLoss, Trainer, flops_per_token, lr_at, parameter_groups, peak_tflops

# ----------------------------------------------------------------------------
# shared helpers (also used by test_checkpoint.py, test_distributed.py and test_demo.py)


def make_dataset(root: Path, lines: int = 3000, vocab: int = 512) -> Path:
    """A tokenizer learned from the first `lines` of Tiny Shakespeare and the shards of those lines."""
    from gpt2.data.prepare import prepare
    from gpt2.tokenizer import Tokenizer

    text = "".join(read_text(SHARED / "tinyshakespeare" / "input.txt").splitlines(keepends=True)[:lines])
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    Tokenizer.train([text], vocab, progress=False).save(root / "tokenizer")
    prepare(PrepareConfig(input=[root / "corpus.txt"], out=root / "data", tokenizer=str(root / "tokenizer"), text_documents="paragraph"))
    return root / "data"


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_config(data: Path, out: Path, **over) -> TrainConfig:
    """A 2-layer, 32-wide GPT for a few steps: a run of seconds on 2 cores."""
    base = {
        "out": str(out),
        "max_steps": 8,
        "batch_size": 4,
        "seed": 7,
        "threads": 1,  # tiny matmuls: one thread is faster, and immune to a busy machine
        "data": {"dir": str(data)},
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.1},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "eval": {"interval": 4, "max_tokens": 2048, "samples": 0},
        "checkpoint": {"interval": 4, "keep_last": 5},
        "log": {"interval": 1, "tensorboard": False, "plot": False, "peak_tflops": 1.0},
    }
    return from_dict(TrainConfig, _merge(base, over), "test")


def run_train_cli(cfg: TrainConfig, tmp: Path, *extra: str, env: dict | None = None, wrapper: str = "") -> subprocess.Popen:
    """`python -m gpt2 train --config FILE` in a subprocess; `wrapper` is Python run first (to plant a stop)."""
    toml = tmp / f"cfg-{time.monotonic_ns()}.toml"
    toml.write_text(to_toml(cfg))
    code = wrapper + f"\nimport sys\nfrom gpt2.cli import main\nsys.exit(main(['train', '--config', {str(toml)!r}, *{list(extra)!r}]))\n"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "GPT2_OFFLINE": "1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path.name} appeared:\n{proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.05)


def checkpoint_bytes(path: Path) -> tuple[bytes, bytes]:
    return (path / "model.safetensors").read_bytes(), (path / "optimizer.safetensors").read_bytes()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _restore_threads():
    """Trainer(threads=1) sets PyTorch's thread count for the process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------
# the loss


@pytest.mark.parametrize("pad", [1, 64])
@pytest.mark.parametrize("formula", ["one product", "chunked products", "compiled"])
def test_lm_loss_equals_cross_entropy_of_the_model_logits(pad, formula, monkeypatch):
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 7 * 1000)  # several chunks, the last one partial
    # a product per chunk is what the bfloat16 kernel gets; without the kernel training makes one product
    monkeypatch.setattr(loss_mod, "logits_in_one_product", lambda h: formula == "one product")
    if formula == "compiled":  # the formula lm_loss hands torch.compile (padding masked with -inf), run eagerly
        monkeypatch.setattr(loss_mod, "lm_loss", loss_mod.full_logits_loss)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=1000, pad_vocab_to=pad)).double()
    x, y = torch.randint(0, 1000, (3, 16)), torch.randint(0, 1000, (3, 16))
    logits, _ = gpt(x)
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(3, 16)
    ref.mean().backward()
    ref_grads = {n: p.grad.clone() for n, p in gpt.named_parameters()}
    gpt.zero_grad()
    model = LMLoss(gpt)
    loss = model(x, y)
    assert loss.item() == pytest.approx(ref.mean().item(), abs=1e-12)
    (2.5 * loss).backward()  # an upstream gradient other than 1
    for name, p in gpt.named_parameters():
        torch.testing.assert_close(p.grad, 2.5 * ref_grads[name], rtol=1e-9, atol=1e-12, msg=name)
    per_token = model(x, y, reduction="none")
    torch.testing.assert_close(per_token, ref.detach(), rtol=1e-12, atol=1e-12)


def test_lm_loss_in_bfloat16_stays_close_to_float32():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=3000, pad_vocab_to=64))
    x, y = torch.randint(0, 3000, (4, 32)), torch.randint(0, 3000, (4, 32))
    _, ref = gpt(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = LMLoss(gpt)(x, y)
        _, ref_bf16 = gpt(x, y)
    assert abs(loss.item() - ref.item()) < 0.02
    assert abs(loss.item() - ref_bf16.item()) < 0.01


def test_chunks_of_the_loss_are_multiples_of_64_rows_and_no_more_than_the_plain_split():
    for n in (1, 5, 63, 64, 65, 300, 1024, 4097, 8192):
        for vocab in (1000, 50257, 50304):
            rows, cap = loss_mod.chunk_rows(n, vocab), max(1, loss_mod.CHUNK_ELEMENTS // vocab)
            assert rows % 64 == 0 or rows == min(n, cap) <= 64
            assert rows < min(n, cap) + 64
            assert -(-n // rows) <= -(-n // min(n, cap))
    assert loss_mod.chunk_rows(1024, 50304) == 256  # 4 x 256 rows, where the plain quotient made 333 + 333 + 333 + 25


def test_gradient_norm_against_float64_and_clipping_inside_adamw_equals_clip_grad_norm(monkeypatch):
    torch.manual_seed(0)
    shapes = [(3000, 700), (768,), (5, 7), (1,)]
    grads = [torch.randn(s) * scale for s, scale in zip(shapes, (1e-3, 10.0, 1.0, 3.0))]
    want = torch.sqrt(sum(g.double().square().sum() for g in grads))
    with monkeypatch.context() as m:  # contiguous float32 CPU gradients: dot products, not torch's norms
        m.setattr(torch.nn.utils, "get_total_norm", None)
        norm = optim_mod.grad_norm(grads)
    assert norm.dtype == torch.float32 and abs(norm.item() / want.item() - 1) < 1e-6
    # non-contiguous and bfloat16 gradients take torch's norms
    assert abs(optim_mod.grad_norm([g.t() if g.dim() == 2 else g for g in grads]).item() / want.item() - 1) < 1e-4
    assert abs(optim_mod.grad_norm([g.bfloat16() for g in grads]).item() / want.item() - 1) < 1e-2

    gpt = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=300))
    x = torch.randint(0, 300, (2, 17))
    weights = []
    for clip in ("in the optimizer", "clip_grad_norm_", "none"):
        model = LMLoss(copy.deepcopy(gpt))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        for _ in range(3):
            model(x[:, :-1], x[:, 1:]).mul(100).backward()  # gradients well above the clipping norm
            if clip == "in the optimizer":
                norm = optim_mod.clip_in_optimizer(opt, model.parameters(), 0.5)
                assert norm > 5
            elif clip == "clip_grad_norm_":
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
        weights.append(dict(model.named_parameters()))
    assert_same_weights(weights[0], weights[1], 1e-6)
    with pytest.raises(AssertionError):  # Adam undoes a constant scale, not one that changes from step to step
        assert_same_weights(weights[0], weights[2], 1e-6)


def test_weight_decay_only_on_linear_matrices():
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=100))
    decay, no_decay = parameter_groups(gpt, 0.1)
    names = {id(p): n for n, p in gpt.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(
        f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    )
    rest = {names[id(p)] for p in no_decay["params"]}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.h.0.ln_1.bias"} <= rest
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(gpt.parameters()))


def test_learning_rate_schedule():
    lr = [lr_at(s, 1e-3, 10, 110, 0.1) for s in range(110)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3)  # linear warm-up over 10 updates
    assert lr[10] == pytest.approx(1e-3)
    assert lr[60] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way down the cosine
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert lr_at(110, 1e-3, 10, 110, 0.1) == pytest.approx(1e-4)
    assert lr_at(0, 1e-3, 0, 10, 0.0) == pytest.approx(1e-3)
    # GPT-1's fine-tuning: a straight line down to 0 after the warm-up
    linear = [lr_at(s, 1e-3, 10, 110, 0.0, "linear") for s in range(111)]
    assert linear[9] == pytest.approx(1e-3) and linear[60] == pytest.approx(0.5e-3) and linear[110] == 0.0


@pytest.mark.parametrize(
    "warmup_steps, fraction, max_steps, expected",
    [(None, None, 50, 5), (None, None, 100_000, 700), (None, None, 5, 0), (None, 0.002, 3000, 6), (None, 0.002, 10, 1), (12, 0.5, 50, 12)],
)
def test_warmup_defaults_to_a_tenth_of_a_short_run(warmup_steps, fraction, max_steps, expected):
    from gpt2.config import TrainOptim
    from gpt2.train.optim import warmup_steps as resolve

    assert resolve(TrainOptim(warmup_steps=warmup_steps, warmup_fraction=fraction), max_steps) == expected


def test_flops_per_token_counts_every_matmul():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = GPTConfig(n_layer=3, n_head=2, n_embd=64, block_size=32, vocab_size=1000)
    gpt = GPT(cfg)
    x = torch.randint(0, 1000, (2, 32))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # attention as plain matmuls
        gpt(x, x)[1].backward()
    assert counter.get_total_flops() == flops_per_token(cfg, 32) * 64


def test_gpu_peaks_come_from_the_datasheet_table(monkeypatch):
    for name, peak in [
        ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        got = peak_tflops(torch.device("cuda", 0), torch.bfloat16)
        assert (got.tflops, got.source) == (peak, f"{name} datasheet")
    given = peak_tflops(torch.device("cpu"), torch.bfloat16, 1.5)
    assert (given.tflops, given.source) == (1.5, "given")


def test_a_cpu_peak_is_measured_once_per_machine_and_mfu_never_exceeds_100(monkeypatch, tmp_path):
    """The first run measures the CPU's peak and caches it; the next reads the cache. A step that beats the
    peak (measured while the machine was busy) raises it, in the cache too, so MFU stays at or below 100%."""
    from gpt2.train import hardware

    monkeypatch.setenv("GPT2_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "measure_matmul_tflops", lambda device, dtype: calls.append(dtype) or 0.5)
    first = peak_tflops(torch.device("cpu"), torch.float32)
    second = peak_tflops(torch.device("cpu"), torch.float32)
    assert calls == [torch.float32] and first.tflops == second.tflops == 0.5 and "cached" in second.source
    second.observe(0.4e12)
    assert second.tflops == 0.5  # below the peak: nothing changes
    second.observe(0.8e12)  # a step ran faster than the "peak": it was measured under load
    assert second.tflops == 0.8 and 0.8e12 / second.flops == 1.0
    assert peak_tflops(torch.device("cpu"), torch.float32).tflops == 0.8 and calls == [torch.float32]
    assert "0.8" in second.describe()


def test_measuring_an_emulated_dtype_stays_on_small_products():
    """bfloat16 on a CPU without bfloat16 products runs at ~1 GFLOP/s: the measurement must not try 4096^3."""
    import time as time_mod

    from gpt2.train import hardware

    t = time_mod.perf_counter()
    assert hardware.measure_matmul_tflops(torch.device("cpu"), torch.float64, seconds=0.3) > 0
    assert time_mod.perf_counter() - t < 5


def test_threads_are_the_cores_no_other_process_is_using(monkeypatch):
    from gpt2.train.hardware import choose_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert choose_threads(3) == 3  # given: kept
    assert choose_threads(0, cores=2, busy=0) == 2
    assert choose_threads(0, cores=2, busy=1) == 1  # one core busy: one thread, not two fighting over one core
    assert choose_threads(0, cores=2, busy=5) == 1
    assert choose_threads(0, cores=16, busy=3) == 13
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes of one run on this machine share the free cores
    assert choose_threads(0, cores=16, busy=0) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what torchrun sets: kept
    assert choose_threads(0, cores=16, busy=0) == 2


# ----------------------------------------------------------------------------
# the loop


def test_training_fits_a_repeated_text(tmp_path):
    """The llm.c smoke test: a corpus that is one passage over and over is learned almost perfectly."""
    from gpt2.data.prepare import prepare
    from gpt2.tokenizer import Tokenizer

    passage = "".join(read_text(SHARED / "tinyshakespeare" / "input.txt").splitlines(keepends=True)[:12])
    (tmp_path / "a.txt").write_text(passage * 60)
    Tokenizer.train([passage], 300, progress=False).save(tmp_path / "tok")
    prepare(PrepareConfig(input=[tmp_path / "a.txt"], out=tmp_path / "data", tokenizer=str(tmp_path / "tok"), val_fraction=0.0))
    cfg = tiny_config(
        tmp_path / "data", tmp_path / "run", max_steps=60, batch_size=8,
        model={"dropout": 0.0}, optim={"lr": 1e-2, "warmup_steps": 5}, checkpoint={"interval": 0},
    )
    summary = Trainer(cfg).run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[0] > math.log(300) - 0.5  # starts near chance
    assert summary["train_loss"] == losses[-1] < 1.0  # chance is ln 300 = 5.7
    assert summary["val_loss"] is None  # no held-out split


def test_gradient_accumulation_equals_one_big_batch(tiny_data, tmp_path):
    common = {"dtype": "float32", "max_steps": 3, "global_batch_tokens": 8 * 32, "model": {"dropout": 0.0}}
    big = Trainer(tiny_config(tiny_data, tmp_path / "big", batch_size=8, **common))
    small = Trainer(tiny_config(tiny_data, tmp_path / "small", batch_size=2, **common))
    assert (big.loader.accum, small.loader.accum) == (1, 4)
    for _ in range(3):
        a, b = big.step(), small.step()
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert_same_weights(dict(big.gpt.named_parameters()), dict(small.gpt.named_parameters()), 1e-6)


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    """Weights equal up to float32 summation order. The key biases are the exception: their gradient is
    zero in exact arithmetic (softmax ignores a constant added to a row of scores), so what they get is
    rounding noise, which Adam's normalisation magnifies to steps of ~1e-6; they get 20x the tolerance."""
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name].detach(), b[name].detach()
        if name.endswith("attn.c_attn.bias"):
            C = x.shape[0] // 3
            torch.testing.assert_close(x[C : 2 * C], y[C : 2 * C], rtol=0, atol=20 * atol)
            x, y = torch.cat([x[:C], x[2 * C :]]), torch.cat([y[:C], y[2 * C :]])
        torch.testing.assert_close(x, y, rtol=1e-5, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def test_nonfinite_loss_skips_the_update_and_stops_after_a_few(tiny_data, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tiny_data, tmp_path / "run", max_steps=20, max_nonfinite=3, checkpoint={"interval": 0}))
    trainer.step()
    real = loss_mod.lm_loss
    poisoned = {3, 5, 6, 7}  # step numbers (1-based) whose loss is NaN
    monkeypatch.setattr(
        loss_mod, "lm_loss", lambda *a, **k: real(*a, **k) * (math.nan if trainer.step_count + 1 in poisoned else 1.0)
    )
    trainer.step()
    before = {n: p.detach().clone() for n, p in trainer.gpt.named_parameters()}
    adam_step = trainer.optimizer.state[trainer.gpt.transformer.wte.weight]["step"].item()
    record = trainer.step()  # step 3: NaN
    assert record["skipped"] and record["loss"] is None and trainer.nonfinite == 1
    assert all(torch.equal(p, before[n]) for n, p in trainer.gpt.named_parameters())
    assert trainer.optimizer.state[trainer.gpt.transformer.wte.weight]["step"].item() == adam_step
    assert trainer.step()["loss"] is not None and trainer.nonfinite == 0  # step 4 trains again
    with pytest.raises(GPT2Error, match="NaN or infinite in 3 steps in a row .up to step 7"):
        trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("skipped")] == [5, 6, 7]


def test_an_infinite_gradient_with_a_finite_loss_is_skipped_too(tiny_data, tmp_path):
    trainer = Trainer(tiny_config(tiny_data, tmp_path / "run", max_steps=5, checkpoint={"interval": 0}))
    trainer.step()
    before = {n: p.detach().clone() for n, p in trainer.gpt.named_parameters()}
    handle = trainer.gpt.transformer.h[0].mlp.c_fc.weight.register_hook(lambda g: g * math.inf)
    record = trainer.step()
    handle.remove()
    assert record["skipped"] and math.isfinite(record["loss"]) and "grad_norm" not in record and trainer.nonfinite == 1
    assert all(torch.equal(p, before[n]) for n, p in trainer.gpt.named_parameters())
    assert "grad_norm" in trainer.step() and trainer.nonfinite == 0


def test_run_writes_metrics_tensorboard_plot_and_model(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", log={"tensorboard": True, "plot": True}, checkpoint={"interval": 4, "keep_last": 1})
    trainer = Trainer(cfg)
    summary = trainer.run()
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 9)) and [r["step"] for r in evals] == [4, 8]
    assert [r["tokens"] for r in train] == [128 * s for s in range(1, 9)]
    assert summary["val_loss"] == evals[-1]["val_loss"] and summary["val_bpb"] == evals[-1]["val_bpb"]
    import csv

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [float(r["loss"]) for r in rows if r["kind"] == "train"] == [r["loss"] for r in train]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))
    assert [round(e.value, 5) for e in events.Scalars("eval/val_loss")] == [round(r["val_loss"], 5) for r in evals]
    import matplotlib.image

    image = matplotlib.image.imread(out / "loss.png")
    assert image.shape[0] >= 300 and image.shape[1] >= 600
    best = min(evals, key=lambda r: r["val_loss"])["step"]
    kept = [s for s, _ in checkpoint.list_checkpoints(out / "checkpoints")]
    assert kept == sorted({8, best})  # keep_last=1, plus the best
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["n_layer"] == 2 and run["dataset"] == json.loads((tiny_data / "manifest.json").read_text())["fingerprint"]
    assert "n_layer = 2" in (out / "config.toml").read_text()
    # the exported model, a checkpoint and the run's folder all load (for gpt2 eval / sample), with the tokenizer
    from gpt2.weights import load_model

    exported, tok = load_model(out / "model")
    from_checkpoint, ck_tok = load_model(out / "checkpoints" / "step_0000008")
    from_run, _ = load_model(out)
    (out / "model").rename(out / "exported")
    from_run_without_export, _ = load_model(out)  # then the newest checkpoint stands for the run
    for name, tensor in exported.state_dict().items():
        for other in (from_checkpoint, from_run, from_run_without_export):
            assert torch.equal(other.state_dict()[name], tensor), name
    assert ck_tok is not None and ck_tok.encode("To be, or not") == tok.encode("To be, or not")
    from gpt2.config import ConvertConfig
    from gpt2.weights import convert_command

    convert_command(ConvertConfig(input=out, output=tmp_path / "converted", to="hf"))  # the run, as a Hugging Face directory
    converted, _ = load_model(tmp_path / "converted")
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in exported.state_dict().items())


def test_held_out_loss_and_bits_per_byte_recomputed(tiny_data, tmp_path):
    """Evaluate the trained model again with GPT.forward, window by window, and count bytes with the tokenizer."""
    from gpt2.data.shards import TokenDataset

    trainer = Trainer(tiny_config(tiny_data, tmp_path / "run", max_steps=4, eval={"max_tokens": 0}))
    summary = trainer.run()
    ds = TokenDataset(tiny_data)
    tok = ds.tokenizer()
    val = ds.stream("val")
    tokens = torch.from_numpy(val.read(0, len(val)).astype(np.int64))
    T = 32
    n = (len(tokens) - 1) // T
    nats = text_nats = 0.0
    n_bytes = 0
    gpt = trainer.gpt.eval()
    with torch.no_grad(), trainer.autocast:
        for j in range(n):
            x, y = tokens[j * T : (j + 1) * T], tokens[j * T + 1 : (j + 1) * T + 1]
            losses = F.cross_entropy(gpt(x[None])[0][0].float(), y, reduction="none").double()
            nats += losses.sum().item()
            special = torch.tensor([int(t) in tok.special_tokens.values() for t in y])
            text_nats += losses[~special].sum().item()
            n_bytes += sum(len(tok.decode_bytes([int(t)])) for t in y[~special])
    assert summary["val_loss"] == pytest.approx(nats / (n * T), rel=2e-3)
    assert summary["val_bpb"] == pytest.approx(text_nats / math.log(2) / n_bytes, rel=2e-3)


def test_a_second_run_in_the_same_directory_needs_resume(tiny_data, tmp_path):
    Trainer(tiny_config(tiny_data, tmp_path / "run", max_steps=4)).run()
    with pytest.raises(GPT2Error, match="already holds a run .* --resume"):
        Trainer(tiny_config(tiny_data, tmp_path / "run", max_steps=4))
    with pytest.raises(GPT2Error, match="different model .n_embd=32, now 48"):
        Trainer(tiny_config(tiny_data, tmp_path / "run", max_steps=4, resume=True, model={"n_embd": 48}))


def test_an_out_that_holds_something_else_is_never_written_to(tiny_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text("mine")
    (mine / "run.json").write_text('{"mine": 1}')
    for out in (mine, tiny_data):  # a user's folder, a dataset
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        for resume in (False, True):
            with pytest.raises(GPT2Error, match="holds no run of `gpt2 train`.*choose a new or empty --out"):
                Trainer(tiny_config(tiny_data, out, resume=resume))
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GPT2Error, match="is a file, not a directory"):
        Trainer(tiny_config(tiny_data, tmp_path / "afile"))


def test_damaged_checkpoints_are_named_and_saved_again(tiny_data, tmp_path, caplog):
    out = tmp_path / "run"
    Trainer(tiny_config(tiny_data, out, max_steps=8, checkpoint={"interval": 4, "keep_last": 5})).run()
    ck = out / "checkpoints"
    (ck / "step_0000008" / "optimizer.safetensors").unlink()
    caplog.set_level("INFO")
    trainer = Trainer(tiny_config(tiny_data, out, max_steps=8, resume=True))
    assert trainer.step_count == 4
    assert "step_0000008 is not a complete checkpoint (optimizer.safetensors is missing): resuming from step_0000004" in caplog.text
    trainer.run()
    assert "was incomplete (optimizer.safetensors missing): saving it again" in caplog.text
    assert (ck / "step_0000008" / "optimizer.safetensors").is_file() and not list(ck.glob(".step_*"))

    state = json.loads((ck / "step_0000008" / "state.json").read_text())
    del state["data"]
    (ck / "step_0000008" / "state.json").write_text(json.dumps(state))
    with pytest.raises(GPT2Error, match="state.json has no data .edited by hand.*move that directory out of checkpoints/"):
        Trainer(tiny_config(tiny_data, out, max_steps=12, resume=True))
    shutil.move(ck / "step_0000008", tmp_path / "aside")
    other = tmp_path / "other"  # weights of another width in a checkpoint whose state.json says 32
    Trainer(tiny_config(tiny_data, other, max_steps=4, model={"n_embd": 48})).run()
    shutil.copy(other / "checkpoints" / "step_0000004" / "model.safetensors", ck / "step_0000004" / "model.safetensors")
    with pytest.raises(GPT2Error, match="holds weights of another shape .* it is damaged"):
        Trainer(tiny_config(tiny_data, out, max_steps=12, resume=True))


def test_samples_longer_than_the_context_are_refused_before_training(tiny_data, tmp_path):
    with pytest.raises(GPT2Error, match=r"eval.sample_tokens \(32\) must be smaller than model.block_size \(32\)"):
        tiny_config(tiny_data, tmp_path / "run", eval={"samples": 1, "sample_tokens": 32})
    assert tiny_config(tiny_data, tmp_path / "run", eval={"samples": 0, "sample_tokens": 32}).eval.sample_tokens == 32


def test_token_ids_beyond_the_vocabulary_are_a_clear_error(tiny_data, tmp_path):
    from gpt2.data.shards import HEADER_BYTES

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for shard in data.glob("train_*.bin"):  # every training token becomes id 60,000 (the tokenizer has 512)
        raw = bytearray(shard.read_bytes())
        raw[HEADER_BYTES:] = np.full((len(raw) - HEADER_BYTES) // 2, 60000, dtype="<u2").tobytes()
        shard.write_bytes(bytes(raw))
    with pytest.raises(GPT2Error, match="hold the id 60000, but their tokenizer has only 512 tokens"):
        Trainer(tiny_config(data, tmp_path / "run")).run()


def test_a_finished_run_without_usable_checkpoints_is_never_overwritten(tiny_data, tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(tiny_data, out, max_steps=4, checkpoint={"interval": 4, "keep_last": 1})).run()
    weights = (out / "model" / "model.safetensors").read_bytes()
    (out / "checkpoints" / "step_0000004" / "optimizer.safetensors").unlink()  # damaged by hand
    for resume in (False, True):
        with pytest.raises(GPT2Error, match="step_0000004 is not a complete checkpoint .optimizer.safetensors is missing"):
            Trainer(tiny_config(tiny_data, out, max_steps=8, resume=resume))
    shutil.rmtree(out / "checkpoints")
    for resume in (False, True):
        with pytest.raises(GPT2Error, match="holds a finished run .model, metrics.jsonl. but no checkpoint to continue from"):
            Trainer(tiny_config(tiny_data, out, max_steps=8, resume=resume))
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    shutil.rmtree(out / "model")  # as if killed before the first checkpoint: --resume starts it again
    with pytest.raises(GPT2Error, match="stopped before its first checkpoint; pass --resume"):
        Trainer(tiny_config(tiny_data, out, max_steps=8))
    assert Trainer(tiny_config(tiny_data, out, max_steps=8, resume=True)).step_count == 0


# ----------------------------------------------------------------------------
# exact resume (subprocesses killed with SIGKILL)

STALL_AFTER_STEP = """
import pathlib, time
import gpt2.train as t
_step = t.Trainer.step
def step(self):
    record = _step(self)
    if self.step_count == {stall}:
        pathlib.Path({flag!r}).write_text("stalled")
        time.sleep(3600)
    return record
t.Trainer.step = step
"""

STALL_IN_SAVE = """
import pathlib, time
import gpt2.checkpoint as c
_save = c._save_tensors
def save_tensors(path, tensors):
    _save(path, tensors)
    if path.name == "optimizer.safetensors" and ".step_{step:07d}.tmp" in str(path.parent):
        pathlib.Path({flag!r}).write_text("stalled")
        time.sleep(3600)
c._save_tensors = save_tensors
"""


def test_resume_after_kill_9_is_bit_identical(tiny_data, tmp_path):
    # bfloat16 autocast, 2 micro-batches of accumulation per step and dropout: every state resume must restore
    exact = dict(dtype="bfloat16", global_batch_tokens=2 * 4 * 32)
    straight = tiny_config(tiny_data, tmp_path / "straight", **exact)
    Trainer(straight).run()
    cfg = tiny_config(tiny_data, tmp_path / "killed", **exact)
    flag = tmp_path / "stalled"
    proc = run_train_cli(cfg, tmp_path, wrapper=STALL_AFTER_STEP.format(stall=6, flag=str(flag)))
    wait_for(flag, proc)
    proc.send_signal(signal.SIGKILL)  # kill -9 between checkpoints: steps 5 and 6 are lost
    proc.wait()
    assert checkpoint.latest(tmp_path / "killed" / "checkpoints").name == "step_0000004"
    resumed = run_train_cli(cfg, tmp_path, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in err and "step 4" in err
    final = "checkpoints/step_0000008"
    assert checkpoint_bytes(tmp_path / "killed" / final) == checkpoint_bytes(tmp_path / "straight" / final)
    # the metrics of the lost steps were replaced, not duplicated
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


def test_float16_loss_scale_is_checkpointed_and_restored(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", dtype="float16", max_steps=4)
    trainer = Trainer(cfg)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)  # a scale that moves in 4 steps
    trainer.run()
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_0000004" / "state.json").read_text())["grad_scaler"]
    assert saved["scale"] == 4096.0 and saved["growth_interval"] == 2  # 1024 doubled after steps 2 and 4
    resumed = Trainer(tiny_config(tiny_data, tmp_path / "run", dtype="float16", max_steps=6, resume=True))
    assert resumed.scaler.state_dict() == saved


def test_a_save_killed_half_way_leaves_the_previous_checkpoint(tiny_data, tmp_path):
    straight = tiny_config(tiny_data, tmp_path / "straight", max_steps=8)
    Trainer(straight).run()
    cfg = tiny_config(tiny_data, tmp_path / "killed", max_steps=8)
    flag = tmp_path / "stalled"
    proc = run_train_cli(cfg, tmp_path, wrapper=STALL_IN_SAVE.format(step=8, flag=str(flag)))
    wait_for(flag, proc)
    proc.send_signal(signal.SIGKILL)  # in the middle of writing checkpoint 8
    proc.wait()
    root = tmp_path / "killed" / "checkpoints"
    assert [p.name for p in root.glob(".step_0000008.tmp-*")]  # the half-written one is hidden
    assert checkpoint.latest(root).name == "step_0000004"
    checkpoint.load(checkpoint.latest(root))  # and the one before it loads
    resumed = run_train_cli(cfg, tmp_path, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not list(root.glob(".step_*"))
    assert checkpoint_bytes(root / "step_0000008") == checkpoint_bytes(tmp_path / "straight" / "checkpoints" / "step_0000008")


# ----------------------------------------------------------------------------
# the command line


def test_train_command_line_errors(cli, tiny_data, tmp_path):
    r = cli("train", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "missing required setting --data.dir" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", "--data.dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "prepare the data first" in r.stderr
    (tmp_path / "bad.toml").write_text("[optim]\nlearning_rate = 1\n")
    r = cli("train", "--config", str(tmp_path / "bad.toml"), "--data.dir", str(tiny_data))
    assert r.returncode == 2 and "unknown key 'optim.learning_rate'" in r.stderr
    r = cli("train", "--data.dir", str(tiny_data), "--batch-size", "3", "--global-batch-tokens", "1000", "--model.block-size", "32")
    assert r.returncode == 2 and "must be a multiple of batch_size x model.block_size" in r.stderr
    (tmp_path / "garbage.toml").write_bytes(bytes(range(128, 256)) * 4)
    r = cli("train", "--config", str(tmp_path / "garbage.toml"))
    assert r.returncode == 2 and "is not UTF-8 text, so not a TOML file" in r.stderr and "Traceback" not in r.stderr


def test_the_command_prints_its_own_lines_only(cli, tiny_data, tmp_path):
    """A first run on a machine draws the plot with a fresh matplotlib font cache: matplotlib's own INFO line
    ("generated new fontManager") must not reach the output. The peak measured once is cached per machine."""
    env = {"MPLCONFIGDIR": str(tmp_path / "mpl"), "GPT2_CACHE": str(tmp_path / "cache")}
    args = ("train", "--data.dir", str(tiny_data), "--max-steps", "2", "--batch-size", "2", "--threads", "1",
            "--model.n-layer", "1", "--model.n-embd", "32", "--model.n-head", "2", "--model.block-size", "32",
            "--eval.interval", "0", "--eval.samples", "0", "--log.tensorboard", "false")
    r = cli(*args, "--out", str(tmp_path / "a"), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mpl").is_dir() and (tmp_path / "a" / "loss.png").is_file()  # the cache was built in this run
    assert "fontManager" not in r.stderr and "font cache" not in r.stderr
    assert "MFU against the peak" in r.stderr and "cached" not in r.stderr.split("MFU against the peak")[1].splitlines()[0]
    r = cli(*args, "--out", str(tmp_path / "b"), env=env)
    assert r.returncode == 0 and "cached" in r.stderr.split("MFU against the peak")[1].splitlines()[0], r.stderr


# ----------------------------------------------------------------------------
# GPUs (not run on the 2-core CI machine: `pytest -m cuda` on a machine with one)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, compile_", [("bfloat16", False), ("float16", False), ("bfloat16", True)])
def test_cuda_training(tiny_data, tmp_path, dtype, compile_):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cfg = tiny_config(
        tiny_data, tmp_path / "run", device="cuda", dtype=dtype, compile=compile_, max_steps=30, threads=0,
        model={"dropout": 0.0}, optim={"lr": 1e-2, "warmup_steps": 5}, eval={"interval": 30}, log={"peak_tflops": None},
    )
    trainer = Trainer(cfg)
    assert trainer.optimizer.defaults["fused"] and (trainer.scaler is not None) == (dtype == "float16")
    summary = trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.5
    assert summary["val_bpb"] is not None and 0 < [r for r in records if r["kind"] == "train"][-1]["mfu"] < 1


def test_resuming_on_another_number_of_processes_keeps_the_global_batch(tiny_data, tmp_path, caplog):
    """With global_batch_tokens = 0 a step is one micro-batch per process: a run saved by 2 processes (2 x 4 x 32
    tokens per step) and resumed by one keeps 256 tokens per step, by accumulating 2 micro-batches."""
    from gpt2.train.pretrain import global_batch_tokens

    cfg = tiny_config(tiny_data, tmp_path / "run")
    assert global_batch_tokens(cfg, 32, 1, None) == 4 * 32
    saved = {"step": 3, "tokens": 3 * 256, "tokens_per_step": 256, "world_size": 2}
    with caplog.at_level("INFO"):
        assert global_batch_tokens(cfg, 32, 1, saved) == 256
    assert "keeping this run's global batch of 256 tokens per step (written by 2 process(es))" in caplog.text
    legacy = {"step": 3, "tokens": 3 * 256, "world_size": 2}  # checkpoints written before tokens_per_step was stored
    assert global_batch_tokens(cfg, 32, 1, legacy) == 256
    changed = tiny_config(tiny_data, tmp_path / "run", global_batch_tokens=512)
    with caplog.at_level("WARNING"):
        assert global_batch_tokens(changed, 32, 1, saved) == 512
    assert "the global batch changes from 256 to 512 tokens per step" in caplog.text
    with pytest.raises(GPT2Error, match="do not divide: choose a --batch-size that does"):
        global_batch_tokens(tiny_config(tiny_data, tmp_path / "run", batch_size=3), 32, 1, saved)
