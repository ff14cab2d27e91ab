"""GPT-1's fine-tuning study at CPU scale: Table 5's ablation and Figure 2, on a small model pre-trained here.

Every step is a `gpt2` command (printed as it runs), so each result can be run
again by hand:

1. the corpus: the shared datasets' running text (LAMBADA's book passages,
   Botchan, Tiny Shakespeare, WikiText-2 valid + test, PTB valid + test, the
   CNN stories sample), GPT-2's tokenizer, `gpt2 prepare` (one document per
   paragraph, 5% held out);
2. `gpt2 train`: a 6-layer, 256-wide GPT, context 128, checkpoints along the way;
3. Figure 2 (right): `gpt2 eval --tasks sst2,cola,story-cloze,wsc273` (GPT-1's
   zero-shot heuristics) on each checkpoint;
4. Table 5: `gpt2 finetune` on SST-2, CoLA, MRPC, STS-B and Story Cloze, (a)
   from the pre-trained model with the auxiliary LM loss, (b) without it, (c)
   from random weights; the zero-shot heuristics of the final model beside;
5. Figure 2 (left): fine-tuning with only the first k pre-trained layers
   transferred, k = 0 .. 6, on SST-2 and Story Cloze.

It writes OUT/study.json, OUT/figure2.png and the tables (markdown) to stdout.
Runs already finished are not run again (delete their folders to redo them).

    python bench/study_gpt1.py --out runs/gpt1-study [--steps 4000] [--sst2-examples 16000] [--sst2-transfer-layers 0,3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("GPT2_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
TASKS = ("sst2", "cola", "mrpc", "stsb", "story-cloze")
ZERO_SHOT = ("sst2", "cola", "story-cloze", "wsc273")
MAIN_METRIC = {"sst2": "accuracy", "cola": "mcc", "mrpc": "f1", "stsb": "pearson", "story-cloze": "accuracy"}
PAPER_TABLE5 = {  # GPT-1 Table 5; Story Cloze from Table 3 (the full model only)
    "(a) pre-trained + aux LM": {"cola": 45.4, "sst2": 91.3, "mrpc": 82.3, "stsb": 82.0, "story-cloze": 86.5},
    "(b) pre-trained, no aux LM": {"cola": 47.9, "sst2": 92.0, "mrpc": 84.9, "stsb": 83.2},
    "(c) no pre-training": {"cola": 18.9, "sst2": 84.0, "mrpc": 79.4, "stsb": 30.9},
}
VARIANTS = {"(a) pre-trained + aux LM": [], "(b) pre-trained, no aux LM": ["--lm-coef", "0"], "(c) no pre-training": ["--init", "random"]}


def gpt2(*args: str, log: Path) -> None:
    """Run `gpt2 ARGS`, its output appended to `log`; stop the study if it fails."""
    command = [sys.executable, "-m", "gpt2", *args]
    print("$ gpt2 " + " ".join(shlex.quote(a) for a in args), flush=True)
    t = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ gpt2 " + " ".join(shlex.quote(a) for a in args) + "\n")
        f.flush()
        r = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "GPT2_OFFLINE": "1"})
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    if r.returncode:
        sys.exit(f"the command failed (exit {r.returncode}); see {log}")


def corpus(out: Path) -> Path:
    """The pre-training text as plain files (LAMBADA's JSON lines turned into text)."""
    folder = out / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    lambada = [json.loads(line)["text"] for line in (SHARED / "lambada" / "lambada_test.jsonl").read_text(encoding="utf-8").splitlines()]
    (folder / "lambada.txt").write_text("\n\n".join(lambada) + "\n", encoding="utf-8")
    for name, path in [
        ("botchan.txt", SHARED / "botchan" / "botchan.txt"),
        ("shakespeare.txt", SHARED / "tinyshakespeare" / "input.txt"),
        ("wikitext2-valid.txt", SHARED / "wikitext2_tokens" / "wiki.valid.tokens"),
        ("wikitext2-test.txt", SHARED / "wikitext2_tokens" / "wiki.test.tokens"),
        ("ptb-valid.txt", SHARED / "ptb" / "ptb.valid.txt"),
        ("ptb-test.txt", SHARED / "ptb" / "ptb.test.txt"),
    ]:
        (folder / name).write_bytes(path.read_bytes())
    stories = sorted((SHARED / "cnn_dailymail_sample" / "cnn_stories").glob("*.story"))
    (folder / "cnn.txt").write_text("\n\n".join(p.read_text(encoding="utf-8") for p in stories), encoding="utf-8")
    return folder


def zero_shot(results: Path) -> dict[str, float]:
    """The first metric of each task in a `gpt2 eval` results.json (the heuristic's accuracy; CoLA's MCC)."""
    data = json.loads((results / "results.json").read_text())
    return {name: record["metrics"][0]["value"] for name, record in data["tasks"].items() if record.get("metrics")}


def finetuned(run: Path, task: str) -> float:
    return json.loads((run / "metrics.json").read_text())["metrics"][MAIN_METRIC[task]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gpt1-study"))
    ap.add_argument("--steps", type=int, default=4000, help="pre-training steps (16 x 128 tokens each)")
    ap.add_argument("--checkpoints", type=int, default=12, help="checkpoints along pre-training, for Figure 2 (right)")
    ap.add_argument("--sst2-examples", type=int, default=16000, help="SST-2 training examples (of 67,349)")
    ap.add_argument("--sst2-transfer-layers", default="0,1,2,3,4,5",
                    help="the k of Figure 2 (left) on SST-2, comma-separated (Story Cloze runs every k; all six layers is run (a))")
    ap.add_argument("--threads", default="0")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    tok = str(SHARED / "gpt2_bpe")
    glue = str(SHARED / "glue")
    data_dir = {"story-cloze": str(SHARED / "story_cloze")}

    pretrain = out / "pretrain"
    if not (pretrain / "model" / "model.json").is_file():
        if not (out / "data" / "manifest.json").is_file():
            gpt2("prepare", "--input", str(corpus(out)), "--tokenizer", tok, "--out", str(out / "data"), "--text-documents", "paragraph", log=log)
        every = args.steps // args.checkpoints
        gpt2("train", "--data.dir", str(out / "data"), "--out", str(pretrain), "--resume", "--threads", args.threads,
             "--model.n-layer", "6", "--model.n-head", "4", "--model.n-embd", "256", "--model.block-size", "128",
             "--batch-size", "16", "--max-steps", str(args.steps), "--optim.lr", "1e-3", "--optim.weight-decay", "0.01",
             "--checkpoint.interval", str(every), "--checkpoint.keep-last", str(args.checkpoints + 1), "--checkpoint.keep-best", "false",
             "--eval.interval", str(every), "--eval.samples", "0", log=log)

    curve = {}
    for ckpt in sorted((pretrain / "checkpoints").glob("step_*")):
        step = int(ckpt.name.split("_")[1])
        target = out / "zeroshot" / ckpt.name
        if not (target / "results.json").is_file():
            gpt2("eval", "--model", str(ckpt), "--tokenizer", tok, "--tasks", ",".join(ZERO_SHOT), "--data-dir", str(SHARED),
                 "--out", str(target), "--threads", args.threads, log=log)
        curve[step] = zero_shot(target)

    table = {}
    for variant, flags in VARIANTS.items():
        for task in TASKS:
            run = out / "finetune" / f"{task}-{variant[1]}"
            if not (run / "metrics.json").is_file():
                limit = ["--data.max-train-examples", str(args.sst2_examples)] if task == "sst2" else []
                gpt2("finetune", "--task", task, "--model", str(pretrain), "--out", str(run), "--resume", "--threads", args.threads,
                     "--data.dir", data_dir.get(task, glue), *limit, *flags, log=log)
            table.setdefault(variant, {})[task] = finetuned(run, task)

    transfer = {}
    sweep = {"sst2": [int(k) for k in args.sst2_transfer_layers.split(",")] + [6], "story-cloze": list(range(7))}
    for task, ks in sweep.items():
        for k in ks:
            run = out / "finetune" / (f"{task}-a" if k == 6 else f"{task}-transfer{k}")
            if not (run / "metrics.json").is_file():
                limit = ["--data.max-train-examples", str(args.sst2_examples)] if task == "sst2" else []
                gpt2("finetune", "--task", task, "--model", str(pretrain), "--out", str(run), "--resume", "--threads", args.threads,
                     "--data.dir", data_dir.get(task, glue), "--transfer-layers", str(k), *limit, log=log)
            transfer.setdefault(task, {})[k] = finetuned(run, task)

    study = {"zero_shot_curve": curve, "table5": table, "transfer": transfer, "paper_table5": PAPER_TABLE5}
    (out / "study.json").write_text(json.dumps(study, indent=1) + "\n")
    plot(study, out / "figure2.png")
    print(markdown(study))


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    scratch = study["table5"].get("(c) no pre-training", {})
    for task, points in study["transfer"].items():
        ks = sorted(points, key=int)
        line, = left.plot([int(k) for k in ks], [points[k] for k in ks], "o-", label=f"{task} ({MAIN_METRIC[task]})")
        if task in scratch:
            left.axhline(scratch[task], color=line.get_color(), linestyle="--", linewidth=1, label=f"{task}, no pre-training")
    left.set_xlabel("pre-trained layers transferred")
    left.set_ylabel("evaluation split")
    left.set_title("fine-tuning with the first k layers transferred")
    left.grid(alpha=0.3)
    left.legend()
    steps = sorted(study["zero_shot_curve"], key=int)
    for task in ZERO_SHOT:
        values = [study["zero_shot_curve"][s].get(task) for s in steps]
        if any(v is not None for v in values):
            right.plot([int(s) for s in steps], values, "o-", label=task)
    right.axhline(50, color="gray", linestyle=":", linewidth=1, label="chance (accuracy)")
    right.set_xlabel("pre-training steps")
    right.set_ylabel("zero-shot heuristic (accuracy; CoLA: MCC)")
    right.set_title("zero-shot heuristics along pre-training")
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(study: dict) -> str:
    lines = ["| model | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for variant, row in study["table5"].items():
        lines.append(f"| {variant} | " + " | ".join(f"{row.get(t, float('nan')):.1f}" for t in TASKS) + " |")
        paper = PAPER_TABLE5.get(variant, {})
        lines.append(f"| GPT-1 paper {variant[:3]} | " + " | ".join(f"{paper[t]:.1f}" if t in paper else "-" for t in TASKS) + " |")
    last = max(study["zero_shot_curve"], key=int)
    zero = study["zero_shot_curve"][last]
    lines.append("| zero-shot heuristics (gpt2 eval) | " + " | ".join(f"{zero[t]:.1f}" if t in zero else "-" for t in TASKS) + " |")
    lines += ["", "| layers transferred | " + " | ".join(str(k) for k in range(7)) + " |", "|---|" + "---|" * 7]
    for task, points in study["transfer"].items():
        lines.append(f"| {task} | " + " | ".join(f"{points[k]:.1f}" if k in points else "-" for k in range(7)) + " |")
    lines += ["", "| pre-training step | " + " | ".join(ZERO_SHOT) + " |", "|---|" + "---|" * len(ZERO_SHOT)]
    for step in sorted(study["zero_shot_curve"], key=int):
        row = study["zero_shot_curve"][step]
        lines.append(f"| {step} | " + " | ".join(f"{row[t]:.1f}" if t in row else "-" for t in ZERO_SHOT) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
