"""`gpt2 eval`: run the zero-shot tasks on one model, caching each task, and write the results and the report.

Layout of the output directory:

    results.json             every task's metrics (with variants), datasets (sha256), model, tokens, time
    report.md                Table 3 layout with the paper's numbers beside ours, then the other tasks
    config.toml              the resolved settings of the last run
    tasks/NAME-KEY.json      one finished task; KEY hashes what determines its numbers (model weights,
                             tokenizer, dataset files, the task's settings, the code's result version)
    tasks/NAME-KEY.samples.jsonl   per-example predictions, for inspection

A task whose file exists is not run again, so an interrupted run resumes with
the first unfinished task; a different model or setting gets a new key and
never overwrites an older result.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import gpt2
from gpt2 import config as C
from gpt2 import kernels
from gpt2.atomic import write_atomic
from gpt2.errors import GPT2Error
from gpt2.evaluate.datasets import locate_all
from gpt2.evaluate.scoring import Scorer
from gpt2.evaluate.tasks import TASKS, Context, TaskOutput

log = logging.getLogger(__name__)

FORMAT = "gpt2-eval-results"
FORMAT_VERSION = 1
# Bump when a change to the code changes a task's numbers, so cached results are not reused.
RESULTS_VERSION = 1


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cache_key(task: str, model_fp: str, tokenizer_fp: str, datasets: list[str], settings: dict, dtype: str) -> str:
    blob = json.dumps(
        {"task": task, "model": model_fp, "tokenizer": tokenizer_fp, "datasets": datasets, "settings": settings,
         "dtype": dtype, "version": RESULTS_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _default_generate():
    try:
        return importlib.import_module("gpt2.sample").generate
    except (ImportError, AttributeError):
        return None


def evaluate(model, tokenizer, cfg: C.EvalConfig, *, model_info: dict | None = None, generate=None, progress: bool | None = None) -> dict:
    """Run `cfg.tasks` on `model`; write results.json and report.md to cfg.out; return the results."""
    from gpt2.evaluate import report

    if tokenizer.eot_token is None:
        raise GPT2Error("the tokenizer has no <|endoftext|> token, which the evaluations use as the document start")
    if tokenizer.n_vocab > model.config.vocab_size:
        raise GPT2Error(
            f"the tokenizer has {tokenizer.n_vocab:,} tokens but the model predicts only {model.config.vocab_size:,}: "
            f"pass the tokenizer the model was trained with (--tokenizer)"
        )
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise GPT2Error(f"--out {out} is a file; give a directory")
    # every dataset is found (or downloaded) and verified before any work starts; all missing ones named at once
    resolved = locate_all((key for name in cfg.tasks for key in TASKS[name].sources), cfg.data_dir)

    model_fp = model_fingerprint(model)
    tok_fp = tokenizer.fingerprint()  # pattern, merges and special tokens
    info = {
        "name": Path(str(cfg.model)).resolve().name,  # `--model .` is named after the folder
        "path": str(cfg.model),
        "n_params": model.num_params(),
        "config": dataclasses.asdict(model.config),
        "sha256": model_fp,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(next(model.parameters()).device),
        **(model_info or {}),
    }
    results_path = out / "results.json"
    if results_path.exists() and not cfg.force:
        try:
            previous = json.loads(results_path.read_text(encoding="utf-8"))
            other = previous.get("model", {}).get("sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise GPT2Error(
                f"{results_path} exists but cannot be read as results; move it away, choose another --out, or pass --force to replace it"
            ) from None
        if other != model_fp:
            raise GPT2Error(
                f"{results_path} holds the results of another model ({previous.get('model', {}).get('path', 'unknown')}); "
                f"choose another --out, or pass --force to replace them"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.toml", C.to_toml(cfg))

    scorer = Scorer(model, batch_tokens=cfg.batch_tokens, progress=progress)
    ctx = Context(model, tokenizer, scorer, {k: r.path for k, r in resolved.items()}, cfg,
                  generate if generate is not None else _default_generate(), progress)
    task_results = {}
    for name in cfg.tasks:
        task = TASKS[name]
        settings = {s: getattr(cfg, s) for s in task.settings}
        key = cache_key(name, model_fp, tok_fp, [resolved[s].sha256 for s in task.sources], settings, info["dtype"])
        path = out / "tasks" / f"{name}-{key}.json"
        partial = path.with_suffix(".partial.jsonl")  # generation tasks' finished prompts, kept until the task ends
        if cfg.force:
            partial.unlink(missing_ok=True)
        record = None
        if path.exists() and not cfg.force:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if record is None or report.malformed_task(name, record):
                log.warning("%s is damaged: running %s again", path, name)
                record = None
            else:
                record["cached"] = True
                log.info("%s: cached in %s", name, path)
        if record is None:
            module, func = task.run.split(":")
            run = getattr(importlib.import_module(module), func)
            tokens_before = scorer.tokens_run
            t0 = time.perf_counter()
            path.parent.mkdir(parents=True, exist_ok=True)
            ctx.partial = partial
            output: TaskOutput = run(ctx)
            seconds = time.perf_counter() - t0
            kernels.trim_freed_memory()  # the next task's batches have other shapes: start from a trimmed heap
            record = {
                "task": name,
                "title": task.title,
                "metrics": [m.to_dict() for m in output.metrics],
                "datasets": [resolved[s].record() for s in task.sources],
                "settings": settings,
                "n_examples": output.n_examples,
                "tokens_scored": output.tokens_scored,
                "positions_run": scorer.tokens_run - tokens_before,
                "seconds": round(seconds, 3),
                "details": output.details,
                "cache_key": key,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            if output.samples:
                write_atomic(path.with_suffix(".samples.jsonl"), "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in output.samples))
            write_atomic(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            partial.unlink(missing_ok=True)
            record["cached"] = False
        task_results[name] = record
        log.info("%s: %s (%s, %.1f s)", name, report.summary(record), report.extent(record), record["seconds"])

    results = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": info,
        "tokenizer": {"n_vocab": tokenizer.n_vocab, "sha256": tok_fp},
        "settings": C.to_dict(cfg),
        "environment": {
            "gpt2": gpt2.__version__,
            "git_commit": _git_commit(),
            "command": sys.argv,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "tasks": task_results,
    }
    write_atomic(results_path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_atomic(out / "report.md", report.markdown([results]))
    log.info("wrote %s and %s", results_path, out / "report.md")
    return results


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def eval_command(cfg: C.EvalConfig) -> dict:
    """`gpt2 eval`."""
    from gpt2.tokenizer import load_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not Path(cfg.model).exists():
        raise GPT2Error(f"model {cfg.model} does not exist; pass a directory written by the project or a Hugging Face GPT-2 directory")
    try:
        from gpt2.weights import load_model
    except ImportError:
        raise GPT2Error("this installation of gpt2 has no gpt2.weights.load_model to read model directories") from None
    from gpt2.device import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cpu":
        kernels.retain_freed_memory()  # the logits' large buffers are reused, not faulted in afresh per batch
    model, own_tokenizer = load_model(cfg.model, device=device, dtype=_DTYPES[cfg.dtype])
    tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else own_tokenizer or load_tokenizer("gpt2")
    return evaluate(model, tokenizer, cfg)
