"""`gpt2 finetune`: GPT-1's supervised fine-tuning through the shared training loop; `gpt2 finetune predict`.

The fine-tuning job (GPT-1 sections 3.2-3.3, 4.1): the model to fine-tune gains
the three added tokens (their embedding rows N(0, 0.02), the output layer still
tied to the embedding), a head on the extract token, and the loss
L3 = L2 + λ L1 (heads.py); examples go through the task's input transform
(transforms.py) in a seeded order, epoch after epoch; the evaluation split is
scored once per epoch. Everything else (optimizer, schedule, clipping,
checkpoints and exact resume, logging, plot, torchrun) is the loop that
pre-training runs too (gpt2/train/loop.py).

The run writes OUT/model (the fine-tuned model in the project's format: the
GPT with its grown vocabulary, the tokenizer with the added tokens,
head.safetensors and finetune.json), OUT/metrics.json (each metric on the
evaluation split, with the number of examples and GPT-1's figure beside),
OUT/predictions.jsonl (index, label, prediction, scores per example) and
OUT/loss.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gpt2 import distributed
from gpt2.atomic import write_atomic
from gpt2.config import FinetuneConfig, FinetunePredictConfig, check_output_file
from gpt2.errors import GPT2Error
from gpt2.finetune import heads
from gpt2.finetune.metrics import METRICS
from gpt2.finetune.tasks import Example, TaskSpec, load_split, read_predict_input, task
from gpt2.finetune.transforms import SPECIAL_TOKENS, Encoded, Transform, collate
from gpt2.model import GPT
from gpt2.tokenizer import Tokenizer
from gpt2.train.loop import Job, Loop

log = logging.getLogger(__name__)

FINETUNE_JSON = "finetune.json"
HEAD_WEIGHTS = "head.safetensors"
FORMAT = "gpt2-finetuned"
VERSION = 1


# ----------------------------------------------------------------------------
# the model: a GPT with the added tokens and a head


def make_head(spec: TaskSpec, n_embd: int, dropout: float) -> nn.Module:
    if spec.kind == "multiple_choice":
        return heads.Choose(n_embd, dropout)
    return heads.Classify(n_embd, len(spec.labels or ()), dropout, regression=spec.regression)


def add_task_tokens(gpt: GPT, tokenizer: Tokenizer, generator: torch.Generator) -> None:
    """GPT-1's start, delimiter and extract tokens: in the tokenizer, and as new embedding rows of the model."""
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    if tokenizer.n_vocab > gpt.config.vocab_size:
        gpt.grow_vocab(tokenizer.n_vocab, generator)


def with_dropout(gpt: GPT, dropout: float) -> GPT:
    """The same network with another dropout rate (the modules take theirs when they are built)."""
    if gpt.config.dropout == dropout:
        return gpt
    copy = GPT(dataclasses.replace(gpt.config, dropout=dropout))
    copy.load_state_dict(gpt.state_dict())
    return copy


def restart_layers(gpt: GPT, keep: int, seed: int) -> None:
    """Blocks from `keep` on start afresh with GPT-2's initialisation, and the final LayerNorm unless every block is
    kept; the embeddings and the first `keep` blocks stay pre-trained (GPT-1 Figure 2, left)."""
    if keep >= gpt.config.n_layer:
        return
    torch.manual_seed(seed)
    fresh = GPT(gpt.config)
    for i in range(keep, gpt.config.n_layer):
        gpt.transformer.h[i].load_state_dict(fresh.transformer.h[i].state_dict())
    gpt.transformer.ln_f.load_state_dict(fresh.transformer.ln_f.state_dict())


def base_model(cfg: FinetuneConfig) -> tuple[GPT, Tokenizer]:
    """The model to fine-tune and its tokenizer, with the added tokens, in float32 on the CPU."""
    from gpt2.weights import load_model_and_tokenizer

    gpt, tokenizer = load_model_and_tokenizer(cfg.model, cfg.tokenizer, dtype=torch.float32)
    generator = torch.Generator().manual_seed(cfg.seed)
    add_task_tokens(gpt, tokenizer, generator)
    gpt = with_dropout(gpt, cfg.dropout)
    if cfg.init == "random":
        torch.manual_seed(cfg.seed)
        gpt.reset_parameters()
    elif cfg.transfer_layers is not None:
        if cfg.transfer_layers > gpt.config.n_layer:
            raise GPT2Error(f"--transfer-layers {cfg.transfer_layers}: the model has only {gpt.config.n_layer} layers")
        restart_layers(gpt, cfg.transfer_layers, cfg.seed + 1)
    return gpt.train(), tokenizer


# ----------------------------------------------------------------------------
# batches


class ExampleBatches:
    """Steps of `global_batch` examples drawn from an endless sequence of epochs, each a seeded permutation.

    Like the pre-training loader, the whole state is a cursor (examples consumed), so a resumed run continues
    with the very next examples, on any number of processes: rank r takes its own part of each step, in
    micro-batches of `micro_batch`.
    """

    def __init__(self, encoded: list[Encoded], global_batch: int, micro_batch: int, *, rank: int, world: int, seed: int,
                 pad: int, regression: bool):
        if global_batch % (micro_batch * world):
            raise GPT2Error(
                f"a batch of {global_batch} examples cannot be split into micro-batches of {micro_batch} on {world} "
                f"process(es): make --batch-size a multiple of {micro_batch * world}"
            )
        self.encoded = encoded
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.accum = global_batch // (micro_batch * world)
        self.rank, self.seed = rank, seed
        self.pad, self.regression = pad, regression
        self.cursor = 0
        self._epoch: int | None = None
        self._order = np.zeros(0, dtype=np.int64)

    @property
    def epoch(self) -> float:
        return self.cursor / len(self.encoded)

    def _index(self, k: int) -> int:
        epoch, j = divmod(k, len(self.encoded))
        if epoch != self._epoch:
            self._order = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(self.encoded))
            self._epoch = epoch
        return int(self._order[j])

    def next(self) -> list[dict[str, torch.Tensor]]:
        per_rank = self.micro_batch * self.accum
        first = self.cursor + self.rank * per_rank
        mine = [self.encoded[self._index(k)] for k in range(first, first + per_rank)]
        self.cursor += self.global_batch
        return [collate(mine[i : i + self.micro_batch], self.pad, self.regression) for i in range(0, per_rank, self.micro_batch)]

    def state_dict(self) -> dict:
        return {"cursor": self.cursor, "n_examples": len(self.encoded), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for key, now in (("n_examples", len(self.encoded)), ("seed", self.seed)):
            if state[key] != now:
                raise GPT2Error(f"the checkpoint's example order does not fit this run ({key} was {state[key]}, now {now}); resume with the same data and seed")
        self.cursor = int(state["cursor"])


# ----------------------------------------------------------------------------
# the job


def score_examples(model: heads.TaskModel, encoded: list[Encoded], batch_size: int, pad: int, device, autocast) -> list[torch.Tensor]:
    """The head's output for each example, in order, without gradients."""
    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast:
        for i in range(0, len(encoded), batch_size):
            batch = collate(encoded[i : i + batch_size], pad, regression=False)
            scores = model(batch["ids"].to(device), batch["extract"].to(device)).float().cpu()
            out.extend(scores)
    model.train(was_training)
    return out


def prediction_record(spec: TaskSpec, index: int, scores: torch.Tensor, label) -> dict:
    """One line of predictions.jsonl."""
    if spec.regression:
        return {"index": index, "label": label, "prediction": float(scores)}
    probs = torch.softmax(scores, -1)
    pred = int(scores.argmax())
    names = spec.labels
    return {
        "index": index,
        "label": names[label] if label is not None and names and label < len(names) else label,
        "prediction": names[pred] if names and pred < len(names) else pred,
        "probabilities": [round(float(p), 6) for p in probs],
    }


def compute_metrics(spec: TaskSpec, labels: list, predictions: list) -> dict[str, float]:
    return {name: METRICS[name](labels, predictions) for name in spec.metrics}


class FineTuning(Job):
    """A labelled task through GPT-1's input transforms, a head and the auxiliary LM loss."""

    unit = "examples"
    steady_shapes = False  # batches are as long as their longest example

    def __init__(self, loop: Loop, saved: dict | None):
        cfg, d = loop.cfg, loop.d
        self.cfg = cfg
        self.loop = loop
        self.device = loop.device
        self.spec = spec = task(cfg.task)
        train, train_records = load_split(spec, spec.train, cfg.data.dir, cfg.data.train)  # bad data fails before the model loads
        self.eval_examples, eval_records = load_split(spec, spec.eval, cfg.data.dir, cfg.data.eval)
        gpt, self.tok = base_model(cfg)
        self.config = gpt.config
        self.max_len = cfg.max_len or gpt.config.block_size
        if self.max_len > gpt.config.block_size:
            raise GPT2Error(f"--max-len {self.max_len} is longer than the model's context ({gpt.config.block_size})")
        self.transform = Transform(spec, self.tok, self.max_len)
        self.pad = self.tok.eot_token if self.tok.eot_token is not None else 0

        if cfg.data.max_train_examples is not None and cfg.data.max_train_examples < len(train):
            keep = np.sort(np.random.Generator(np.random.PCG64(cfg.seed)).permutation(len(train))[: cfg.data.max_train_examples])
            train = [train[i] for i in keep]
        encoded, cut = self.transform.encode_all(train)
        self.eval_encoded, eval_cut = self.transform.encode_all(self.eval_examples)
        for what, n, total in (("training", cut, len(train)), ("evaluation", eval_cut, len(self.eval_examples))):
            if n:
                log.info("%d of %d %s examples are longer than %d tokens: truncated (none is dropped)", n, total, what, self.max_len)
        self.n_train = len(train)

        self.gpt = gpt.to(loop.device)
        torch.manual_seed(cfg.seed)
        self.module = heads.TaskModel(self.gpt, make_head(spec, gpt.config.n_embd, cfg.dropout), cfg.lm_coef).to(loop.device)
        if cfg.micro_batch_size is None and cfg.batch_size % d.world:
            raise GPT2Error(
                f"--batch-size {cfg.batch_size} cannot be shared by {d.world} processes: make it a multiple of {d.world}, "
                f"or set --micro-batch-size"
            )
        micro = cfg.micro_batch_size or cfg.batch_size // d.world
        self.batches = ExampleBatches(encoded, cfg.batch_size, micro, rank=d.rank, world=d.world, seed=cfg.seed,
                                      pad=self.pad, regression=spec.regression)
        self.micro_batch = micro
        steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
        self.max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(train) / cfg.batch_size))
        self.tokens_per_step = cfg.batch_size
        self.eval_interval = cfg.eval.interval if cfg.eval.interval is not None else steps_per_epoch
        self.checkpoint_interval = cfg.checkpoint.interval or self.eval_interval
        self.csv_fields = ("step", "kind", "tokens", "loss", "task_loss", "lm_loss", "val_loss", *spec.metrics, "lr", "grad_norm",
                           "examples_per_s", "elapsed")
        self.plot_metric = (spec.metrics[0], f"{spec.eval.name} {spec.metrics[0]}")
        self.plot_train_key = "task_loss"  # L2, the quantity the evaluation's loss measures (L3 adds λ L1)
        task_loss = "squared error" if spec.regression else "cross-entropy"
        self.plot_labels = {"loss": "training task loss", "val_loss": f"{spec.eval.name} task loss", "axis": f"task loss ({task_loss})"}
        identity = {"task": spec.name, "train": train_records, "eval": eval_records, "max_train_examples": cfg.data.max_train_examples,
                    "max_len": self.max_len, "tokens": SPECIAL_TOKENS}
        self.dataset = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.sources = {"train": train_records, "eval": eval_records}
        self.last_predictions: list[dict] = []

    def new_module(self) -> nn.Module:
        gpt = GPT(self.config)
        return heads.TaskModel(gpt, make_head(self.spec, self.config.n_embd, self.cfg.dropout), self.cfg.lm_coef).to(self.device)

    def describe(self, loop: Loop) -> list[str]:
        cfg = self.cfg
        return [
            f"task: {self.spec.title}, {self.spec.kind}; {self.n_train:,} training examples, {len(self.eval_examples):,} in "
            f"{self.spec.eval.name}; {self.spec.sequences} sequence(s) per example of at most {self.max_len} tokens",
            f"batch: {cfg.batch_size} examples per step = {loop.d.world} process(es) x {self.batches.accum} micro-batch(es) x "
            f"{self.micro_batch}; {self.max_steps} steps = {self.max_steps * cfg.batch_size / self.n_train:.2f} epochs; "
            f"warm-up {loop.warmup} steps; λ = {cfg.lm_coef}",
        ]

    def evaluate(self, loop: Loop) -> dict | None:
        """Scores of the evaluation split (each process a share), its task loss, predictions and metrics."""
        d = loop.d
        mine = list(range(d.rank, len(self.eval_encoded), d.world))
        batch = self.cfg.eval.batch_size or self.micro_batch
        share = -(-len(self.eval_encoded) // d.world)
        mine += (mine or [0])[:1] * (share - len(mine))  # as many batches on every rank (FSDP2 gathers in each); repeats count once
        scores = score_examples(loop.model, [self.eval_encoded[i] for i in mine], batch, self.pad, self.device, loop.autocast)
        gathered = distributed.all_gather_object(list(zip(mine, [s.tolist() for s in scores])), d)
        by_index = dict(pair for part in gathered for pair in part)
        ordered = [torch.tensor(by_index[i]) for i in range(len(self.eval_encoded))]
        labels = [e.label for e in self.eval_examples]
        result = {"step": loop.step_count, "kind": "eval", "tokens": loop.tokens, "eval_examples": len(labels)}
        head = self.module.head
        if all(y is not None for y in labels):
            stacked = torch.stack(ordered)
            target = torch.tensor(labels, dtype=torch.float32 if self.spec.regression else torch.long)
            result["val_loss"] = float(head.loss(stacked, target))
            predictions = head.predict(stacked).tolist()
            result.update(compute_metrics(self.spec, labels, predictions))
        self.last_predictions = [prediction_record(self.spec, i, s, y) for i, (s, y) in enumerate(zip(ordered, labels))]
        return result

    def eval_line(self, result: dict) -> str:
        metrics = ", ".join(f"{m} {result[m]:.2f}" for m in self.spec.metrics if m in result)
        loss = f"{self.spec.eval.name} loss {result['val_loss']:.4f}, " if "val_loss" in result else ""
        return f"{loss}{metrics} ({result['eval_examples']:,} examples)"

    def export(self, module: nn.Module, out: Path) -> Path:
        from safetensors.torch import save_file

        from gpt2.weights import save_model

        info = {
            "format": FORMAT,
            "version": VERSION,
            "task": self.spec.name,
            "kind": self.spec.kind,
            "labels": list(self.spec.labels) if self.spec.labels else None,
            "head": type(module.head).__name__,
            "regression": self.spec.regression,
            "max_len": self.max_len,
            "special_tokens": {name: self.tok.special_tokens[name] for name in SPECIAL_TOKENS},
            "lm_coef": self.cfg.lm_coef,
            "base_model": str(self.cfg.model),
        }
        head_state = {k: v.detach().float().cpu().contiguous() for k, v in module.head.state_dict().items()}

        def write_head(folder: Path) -> None:
            save_file(head_state, str(folder / HEAD_WEIGHTS))
            (folder / FINETUNE_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

        path = save_model(module.gpt, out, tokenizer=self.tok, overwrite=True, extra=write_head)
        self._write_results(out.parent)
        return path

    def _write_results(self, run: Path) -> None:
        result = self.loop.last_eval or {}
        report = {
            "task": self.spec.name,
            "split": self.spec.eval.name,
            "examples": len(self.eval_examples),
            "metrics": {m: result.get(m) for m in self.spec.metrics},
            "paper": self.spec.paper,
            "step": result.get("step"),
            "training_examples": self.n_train,
            "epochs": self.max_steps * self.cfg.batch_size / self.n_train,
            "lm_coef": self.cfg.lm_coef,
            "init": self.cfg.init,
            "transfer_layers": self.cfg.transfer_layers,
            "model": str(self.cfg.model),
            "data": self.sources,
        }
        write_atomic(run / "metrics.json", json.dumps(report, indent=1) + "\n")
        write_atomic(run / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in self.last_predictions))

    def summary(self, loop: Loop) -> dict:
        return {m: loop.last_eval.get(m) for m in self.spec.metrics} if loop.last_eval else {}


def finetune(cfg: FinetuneConfig) -> dict:
    """`gpt2 finetune`: returns the run's summary (steps, the evaluation split's metrics, model directory)."""
    d = distributed.init(cfg.device)
    try:
        return Loop(cfg, d, FineTuning, command="gpt2 finetune").run()
    finally:
        distributed.shutdown(d)


# ----------------------------------------------------------------------------
# a fine-tuned model, loaded again: `gpt2 finetune predict`


def load_task_model(path: Path, device="cpu") -> tuple[heads.TaskModel, TaskSpec, Tokenizer, dict]:
    """A fine-tuned model (OUT of `gpt2 finetune`, or OUT/model): the TaskModel, its task, tokenizer and finetune.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from gpt2.weights import load_model

    path = Path(path)
    if (path / "model" / FINETUNE_JSON).is_file():
        path = path / "model"
    if not (path / FINETUNE_JSON).is_file():
        raise GPT2Error(
            f"{path} is not a fine-tuned model (no {FINETUNE_JSON}): fine-tune it first with `gpt2 finetune --task NAME --model {path}`"
        )
    try:
        info = json.loads((path / FINETUNE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GPT2Error(f"{path / FINETUNE_JSON} cannot be read ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        raise GPT2Error(f"{path / FINETUNE_JSON} is not a version-{VERSION} {FORMAT} description")
    spec = task(str(info.get("task")))
    gpt, tokenizer = load_model(path, device=device, dtype=torch.float32)
    if tokenizer is None or any(t not in tokenizer.special_tokens for t in SPECIAL_TOKENS):
        raise GPT2Error(f"{path} has no tokenizer with the added tokens {', '.join(SPECIAL_TOKENS)}; it is not a complete fine-tuned model")
    head = make_head(spec, gpt.config.n_embd, 0.0)
    try:
        head.load_state_dict(load_file(str(path / HEAD_WEIGHTS)))
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise GPT2Error(f"{path / HEAD_WEIGHTS} cannot be read ({e})") from None
    except RuntimeError:
        raise GPT2Error(f"{path / HEAD_WEIGHTS} does not fit the {spec.name} head that {FINETUNE_JSON} describes") from None
    model = heads.TaskModel(gpt, head.to(device), lm_coef=0.0).eval()
    return model, spec, tokenizer, info


def predict(cfg: FinetunePredictConfig) -> list[dict]:
    """`gpt2 finetune predict`: returns the prediction records (also printed, or written to --output)."""
    check_output_file(cfg.output, cfg.force)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from gpt2.device import resolve_device

    device = resolve_device(cfg.device)
    model, spec, tokenizer, info = load_task_model(cfg.model, device)
    if cfg.task is not None and cfg.task != spec.name:
        raise GPT2Error(f"{cfg.model} was fine-tuned for {spec.name}, not {cfg.task}; give a model fine-tuned for {cfg.task}")
    if not Path(cfg.input).exists():
        raise GPT2Error(f"input file {cfg.input} does not exist")
    examples: list[Example] = read_predict_input(spec, Path(cfg.input))
    transform = Transform(spec, tokenizer, int(info.get("max_len") or model.gpt.config.block_size))
    encoded, cut = transform.encode_all(examples)
    if cut:
        log.info("%d of %d examples are longer than %d tokens: truncated", cut, len(examples), transform.max_len)
    pad = tokenizer.eot_token if tokenizer.eot_token is not None else 0
    from contextlib import nullcontext

    scores = score_examples(model, encoded, cfg.batch_size, pad, device, nullcontext())
    records = [prediction_record(spec, i, s, e.label) for i, (s, e) in enumerate(zip(scores, examples))]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if cfg.output is not None:
        write_atomic(cfg.output, lines)
    else:
        sys.stdout.write(lines)
    labelled = [e.label for e in examples]
    if labelled and all(y is not None for y in labelled):
        metrics = compute_metrics(spec, labelled, [r["prediction"] if spec.regression else _index(spec, r["prediction"]) for r in records])
        log.info("%s on %d labelled examples: %s", spec.name, len(records), ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    log.info("labelled %d examples with %s (%s)", len(records), cfg.model, spec.name)
    return records


def _index(spec: TaskSpec, name) -> int:
    return spec.labels.index(name) if isinstance(name, str) else int(name)
