"""The end-to-end demo that the README's first command (`make demo`) runs: a few minutes on 2 CPU cores.

1. the corpus: Tiny Shakespeare (Karpathy's char-rnn corpus, 1.1 MB), downloaded
   once into the cache and checked against its sha256; offline users pass
   `--corpus FILE` or set GPT2_DEMO_CORPUS to a local copy;
2. a byte-level BPE tokenizer learned from the training documents (or GPT-2's own);
3. `gpt2 prepare`: one document per speech (paragraph), 5% of them held out;
4. `gpt2 train` with the recipe below (also configs/demo.toml): a 4-layer GPT;
5. the report: held-out bits per byte next to what zlib achieves on the same
   text, samples from the model, and the loss curve (OUT/train/loss.png).

Re-running continues an interrupted demo, or just reports on a finished one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import zlib
from pathlib import Path

from gpt2 import download
from gpt2.config import DemoConfig, PrepareConfig, TrainConfig, from_dict, load_toml
from gpt2.errors import GPT2Error
from gpt2.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CORPUS_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# The training recipe: sized so that training takes a few minutes on 2 CPU cores (README.md gives
# measured times). configs/demo.toml holds the same settings for `gpt2 train`.
RECIPE = {
    "max_steps": 400,
    "batch_size": 16,
    "seed": 1337,
    "model": {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 128, "dropout": 0.0},
    "optim": {"lr": 2e-3, "warmup_steps": 30, "final_lr_fraction": 0.1, "weight_decay": 0.1, "beta2": 0.99},
    "eval": {"interval": 100, "max_tokens": 0, "samples": 1, "sample_tokens": 48},
    "checkpoint": {"interval": 200, "keep_last": 2},
    "log": {"interval": 25},
}
PROMPTS = ("", "ROMEO:\n", "First Citizen:\n")


def demo_corpus(path: Path | None) -> Path:
    """--corpus, else $GPT2_DEMO_CORPUS, else the cached download."""
    path = path or (Path(os.environ["GPT2_DEMO_CORPUS"]) if os.environ.get("GPT2_DEMO_CORPUS") else None)
    if path is not None:
        if path.is_dir():
            raise GPT2Error(f"demo corpus {path} is a directory; pass --corpus with the text file itself (Tiny Shakespeare's input.txt)")
        if not path.is_file():
            raise GPT2Error(f"demo corpus {path} does not exist; pass --corpus with a copy of Tiny Shakespeare ({CORPUS_URL})")
        return path
    return download.fetch(CORPUS_URL, CORPUS_SHA256, download.cache_dir() / "tinyshakespeare" / "input.txt", what="Tiny Shakespeare")


def train_config(out: Path, train_toml: Path | None = None, steps: int | None = None) -> TrainConfig:
    """The demo's TrainConfig: RECIPE, then the settings of `train_toml`, then `steps`."""
    data = {**RECIPE, **{k: dict(v) for k, v in RECIPE.items() if isinstance(v, dict)}}
    if train_toml is not None:
        for key, value in load_toml(train_toml).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
    data["out"] = str(out / "train")
    data.setdefault("data", {})["dir"] = str(out / "data")
    data["resume"] = True  # a re-run continues (or reports on) the previous one
    if steps is not None:
        data["max_steps"] = steps
        data["optim"]["warmup_steps"] = min(data["optim"].get("warmup_steps", 0), steps)
    return from_dict(TrainConfig, data, str(train_toml) if train_toml else "the demo recipe")


def demo(cfg: DemoConfig) -> dict:
    """`gpt2 demo`: returns the training summary plus the samples and the zlib baseline."""
    from gpt2.data.prepare import prepare, split_documents

    t0 = time.perf_counter()
    out = Path(cfg.out)
    corpus = demo_corpus(cfg.corpus)
    train_cfg = train_config(out, cfg.train_config, cfg.steps)  # check the settings before any work
    prep = PrepareConfig(input=[corpus], out=out / "data", tokenizer=str(out / "tokenizer"), text_documents="paragraph")

    log.info("[1/4] tokenizer")
    if cfg.tokenizer == "gpt2":
        tok = Tokenizer.gpt2()
        log.info("using GPT-2's tokenizer (%s tokens)", f"{tok.n_vocab:,}")
    else:
        t = time.perf_counter()
        tok = Tokenizer.train(split_documents(prep, "train"), cfg.vocab_size, progress=False)
        log.info("learned a %s-token vocabulary from the training documents of %s in %.1f s", f"{tok.n_vocab:,}", corpus, time.perf_counter() - t)
    if (out / "tokenizer").exists():  # a re-run: the same tokenizer, or nothing of the earlier demo is touched
        if Tokenizer.load(out / "tokenizer").fingerprint() != tok.fingerprint():
            raise GPT2Error(
                f"{out} holds a demo made with another tokenizer (another --tokenizer, --vocab-size or corpus); "
                f"choose another --out, or delete {out} to start again"
            )
    else:
        tok.save(out / "tokenizer")

    log.info("[2/4] token shards")
    try:
        prepare(prep)  # refuses, before writing anything, to replace the shards of another corpus
    except GPT2Error as e:
        if "different dataset" not in str(e):
            raise
        raise GPT2Error(f"{out} holds a demo made from another corpus; choose another --out, or delete {out} to start again") from None

    log.info("[3/4] training")
    from gpt2 import distributed
    from gpt2.train import Trainer
    from gpt2.train.run_dir import duration

    d = distributed.init(train_cfg.device)
    trainer = Trainer(train_cfg, d)
    summary = trainer.run()

    log.info("[4/4] report")
    held_out = "".join(split_documents(prep, "val")).encode("utf-8")
    zlib_bpb = 8 * len(zlib.compress(held_out, 9)) / len(held_out)
    samples = _samples(trainer, tok)
    this_run = time.perf_counter() - t0
    resumed = summary["earlier_seconds"] > 0
    timing = f"trained in {duration(summary['seconds'])}" + (
        f" over several runs; this run took {duration(this_run)}" if resumed else f"; {duration(this_run)} in all"
    )
    lines = [
        "",
        f"Tiny Shakespeare demo: a {trainer.gpt.num_params() / 1e6:.1f}M-parameter GPT, {summary['steps']} steps "
        f"({summary['tokens']:,} tokens) {timing}",
        f"held-out text: {summary['val_bpb']:.3f} bits per byte (loss {summary['val_loss']:.3f} nats per token); "
        f"zlib -9 on the same text: {zlib_bpb:.3f} bits per byte",
        f"loss curve: {Path(train_cfg.out) / 'loss.png'}",
        f"model: {summary['model_dir']}",
    ]
    for prompt, text in zip(PROMPTS, samples):
        lines += ["", f"--- sample{' from ' + repr(prompt.strip()) if prompt else ''} ---", text.rstrip("\n")]
    sys.stdout.write("\n".join(lines) + "\n")
    return {**summary, "zlib_bpb": zlib_bpb, "samples": samples}


def _samples(trainer, tok: Tokenizer, tokens: int = 120) -> list[str]:
    """One sample per prompt; speeches are separated by <|endoftext|>, shown as a blank line."""
    import torch

    from gpt2.sample import generate

    eot = tok.eot_token
    prompts = [[eot] + tok.encode_ordinary(p) for p in PROMPTS]
    model = trainer.gpt.eval()
    generator = torch.Generator(trainer.device).manual_seed(trainer.cfg.seed)
    n = min(tokens, trainer.config.block_size - max(map(len, prompts)))
    with torch.no_grad(), trainer.autocast:
        new = generate(model, prompts, n, temperature=0.8, top_k=50, generator=generator, vocab_size=tok.n_vocab)
    return [tok.decode([t if t != eot else tok.encode_ordinary("\n")[0] for t in p[1:] + ids]) for p, ids in zip(prompts, new)]
