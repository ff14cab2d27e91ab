"""Fine-tuning throughput and memory: our fine-tuning step against transformers' GPT2DoubleHeadsModel.

GPT-2 124M shape with the three added tokens (vocabulary 50,260), one process,
GPT-1's loss (the task loss + 0.5 x the language-model loss on the same
inputs), AdamW (fused, lr 6.25e-5, weight decay 0.01), gradient clipping at
1.0, the dtype `gpt2 finetune` picks here (bfloat16 autocast on CPUs with
AVX512-BF16 / AMX, else float32). Real batches, the same for both: 32
examples of SST-2's dev set (one sequence each, `⟨s⟩ text ⟨e⟩`) and 32 of
Story Cloze's validation set (two sequences each, one per ending), through
our input transform, padded to the longest in the batch.

- ours: what `gpt2 finetune` runs (gpt2.finetune.heads.TaskModel: the trunk,
  a head on ⟨e⟩, the chunked language-model loss over real tokens only,
  clipping folded into the fused AdamW);
- transformers: GPT2DoubleHeadsModel in a plain PyTorch loop,
  `mc_loss + 0.5 * loss` with padding labelled -100, clip_grad_norm_.
  For SST-2 its multiple-choice head scores the one sequence (transformers
  fixes one output per choice; the head is a negligible part of the step).

Steps alternate between the two (the same machine load for both); the
figure is the median step time after warm-up. Peak memory is each one's
peak resident set in a process of its own (model, optimizer, activations).
Both run with glibc's default heap, as `gpt2 finetune` does (batches of
varying length would fragment a heap that keeps freed memory).

    python bench/bench_finetune.py [--steps 8] [--tasks sst2 story-cloze]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gpt2.finetune import heads  # noqa: E402
from gpt2.finetune.tasks import TASKS, load_split  # noqa: E402
from gpt2.finetune.transforms import SPECIAL_TOKENS, Transform, collate  # noqa: E402
from gpt2.model import GPT, GPTConfig  # noqa: E402
from gpt2.tokenizer import Tokenizer  # noqa: E402
from gpt2.train.hardware import cpu_name, training_dtype  # noqa: E402
from gpt2.train.optim import clip_in_optimizer, parameter_groups  # noqa: E402

SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
DATA = {"sst2": SHARED / "glue", "story-cloze": SHARED / "story_cloze"}
VOCAB = 50260


def batches(task: str, n: int, size: int = 32) -> list[dict]:
    tok = Tokenizer.load(SHARED / "gpt2_bpe")
    tok.add_special_tokens(SPECIAL_TOKENS)
    spec = TASKS[task]
    examples, _ = load_split(spec, spec.eval if task == "sst2" else spec.train, DATA[task])
    transform = Transform(spec, tok, 512)
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        idx = torch.randperm(len(examples), generator=g)[:size].tolist()
        out.append(collate([transform.encode(examples[i]) for i in idx], tok.eot_token, regression=False))
    return out


def ours(task: str):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=VOCAB, pad_vocab_to=64, dropout=0.1))
    head = heads.Choose(768) if task != "sst2" else heads.Classify(768, 2)
    model = heads.TaskModel(gpt, head, lm_coef=0.5).train()
    opt = torch.optim.AdamW(parameter_groups(model, 0.01), lr=6.25e-5, betas=(0.9, 0.999), fused=True)

    def step(b: dict, autocast) -> float:
        with autocast:
            loss, _ = model(b["ids"], b["extract"], b["lm_targets"], b["labels"])
        loss.backward()
        clip_in_optimizer(opt, model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def transformers_double_heads(task: str):
    from transformers import GPT2Config, GPT2DoubleHeadsModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    config._attn_implementation = "sdpa"
    model = GPT2DoubleHeadsModel(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, betas=(0.9, 0.999), weight_decay=0.01, fused=True)

    def step(b: dict, autocast) -> float:
        B, n = b["extract"].shape
        ids = b["ids"].view(B, n, -1)
        lm_labels = torch.where(torch.arange(ids.shape[-1]) <= b["extract"].unsqueeze(-1), ids, -100)
        mc_labels = b["labels"] if n > 1 else torch.zeros(B, dtype=torch.long)
        with autocast:
            out = model(ids, mc_token_ids=b["extract"], labels=lm_labels, mc_labels=mc_labels)
            loss = out.mc_loss + 0.5 * out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


CONTENDERS = {"ours": ours, "transformers": transformers_double_heads}


def peak_memory(task: str, name: str, steps: int, threads: int) -> float:
    """GiB: the peak resident set of a process that builds `name` and runs `steps` steps on `threads` threads
    (the thread count matters: oneDNN keeps scratch memory for each batch shape and thread)."""
    command = [sys.executable, __file__, "--memory-of", name, "--tasks", task, "--steps", str(steps), "--threads", str(threads)]
    r = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps of each (after 2 warm-up steps)")
    ap.add_argument("--tasks", nargs="+", default=["sst2", "story-cloze"])
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = training_dtype("auto", torch.device("cpu"))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    if args.memory_of:

        step = CONTENDERS[args.memory_of](args.tasks[0])
        for b in batches(args.tasks[0], args.steps):
            step(b, autocast)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        return
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {str(dtype).removeprefix('torch.')}")
    results = {}
    for task in args.tasks:
        data = batches(task, args.steps + 2)
        steps = {name: make(task) for name, make in CONTENDERS.items()}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for i, b in enumerate(data):
            for name, step in steps.items():
                t = time.perf_counter()
                step(b, autocast)
                if i >= 2:
                    times[name].append(time.perf_counter() - t)
        del steps
        tokens = sum(b["ids"].numel() for b in data[2:]) / len(data[2:])
        median = {name: statistics.median(v) for name, v in times.items()}
        memory = {name: peak_memory(task, name, 3, torch.get_num_threads()) for name in CONTENDERS}
        n_seq = data[0]["ids"].shape[0]
        print(f"\n{task}: 32 examples per step ({n_seq} sequences, {tokens:,.0f} padded tokens on average)")
        for name in CONTENDERS:
            print(f"  {name:13s} {1e3 * median[name]:7.0f} ms per step (best {1e3 * min(times[name]):.0f}), "
                  f"{32 / median[name]:6.1f} examples/s, peak memory {memory[name]:.2f} GiB")
        ratio = median["transformers"] / median["ours"]
        print(f"  ours / transformers: {ratio:.2f}x examples/s, {memory['ours'] / memory['transformers']:.2f}x memory")
        results[task] = {"median_s": median, "peak_gib": memory, "ratio": ratio}
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
