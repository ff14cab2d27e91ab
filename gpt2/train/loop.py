"""The training loop that pre-training and fine-tuning share: one code path from 2 CPU cores to many GPUs.

A kind of training is a `Job`: its network and loss as one module, its batches
and its evaluation. Everything else is the loop's, the same for every job:
precision (bfloat16 autocast where the hardware has it, float16 with loss
scaling on older GPUs, float32 otherwise; master weights and optimizer state in
float32), DDP / FSDP2 under torchrun (applied from outside the model,
gpt2/distributed.py), torch.compile, AdamW with its schedule and clipping
(optim.py), skipped non-finite steps, checkpoints with every rank's random state
for an exact resume (gpt2/checkpoint.py), metrics, the loss plot, progress and
the final export.

On a CPU a resumed run is bit-identical to one that was never interrupted, with
the same --threads (tests/test_train.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from gpt2 import __version__, checkpoint, distributed, kernels
from gpt2.atomic import write_atomic
from gpt2.config import to_dict, to_toml
from gpt2.distributed import Dist
from gpt2.errors import GPT2Error
from gpt2.model import GPT
from gpt2.train import hardware, optim, run_dir
from gpt2.train.metrics import CSV_FIELDS, PLOT_LABELS, Metrics, plot_losses

log = logging.getLogger(__name__)


class Job:
    """What one kind of training supplies to the loop. The loop builds it with (loop, saved state or None).

    Subclasses set: `gpt` (the network), `module` (the network and its loss: `module(*batch)` or
    `module(**batch)` returns the mean loss of a micro-batch, or (loss, {name: value}) to log parts of it),
    `batches` (`next()` -> the micro-batches of one step, `state_dict()`, `load_state_dict()`, `epoch`),
    `max_steps`, `tokens_per_step` (all processes; or examples, with `unit`), `flops_per_token` (for MFU;
    None: not reported), `dataset` (a fingerprint: a resumed run must read the same data), `eval_interval`
    and `checkpoint_interval`.
    """

    csv_fields: tuple[str, ...] = CSV_FIELDS
    unit = "tok"
    """what `tokens_per_step` counts, as the logs name it ("tok", "examples")"""
    plot_metric: tuple[str, str] | None = None
    """(eval record key, label): an evaluation metric drawn on the loss plot's right axis"""
    plot_train_key = "loss"
    """the training record's loss that the plot draws beside the evaluation's val_loss"""
    plot_labels = PLOT_LABELS
    gpt: GPT
    module: nn.Module
    batches: object
    max_steps: int
    tokens_per_step: int
    flops_per_token: float | None = None
    dataset: str = ""
    eval_interval: int = 0
    """evaluate every this many steps (0: only at the end)"""
    steady_shapes = True
    """every step's tensors have the same shapes (token windows): on a CPU the heap then keeps freed memory for the
    next step (kernels.retain_freed_memory). Batches of varying lengths (fine-tuning) would fragment such a heap."""
    checkpoint_interval: int = 0
    """save every this many steps (0: only at the end)"""

    def new_module(self) -> nn.Module:
        """An empty copy of `module` on the loop's device (a whole model gathered from FSDP2 shards goes in it)."""
        raise NotImplementedError

    def check_batch(self, batches: list) -> None:
        """Refuse a step's micro-batches that cannot be right (token ids beyond the vocabulary, say)."""

    def evaluate(self, loop: Loop) -> dict | None:
        """An evaluation record (kind 'eval'; 'val_loss' if there is one), run on every rank; None: nothing to evaluate."""
        return None

    def eval_line(self, result: dict) -> str:
        return ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))

    def samples(self, loop: Loop) -> list[str]:
        """Texts to show at each evaluation (rank 0)."""
        return []

    def describe(self, loop: Loop) -> list[str]:
        """Lines logged as the run starts."""
        return []

    def export(self, module: nn.Module, out: Path) -> Path:
        """Save the trained model (the whole unwrapped module, rank 0) under `out`; returns where."""
        raise NotImplementedError

    def summary(self, loop: Loop) -> dict:
        """Extra entries of the run's summary."""
        return {}


class Loop:
    """One training run: built from a config and a job factory, advanced with `step()`, driven to the end by `run()`.

    `cfg` is a command's config with the loop's settings: out, seed, resume, threads, device, dtype,
    compile, parallel, max_nonfinite and the sections optim, eval (interval), checkpoint and log.
    """

    def __init__(self, cfg, d: Dist | None, make_job: Callable[[Loop, dict | None], Job], command: str = "gpt2 train"):
        self.cfg = cfg
        self.command = command
        self.d = d = d or Dist()
        self.device = d.device
        self.threads = None
        if self.device.type == "cpu":
            self.threads = hardware.choose_threads(cfg.threads)
            torch.set_num_threads(self.threads)
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.dtype = hardware.training_dtype(cfg.dtype, self.device)
        fsdp = cfg.parallel == "fsdp" and d.enabled
        if fsdp and self.dtype == torch.float16:
            raise GPT2Error("FSDP2 runs here in bfloat16 or float32; use --dtype bfloat16 (or --parallel ddp for float16)")

        # a new run, or the newest checkpoint of this one (decided on rank 0, where the files are written)
        decision = self._resume_decision() if d.is_main else None
        error, resume_path, saved = distributed.broadcast_object(decision, d)
        if error:
            raise GPT2Error(error)

        torch.manual_seed(cfg.seed)  # the same initial weights on every process
        self.job = job = make_job(self, saved)
        if self.device.type == "cpu" and job.steady_shapes:
            kernels.retain_freed_memory()  # a step's large buffers are reused, not faulted in afresh each step
        self.gpt = job.gpt
        self.config = job.gpt.config
        param_dtype = self.dtype if fsdp and self.device.type == "cuda" and self.dtype != torch.float32 else None
        if cfg.compile and fsdp:
            for block in self.gpt.transformer.h:
                block.compile()
        self.model = distributed.wrap(job.module, list(self.gpt.transformer.h), d, cfg.parallel, param_dtype)
        if cfg.compile and not fsdp:
            self.model = torch.compile(self.model)
        use_autocast = self.dtype != torch.float32 and param_dtype is None
        self.autocast = torch.autocast(self.device.type, dtype=self.dtype) if use_autocast else nullcontext()
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 tensor cores for what runs in float32
        o = cfg.optim
        fused = o.fused and self.device.type in ("cuda", "cpu") and not (fsdp and self.device.type == "cpu")
        self.optimizer = optim.make_optimizer(job.module, o, fused)
        self.fused_clip = fused and self.scaler is None and not fsdp
        self.warmup = optim.warmup_steps(o, job.max_steps)

        self.step_count = 0  # optimizer steps done (skipped ones included)
        self.tokens = 0
        self.nonfinite = 0
        self.best_val: float | None = None
        self.last_eval: dict | None = None
        self.elapsed = 0.0  # training seconds in earlier sessions of this run
        self.saved_seconds: float | None = None  # the run's training time as its newest checkpoint records it
        self.session_start = time.perf_counter()
        if resume_path is not None:
            self._load(Path(resume_path))
        else:
            torch.manual_seed(cfg.seed + d.rank)  # dropout masks differ between processes

        self.peak = hardware.peak_tflops(self.device, self.dtype, cfg.log.peak_tflops) if job.flops_per_token else None
        self.metrics = None
        if d.is_main:
            self._start_records(resume_path)

    # -- set-up ---------------------------------------------------------------

    def _resume_decision(self) -> tuple[str | None, str | None, dict | None]:
        """(error, checkpoint to resume from, its state.json), decided on rank 0."""
        error, path = run_dir.resume_decision(self.out, self.cfg.resume, self.command)
        saved = checkpoint.read_state(Path(path)) if path else None
        return error, path, saved

    def _start_records(self, resume_path: str | None) -> None:
        run_dir.write_run_info(self.out, {  # first: marks the folder as a run's
            "resumed_from": str(resume_path) if resume_path else None,
            "world_size": self.d.world,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "threads": self.threads,
            "torch": torch.__version__,
            "peak_tflops": self.peak.tflops if self.peak else None,
            "peak_source": self.peak.source if self.peak else None,
            "model": dataclasses.asdict(self.config),
            "parameters": self.gpt.num_params(),
            "dataset": self.job.dataset,
        })
        self.metrics = Metrics(self.out, self.step_count if resume_path else None, self.cfg.log.tensorboard, self.job.csv_fields)
        write_atomic(self.out / "config.toml", to_toml(self.cfg))
        threads = f", {self.threads} CPU thread(s)" if self.threads else ""
        log.info(
            "model: %s parameters (%d layers, %d heads, %d wide, context %d, vocabulary %s); %s on %s x %d%s, %s",
            f"{self.gpt.num_params() / 1e6:.1f}M", self.config.n_layer, self.config.n_head, self.config.n_embd,
            self.config.block_size, f"{self.config.vocab_size:,}", str(self.dtype).removeprefix("torch."), self.device,
            self.d.world, threads, "compiled" if self.cfg.compile else "eager",
        )
        for line in self.job.describe(self):
            log.info("%s", line)
        if self.peak:
            log.info("MFU against the %s", self.peak.describe())

    def _load(self, path: Path) -> None:
        """Restore the model, optimizer, data cursor, counters and RNG from a checkpoint (read on rank 0)."""
        d = self.d
        meta = None
        model_state: dict = {}
        optim_state: dict = {}
        error = None
        if d.is_main:
            try:
                ck = checkpoint.load(path)
                self._check_compatible(ck)
            except GPT2Error as e:
                error = str(e)
        error = distributed.broadcast_object(error, d)
        if error:
            raise GPT2Error(error)
        if d.is_main:
            model_state = self._full_names(ck.model)
            full = {_stored_name(k): k for k in self.job.module.state_dict()}
            optim_state = {
                "state": {full.get(k, k): v for k, v in ck.optimizer["state"].items()},
                "param_groups": [{**g, "params": [full.get(p, p) for p in g["params"]]} for g in ck.optimizer["param_groups"]],
            }
            meta = {"state": ck.state, "rng": ck.rng}
            changed = [
                k for k, v in _flat(to_dict(self.cfg)).items() if _flat(ck.state["config"]).get(k, v) != v and k not in ("resume", "out")
            ]
            if changed:
                log.warning("resuming with changed settings: %s", ", ".join(changed))
            if ck.state.get("world_size", d.world) != d.world:
                log.info("resuming on %d process(es); the checkpoint was written by %d", d.world, ck.state["world_size"])
        meta = distributed.broadcast_object(meta, d)
        optim.keep_implementation(
            self.optimizer, lambda: distributed.load_full_state(self.model, self.optimizer, model_state, optim_state, d)
        )
        state = meta["state"]
        self.step_count = int(state["step"])
        self.tokens = int(state["tokens"])
        self.nonfinite = int(state["nonfinite"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.best_val = state.get("best_val_loss")
        self.elapsed = float(state.get("elapsed", 0.0))
        self.saved_seconds = self.elapsed
        self.job.batches.load_state_dict(state["data"])
        rng = meta["rng"]
        if f"rank{d.rank}.cpu" in rng:
            torch.set_rng_state(rng[f"rank{d.rank}.cpu"])
            if self.device.type == "cuda" and f"rank{d.rank}.cuda" in rng:
                torch.cuda.set_rng_state(rng[f"rank{d.rank}.cuda"], self.device)
        else:
            log.warning("the checkpoint has no random state for rank %d (fewer processes before): reseeding it", d.rank)
            torch.manual_seed(self.cfg.seed + d.rank + 1_000_003 * self.step_count)
        log.info("resumed from %s: step %d, %s tokens, epoch %.2f", path, self.step_count, f"{self.tokens:,}", self.job.batches.epoch)

    def _check_compatible(self, ck: checkpoint.Checkpoint) -> None:
        absent = [key for key in ("tokens", "nonfinite", "data", "config", "model_config", "dataset") if key not in ck.state]
        if absent:
            raise GPT2Error(f"{ck.path}/state.json has no {', '.join(absent)} (edited by hand?); {checkpoint.RESUME_EARLIER}")
        saved = ck.state["model_config"]
        now = dataclasses.asdict(self.config)
        if saved != now:
            key = next(k for k in now if saved.get(k) != now[k])
            raise GPT2Error(
                f"{ck.path} holds a different model ({key}={saved.get(key)!r}, now {now[key]!r}); resume with the same model settings"
            )
        expected = {k: tuple(v.shape) for k, v in self._stored_names(self.job.module.state_dict()).items()}
        saved_shapes = {k: tuple(v.shape) for k, v in ck.model.items()}
        if saved_shapes != expected:
            key = next(k for k in [*expected, *saved_shapes] if saved_shapes.get(k) != expected.get(k))
            raise GPT2Error(
                f"{ck.path} holds weights of another shape ({key}: {saved_shapes.get(key)}, this model {expected.get(key)}) "
                f"than its state.json describes; it is damaged: {checkpoint.RESUME_EARLIER}"
            )
        if ck.state["dataset"] != self.job.dataset:
            raise GPT2Error(f"{ck.path} was trained on other data than this run reads; resume with the same data")

    # -- names in checkpoints -------------------------------------------------

    def _aliases(self) -> dict[str, str]:
        """Parameter names that share their tensor with an earlier one (the tied output embedding) -> that one."""
        first: dict[int, str] = {}
        aliases = {}
        for name, p in self.job.module.named_parameters(remove_duplicate=False):
            if id(p) in first:
                aliases[name] = first[id(p)]
            else:
                first[id(p)] = name
        return aliases

    def _stored_names(self, state: dict) -> dict:
        """A module state dict as a checkpoint stores it: tied tensors once, the network's names without 'gpt.'."""
        aliases = self._aliases()
        return {_stored_name(k): v for k, v in state.items() if k not in aliases}

    def _full_names(self, stored: dict) -> dict:
        """A checkpoint's names back to the module's, tied tensors filled in."""
        full = {_stored_name(k): k for k in self.job.module.state_dict()}
        state = {full.get(k, k): v for k, v in stored.items()}
        for alias, source in self._aliases().items():
            if source in state:
                state[alias] = state[source]
        return state

    # -- one step -------------------------------------------------------------

    def _to_device(self, batch):
        if isinstance(batch, dict):
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def _forward(self, batch):
        """The module on one micro-batch: (loss, {part: value} or None)."""
        out = self.model(**batch) if isinstance(batch, dict) else self.model(*batch)
        return out if isinstance(out, tuple) else (out, None)

    def step(self) -> dict:
        """One optimizer step over a global batch; returns its training record."""
        o = self.cfg.optim
        lr = optim.lr_at(self.step_count, o.lr, self.warmup, self.job.max_steps, o.final_lr_fraction, o.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        batches = self.job.batches.next()
        self.job.check_batch(batches)
        total = torch.zeros((), device=self.device)
        parts: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(batches):
            batch = self._to_device(batch)
            with distributed.gradient_sync(self.model, i == len(batches) - 1):
                with self.autocast:
                    loss, extra = self._forward(batch)
                    loss = loss / len(batches)
                total += loss.detach()
                for name, value in (extra or {}).items():
                    parts[name] = parts.get(name, 0) + value.detach().float() / len(batches)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        loss = distributed.all_reduce(total, self.d, "mean").item()
        record = {"step": self.step_count + 1, "kind": "train", "tokens": self.tokens + self.job.tokens_per_step, "loss": loss, "lr": lr}
        for name, value in parts.items():
            record[name] = distributed.all_reduce(value.reshape(()).clone(), self.d, "mean").item()
        norm = None
        if math.isfinite(loss):
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if self.fused_clip:
                norm = optim.clip_in_optimizer(self.optimizer, self.job.module.parameters(), o.grad_clip)
            else:
                norm = torch.nn.utils.clip_grad_norm_(self.job.module.parameters(), o.grad_clip or math.inf)
            if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
                norm = norm.full_tensor()
            norm = norm.item()
        # with float16 loss scaling, overflowing gradients are routine: GradScaler skips those steps itself
        if not math.isfinite(loss) or (not math.isfinite(norm) and self.scaler is None):
            # one bad batch should not poison the weights: drop this update, count it, go on
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite += 1
            record.update(loss=None if not math.isfinite(loss) else loss, skipped=True)
            what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
            log.warning("step %d: %s; update skipped (%d in a row)", self.step_count + 1, what, self.nonfinite)
        else:
            self.nonfinite = 0
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            record["grad_norm"] = norm
        self.step_count += 1
        self.tokens += self.job.tokens_per_step
        seconds = time.perf_counter() - t0
        record["seconds"] = seconds
        record[f"{self.job.unit}_per_s"] = self.job.tokens_per_step / seconds
        if self.peak:
            achieved = self.job.flops_per_token * record["tok_per_s"] / self.d.world
            self.peak.observe(achieved)
            record["mfu"] = achieved / self.peak.flops
        return record

    # -- the whole model on rank 0 --------------------------------------------

    def full_module(self) -> nn.Module | None:
        """The whole trained module on rank 0 (None elsewhere): the module itself, or under FSDP2 a gathered copy."""
        if not distributed.is_fsdp(self.model) or not self.d.enabled:
            return self.job.module if self.d.is_main else None
        state = distributed.full_model_state(self.model)
        if not self.d.is_main:
            return None
        copy = self.job.new_module()
        copy.load_state_dict(state)
        return copy

    # -- checkpoints ----------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        model_state, optim_state = distributed.full_state(self.model, self.optimizer)
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        all_rng = distributed.all_gather_object(rng, self.d)
        path = None
        if self.d.is_main:
            model_state = self._stored_names(model_state)
            optim_state = {
                "state": {_stored_name(k): v for k, v in optim_state["state"].items()},
                "param_groups": [{**g, "params": [_stored_name(p) for p in g["params"]]} for g in optim_state["param_groups"]],
            }
            val = self.last_eval.get("val_loss") if self.last_eval and self.last_eval["step"] == self.step_count else None
            self.saved_seconds = self.elapsed + self.session_seconds()
            state = {
                "tokens": self.tokens,
                "tokens_per_step": self.job.tokens_per_step,
                "data": self.job.batches.state_dict(),
                "nonfinite": self.nonfinite,
                "grad_scaler": self.scaler.state_dict() if self.scaler else None,  # float16's loss scale
                "val_loss": val,
                "best_val_loss": self.best_val,
                "elapsed": self.saved_seconds,
                "config": to_dict(self.cfg),
                "model_config": dataclasses.asdict(self.config),
                "dataset": self.job.dataset,
                "world_size": self.d.world,
                "git_commit": run_dir.git_commit(),
                "package_version": __version__,
                "saved": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            flat_rng = {f"rank{r}.{k}": v for r, states in enumerate(all_rng) for k, v in states.items()}
            c = self.cfg.checkpoint
            path = checkpoint.save(
                self.ckpt_dir, self.step_count, model_state, optim_state, flat_rng, state, keep_last=c.keep_last, keep_best=c.keep_best
            )
        distributed.barrier(self.d)
        return path

    def session_seconds(self) -> float:
        return time.perf_counter() - self.session_start

    # -- the loop -------------------------------------------------------------

    def run(self) -> dict:
        """Train to the job's max_steps with evaluation, samples, logging and checkpoints; then export the model."""
        cfg, d = self.cfg, self.d
        max_steps = self.job.max_steps
        self.session_start = time.perf_counter()
        first = self.step_count
        window: list[dict] = []
        bar = tqdm(
            total=max_steps, initial=first, desc="training", unit="step", file=sys.stderr,
            disable=None if d.is_main else True, dynamic_ncols=True,
        )
        try:
            with _redirect_logging(bar):
                while self.step_count < max_steps:
                    record = self.step()
                    record["elapsed"] = self.elapsed + self.session_seconds()
                    window.append(record)
                    if self.metrics:
                        self.metrics.add(record)
                    bar.update(1)
                    if record.get("loss") is not None:
                        mfu = f", MFU {100 * record['mfu']:.1f}%" if "mfu" in record else ""
                        rate = record[f"{self.job.unit}_per_s"]
                        bar.set_postfix_str(f"loss {record['loss']:.3f}, {rate:,.0f} {self.job.unit}/s{mfu}")
                    if self.nonfinite >= cfg.max_nonfinite:
                        raise GPT2Error(
                            f"the loss or the gradients were NaN or infinite in {self.nonfinite} steps in a row (up to step {self.step_count}); "
                            f"lower --optim.lr, lengthen --optim.warmup-steps, or train in bfloat16/float32 "
                            f"(resume from the last checkpoint with --resume)"
                        )
                    last = self.step_count == max_steps
                    if self.step_count % cfg.log.interval == 0 or last:
                        self._log_train(window)
                        window = []
                    evaluate = (self.job.eval_interval and self.step_count % self.job.eval_interval == 0) or last
                    save = (self.job.checkpoint_interval and self.step_count % self.job.checkpoint_interval == 0) or last
                    if evaluate:
                        self._eval_and_sample()
                    if save:
                        path = self.save_checkpoint()
                        if path:
                            log.info("checkpoint: %s", path)
                    if evaluate or save:
                        kernels.trim_freed_memory()  # what that work freed goes back, not held by a fragmented heap
        except KeyboardInterrupt:
            found = checkpoint.latest(self.ckpt_dir) if self.d.is_main else None
            where = f"from {found.name}" if found else "from the beginning (no checkpoint yet)"
            log.warning(
                "interrupted at step %d; to continue %s, run the same `%s` command with --resume%s", self.step_count, where,
                self.command, " (`gpt2 demo` resumes by itself)" if self.command == "gpt2 train" else "",
            )
            raise
        finally:
            bar.close()
        if self.step_count == first:  # resumed a finished run: report on it again
            self._eval_and_sample()
        return self._finish()

    def _log_train(self, window: list[dict]) -> None:
        good = [r for r in window if not r.get("skipped")]
        if not good:
            return
        seconds = sum(r["seconds"] for r in window)
        tok_s = self.job.tokens_per_step * len(window) / seconds
        eta = (self.job.max_steps - self.step_count) * seconds / len(window)
        mfu = ""
        if self.peak:
            mfu = f" | MFU {100 * self.job.flops_per_token * tok_s / self.d.world / self.peak.flops:.1f}%"
        parts = "".join(f" | {k} {sum(r[k] for r in good) / len(good):.4f}" for k in good[-1] if k.endswith("_loss"))
        log.info(
            "step %d/%d | loss %.4f%s | lr %.2e | grad norm %.2f | %s %s/s%s | ETA %s",
            self.step_count, self.job.max_steps, sum(r["loss"] for r in good) / len(good), parts, good[-1]["lr"],
            good[-1]["grad_norm"], f"{tok_s:,.0f}", self.job.unit, mfu, run_dir.duration(eta),
        )

    def _eval_and_sample(self) -> None:
        result = self.job.evaluate(self)
        if result is not None:
            self.last_eval = result
            if result.get("val_loss") is not None and (self.best_val is None or result["val_loss"] < self.best_val):
                self.best_val = result["val_loss"]
            if self.metrics:
                self.metrics.add(result)
            log.info("step %d | %s", self.step_count, self.job.eval_line(result))
        for i, text in enumerate(self.job.samples(self)):
            log.info("sample %d at step %d:\n%s\n", i + 1, self.step_count, text.strip("\n"))
        if self.metrics and self.cfg.log.plot:
            self._plot()

    def _plot(self) -> None:
        title = f"{self.out.parent.name}/{self.out.name}: {self.gpt.num_params() / 1e6:.1f}M parameters"
        if self.last_eval and self.last_eval.get("val_bpb"):
            title += f", held-out {self.last_eval['val_bpb']:.3f} bits/byte at step {self.last_eval['step']}"
        tokens_per_step = self.job.tokens_per_step if self.job.flops_per_token else None
        plot_losses(self.metrics.records, self.out / "loss.png", title, tokens_per_step, self.job.plot_metric,
                    self.job.plot_train_key, self.job.plot_labels)

    def _finish(self) -> dict:
        """Export the final model (Job.export) and log the summary line."""
        module = self.full_module()
        summary = {
            "steps": self.step_count,
            "tokens": self.tokens,
            "val_loss": self.last_eval.get("val_loss") if self.last_eval else None,
            "train_loss": self.metrics.last("train", "loss") if self.metrics else None,
            "model_dir": str(self.out / "model"),
            # the training time as the last checkpoint records it: what a run reports again when it is run again
            "seconds": self.saved_seconds if self.saved_seconds is not None else self.elapsed + self.session_seconds(),
            "earlier_seconds": self.elapsed,
            "session_seconds": self.session_seconds(),
            **self.job.summary(self),
        }
        if self.d.is_main:
            self.job.export(module, self.out / "model")
            self.metrics.close()
            if self.cfg.log.plot:
                self._plot()
            this_session = f" ({run_dir.duration(summary['session_seconds'])} in this session)" if self.elapsed else ""
            log.info(
                "trained %d steps (%s %s) in %s%s: %s; model -> %s, plot -> %s",
                self.step_count, f"{self.tokens:,}", "tokens" if self.job.unit == "tok" else self.job.unit,
                run_dir.duration(summary["seconds"]), this_session,
                self.job.eval_line(self.last_eval) if self.last_eval else "no evaluation", self.out / "model", self.out / "loss.png",
            )
        distributed.barrier(self.d)
        return summary


def _stored_name(name: str) -> str:
    """How a checkpoint names a module's tensor: the network's as GPT names them (a fine-tuning head keeps its own)."""
    return name.removeprefix("gpt.")


class _redirect_logging:
    """Route log lines through tqdm.write while a progress bar is shown, so the two do not garble each other."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.ctx = None

    def __enter__(self):
        if not self.bar.disable:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.ctx = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
