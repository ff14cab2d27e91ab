"""`gpt2 train`: pre-training a GPT on token shards (GPT-2 section 2), through the shared training loop.

The recipe follows the GPT papers where they say something and common practice
where they do not: the loss is next-token cross-entropy (loss.py), AdamW with
warm-up then cosine decay (optim.py), and a global batch counted in tokens,
reached by gradient accumulation (GPT-2 section 2.3: 512 sequences of 1024
tokens). Values for the paper's sizes, which GPT-2 does not state, come from
GPT-3 Table 2.1 (configs/). Held-out evaluation reports nats per token and bits
per byte; samples show what the model has learned.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn as nn

from gpt2 import distributed
from gpt2.config import TrainConfig
from gpt2.data.loader import TrainBatches, eval_batches, eval_windows
from gpt2.data.shards import TokenDataset
from gpt2.distributed import Dist
from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig
from gpt2.train.loop import Job, Loop
from gpt2.train.loss import LMLoss
from gpt2.train.metrics import flops_per_token

log = logging.getLogger(__name__)


def model_config(cfg: TrainConfig, n_vocab: int) -> GPTConfig:
    """The GPTConfig of a run: the preset, overridden by the sizes given; the vocabulary from the data."""
    m = cfg.model
    sizes = {k: getattr(m, k) for k in ("n_layer", "n_head", "n_embd") if getattr(m, k) is not None}
    vocab = m.vocab_size or n_vocab
    if vocab < n_vocab:
        raise GPT2Error(f"model.vocab_size ({vocab:,}) is smaller than the dataset's tokenizer ({n_vocab:,} tokens)")
    return GPTConfig.from_name(
        m.preset, **sizes, block_size=m.block_size, vocab_size=vocab, dropout=m.dropout, bias=m.bias, pad_vocab_to=m.pad_vocab_to
    )


def global_batch_tokens(cfg: TrainConfig, block_size: int, world: int, saved: dict | None) -> int:
    """Tokens per optimizer step: --global-batch-tokens, else the resumed run's own, else one micro-batch per process.

    A run resumed on another number of processes keeps its global batch (and so its learning), reached by more
    or fewer micro-batches; only an explicit --global-batch-tokens changes it.
    """
    B, T = cfg.batch_size, block_size
    unit = B * T * world
    before = None
    if saved is not None:
        before = saved.get("tokens_per_step") or (saved["tokens"] // saved["step"] if saved.get("step") else None)
    if cfg.global_batch_tokens:
        tokens = cfg.global_batch_tokens
        if before and before != tokens:
            log.warning("the global batch changes from %s to %s tokens per step (--global-batch-tokens)", f"{before:,}", f"{tokens:,}")
    elif before:
        tokens = before
        if tokens % unit:
            raise GPT2Error(
                f"this run trained with {tokens:,} tokens per step, which {world} process(es) x batch_size {B} x {T} tokens "
                f"({unit:,}) do not divide: choose a --batch-size that does, or pass --global-batch-tokens to change the batch"
            )
        if saved.get("world_size", world) != world:
            log.info(
                "keeping this run's global batch of %s tokens per step (written by %d process(es)); "
                "pass --global-batch-tokens to change it", f"{tokens:,}", saved["world_size"],
            )
    else:
        tokens = unit
    if tokens % unit:
        raise GPT2Error(
            f"global_batch_tokens ({tokens:,}) must be a multiple of batch_size x block_size x processes "
            f"({B} x {T} x {world} = {unit:,})"
        )
    return tokens


class Pretraining(Job):
    """Next-token prediction on the token shards of `gpt2 prepare`, with held-out bits per byte and samples."""

    def __init__(self, loop: Loop, saved: dict | None):
        cfg, d = loop.cfg, loop.d
        self.cfg = cfg
        self.device = loop.device
        self.data = TokenDataset(cfg.data.dir)
        self.tok = self.data.tokenizer()
        self.config = model_config(cfg, self.data.n_vocab)
        T, B = self.config.block_size, cfg.batch_size
        self.tokens_per_step = global_batch_tokens(cfg, T, d.world, saved)
        self.global_batch = self.tokens_per_step // T  # sequences per step
        self.max_steps = cfg.max_steps
        self.gpt = GPT(self.config).to(loop.device)
        self.module = LMLoss(self.gpt)
        self.batches = TrainBatches(self.data.stream("train"), T, B, self.global_batch, rank=d.rank, world=d.world, seed=cfg.seed)
        self.val = self.data.stream("val") if self.data.num_tokens("val") > 0 else None
        self.token_bytes = torch.tensor(
            [0 if i in self.tok.special_tokens.values() else len(b) for i, b in enumerate(self.tok.vocab)]
            + [0] * (self.config.vocab_size - self.tok.n_vocab),
            dtype=torch.float64,
            device=loop.device,
        )
        self.flops_per_token = flops_per_token(self.config, T)
        self.dataset = self.data.fingerprint
        self.eval_interval = cfg.eval.interval
        self.checkpoint_interval = cfg.checkpoint.interval

    def new_module(self) -> nn.Module:
        return LMLoss(GPT(self.config)).to(self.device)

    def describe(self, loop: Loop) -> list[str]:
        cfg, T = self.cfg, self.config.block_size
        return [
            f"batch: {self.tokens_per_step:,} tokens per step = {loop.d.world} process(es) x {self.batches.accum} micro-batch(es) "
            f"x {cfg.batch_size} x {T} tokens; {self.max_steps} steps = {self.max_steps * self.tokens_per_step:,} tokens "
            f"({self.max_steps * self.global_batch / self.batches.n_windows:.2f} epochs of {self.data.num_tokens('train'):,} "
            f"training tokens); warm-up {loop.warmup} steps"
        ]

    def check_batch(self, batches: list) -> None:
        self._check_ids(*(t for batch in batches for t in batch))

    def _check_ids(self, *tokens: torch.Tensor) -> None:
        """Refuse token ids the tokenizer does not have (a damaged shard, or shards of another tokenizer)."""
        top = max(int(t.max()) for t in tokens)
        if top >= self.data.n_vocab:
            raise GPT2Error(
                f"the token shards in {self.cfg.data.dir} hold the id {top}, but their tokenizer has only "
                f"{self.data.n_vocab} tokens: the shards are damaged; rebuild them with `gpt2 prepare ... --force`"
            )

    @torch.no_grad()
    def evaluate(self, loop: Loop) -> dict | None:
        """Held-out loss (nats per token) and bits per byte, over up to eval.max_tokens tokens of the held-out split.

        Bits per byte = summed loss / ln 2 / UTF-8 bytes of the predicted tokens; positions
        whose target is a special token (<|endoftext|>) count in the loss but not here, so the
        figure measures the text alone and compares across tokenizers.
        """
        if self.val is None:
            return None
        cfg, d = self.cfg, loop.d
        n, _ = eval_windows(self.val, self.config.block_size, cfg.eval.max_tokens)
        if n < d.world:
            log.warning("the held-out split is too small to evaluate on %d processes", d.world)
            return None
        n -= n % d.world  # every process runs the same number of batches (FSDP gathers in each)
        loop.model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in eval_batches(
            self.val, self.config.block_size, cfg.eval.batch_size or cfg.batch_size, n * self.config.block_size,
            rank=d.rank, world=d.world,
        ):
            self._check_ids(x, y)
            x, y = x.to(self.device), y.to(self.device)
            with loop.autocast:
                losses = loop.model(x, y, reduction="none").double()
            nbytes = self.token_bytes[y]
            sums += torch.stack([losses.sum(), torch.tensor(losses.numel(), device=self.device), (losses * (nbytes > 0)).sum(), nbytes.sum()])
        loop.model.train()
        distributed.all_reduce(sums, d)
        nats, count, text_nats, text_bytes = sums.tolist()
        return {
            "step": loop.step_count,
            "kind": "eval",
            "tokens": loop.tokens,
            "val_loss": nats / count,
            "val_bpb": text_nats / math.log(2) / text_bytes if text_bytes else None,
            "val_tokens": int(count),
        }

    def eval_line(self, result: dict) -> str:
        bpb = f"{result['val_bpb']:.4f} bits per byte" if result.get("val_bpb") is not None else "no bits per byte"
        return f"held-out loss {result['val_loss']:.4f} ({bpb})"

    def samples(self, loop: Loop) -> list[str]:
        """`eval.samples` continuations of eval.prompt (or of <|endoftext|>, the start of a document), on rank 0.

        The generator is seeded with seed + step, so a step's samples are the same whenever they are made."""
        cfg = self.cfg.eval
        if cfg.samples == 0:
            return []
        module = loop.full_module()
        if module is None:
            return []
        from gpt2.sample import generate

        model = module.gpt
        eot = self.tok.eot_token
        prompt = self.tok.encode_ordinary(cfg.prompt) if cfg.prompt else [eot]
        prompt = prompt[-(self.config.block_size - cfg.sample_tokens) :] if len(prompt) + cfg.sample_tokens > self.config.block_size else prompt
        generator = torch.Generator(self.device).manual_seed(self.cfg.seed + loop.step_count)
        was_training = model.training
        model.eval()
        with torch.no_grad(), loop.autocast:
            new = generate(
                model, [prompt] * cfg.samples, min(cfg.sample_tokens, self.config.block_size - len(prompt)),
                temperature=cfg.temperature, top_k=cfg.top_k, stop_ids=(eot,) if eot is not None else (), generator=generator,
                vocab_size=self.tok.n_vocab,
            )
        model.train(was_training)
        shown = [] if not cfg.prompt else prompt
        return [self.tok.decode([t for t in shown + ids if t != eot]) for ids in new]

    def export(self, module: nn.Module, out: Path) -> Path:
        from gpt2.weights import save_model

        return save_model(module.gpt, out, tokenizer=self.tok, overwrite=True)

    def summary(self, loop: Loop) -> dict:
        return {"val_bpb": loop.last_eval.get("val_bpb") if loop.last_eval else None}


class Trainer(Loop):
    """A `gpt2 train` run: the shared loop with the pre-training job."""

    def __init__(self, cfg: TrainConfig, d: Dist | None = None):
        super().__init__(cfg, d, Pretraining)

    @property
    def loader(self) -> TrainBatches:
        return self.job.batches


def train(cfg: TrainConfig) -> dict:
    """`gpt2 train`: returns the run's summary (steps, tokens, held-out loss and bits per byte, model directory)."""
    d = distributed.init(cfg.device)
    try:
        return Trainer(cfg, d).run()
    finally:
        distributed.shutdown(d)
