"""The report: Table 3 of the GPT-2 paper with our numbers beside the paper's, and Figure-1 / Figure-4 style plots.

`markdown(results)` lays out one or more `results.json` documents (one per
model) like the paper's Table 3 (zero-shot language modelling and cloze
tasks), then the other tasks with the paper's 1542M numbers, then every
metric's exact variant, dataset checksum, tokens and time. `plot(results, dir)`
draws metric against parameter count (log scale), ours as solid lines and
the paper's as dashed ones: language modelling like the paper's Figure 4,
the other tasks like its Figure 1. `gpt2 report` does both for several runs.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from gpt2.errors import GPT2Error

log = logging.getLogger(__name__)

# Parameter counts of OpenAI's released checkpoints (embeddings counted once), which the
# paper rounds to 117M / 345M / 762M / 1542M: 50257 x d + 1024 x d + L (12 d^2 + 13 d) + 2 d.
PAPER_SIZES = {
    "117M": (12, 768),
    "345M": (24, 1024),
    "762M": (36, 1280),
    "1542M": (48, 1600),
}


def released_params(n_layer: int, n_embd: int) -> int:
    return 50257 * n_embd + 1024 * n_embd + n_layer * (12 * n_embd**2 + 13 * n_embd) + 2 * n_embd


# Table 3 of the paper (zero-shot), as EVAL_SPEC.md lists it: column -> (task, metric id, unit).
TABLE3 = [
    ("LAMBADA (PPL)", "lambada", "ppl"),
    ("LAMBADA (ACC)", "lambada", "acc"),
    ("CBT-CN (ACC)", "cbt-cn", "acc"),
    ("CBT-NE (ACC)", "cbt-ne", "acc"),
    ("WikiText2 (PPL)", "wikitext2", "ppl"),
    ("PTB (PPL)", "ptb", "ppl"),
    ("enwik8 (BPB)", "enwik8", "bpb"),
    ("text8 (BPC)", "text8", "bpc"),
    ("WikiText103 (PPL)", "wikitext103", "ppl"),
    ("1BW (PPL)", "1bw", "ppl"),
]
# as printed in the paper (e.g. 83.4, 37.50 and 44.575), for the report; floats for the plots
PAPER_TABLE3_PRINTED = {
    "117M": "35.13 45.99 87.65 83.4 29.41 65.85 1.16 1.17 37.50 75.20".split(),
    "345M": "15.60 55.48 92.35 87.1 22.76 47.33 1.01 1.06 26.37 55.72".split(),
    "762M": "10.87 60.12 93.45 88.0 19.93 40.31 0.97 1.02 22.05 44.575".split(),
    "1542M": "8.63 63.24 93.30 89.05 18.34 35.76 0.93 0.98 17.48 42.16".split(),
}
PAPER_TABLE3 = {size: [float(v) for v in row] for size, row in PAPER_TABLE3_PRINTED.items()}
# Other results of the paper's 1542M model (sections 3.3-3.8): (task, metric id) -> value.
PAPER_1542M = {
    ("wsc273", "acc-partial"): 70.70,
    ("coqa", "f1"): 55.0,
    ("cnndm", "rouge1"): 29.34,
    ("cnndm", "rouge2"): 8.27,
    ("cnndm", "rougeL"): 26.58,
    ("wmt14-en-fr", "bleu"): 5.0,
    ("wmt14-fr-en", "bleu"): 11.5,
    ("nq", "em"): 4.1,
}
# Published re-evaluations of the released 124M weights (LAMBADA scoring variants).
REEVALUATED_124M = {("lambada", "acc"): 32.6, ("lambada", "ppl"): 40.06, ("lambada", "acc-last-token"): 46.7}


# ----------------------------------------------------------------------------
# reading results


def load_results(path: Path) -> dict:
    """A results.json, or the output directory of `gpt2 eval` that holds one."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GPT2Error(f"{file} does not exist; pass results.json files or `gpt2 eval` output directories") from None
    except json.JSONDecodeError as e:
        raise GPT2Error(f"{file} is not valid JSON ({e})") from None
    from gpt2.evaluate.run import FORMAT, FORMAT_VERSION

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GPT2Error(f"{file} is not a results file written by `gpt2 eval`")
    if data.get("version") != FORMAT_VERSION:
        raise GPT2Error(f"{file} has results format version {data.get('version')}; this release reads version {FORMAT_VERSION}")
    problem = _malformed(data)
    if problem:
        raise GPT2Error(f"{file} is damaged ({problem}); run `gpt2 eval` again to rewrite it")
    return data


def _lacks(obj, keys: str) -> str | None:
    """The first of the space-separated `keys` that `obj` (a dict) lacks; the first key if it is no dict."""
    return next((k for k in keys.split() if k not in obj), None) if isinstance(obj, dict) else keys.split()[0]


def _malformed(data: dict) -> str | None:
    """What is missing from the structure of a results file that the report reads, or None."""

    for where, obj, keys in (
        ("results", data, "model tasks environment created"),
        ("model", data.get("model"), "name path n_params dtype device sha256"),
        ("environment", data.get("environment"), "gpt2 torch"),
    ):
        if missing := _lacks(obj, keys):
            return f"{where} has no {missing!r}"
    if not isinstance(data["model"]["n_params"], int) or not isinstance(data["tasks"], dict):
        return "the model's size or the table of tasks is not what gpt2 eval writes"
    return next((problem for name, record in data["tasks"].items() if (problem := malformed_task(name, record))), None)


def malformed_task(name: str, record) -> str | None:
    """What is missing from one task's record (results.json, or its cache file), or None."""

    if missing := _lacks(record, "title metrics datasets n_examples tokens_scored seconds"):
        return f"task {name!r} has no {missing!r}"
    if not isinstance(record["metrics"], list) or any(_lacks(m, "id name value unit variant") for m in record["metrics"]):
        return f"a metric of task {name!r} is incomplete"
    if not isinstance(record["datasets"], list) or any(_lacks(d, "source sha256") for d in record["datasets"]):
        return f"a dataset of task {name!r} is incomplete"
    return None


def metric(results: dict, task: str, metric_id: str) -> dict | None:
    record = results.get("tasks", {}).get(task)
    if not record:
        return None
    return next((m for m in record["metrics"] if m["id"] == metric_id), None)


def _lm_metric(results: dict, task: str, metric_id: str) -> dict | None:
    """The language-modelling variant listed first in the run's settings (disjoint unless only sliding ran)."""
    windows = results.get("settings", {}).get("windows", ["disjoint"])
    ids = [metric_id if w == "disjoint" else metric_id + "-sliding" for w in windows]
    return next((m for i in ids if (m := metric(results, task, i))), None)


def summary(record: dict) -> str:
    """One line: the task's metrics."""
    return ", ".join(f"{m['id']} {_fmt(m['value'])}{'%' if m['unit'] == '%' else ''}" for m in record["metrics"])


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def params(n: int) -> str:
    """A parameter count in three significant figures: 168K, 4.2M, 124M, 1.56B."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            x = n / scale
            return f"{round(x, max(0, 2 - int(math.log10(x)))):g}{unit}"
    return str(n)


def _limit(results: dict) -> int | None:
    return results.get("settings", {}).get("limit")


def labels(runs: list[dict]) -> list[str]:
    """A name per run that tells the models apart: the folder's name, with as many parent folders as it takes
    to make it unique (two exported models are both `model`), then the weights' hash if even the paths agree;
    with the parameter count and, for a partial run, its --limit."""
    paths = [Path(r["model"].get("path") or r["model"]["name"]).parts or (r["model"]["name"],) for r in runs]
    names = [r["model"]["name"] or "/".join(p[-1:]) for r, p in zip(runs, paths)]
    depth = [1] * len(runs)
    while True:
        clash = [i for i, name in enumerate(names) if names.count(name) > 1 and depth[i] < len(paths[i])]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
            names[i] = "/".join(paths[i][-depth[i]:])
    names = [f"{name} {r['model']['sha256'][:8]}" if names.count(name) > 1 else name for name, r in zip(names, runs)]
    return [
        f"{name} ({params(r['model']['n_params'])})" + (f", --limit {_limit(r)}" if _limit(r) else "")
        for name, r in zip(names, runs)
    ]


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def extent(record: dict) -> str:
    """How much of a task was evaluated, in its units: '12 examples'; for language modelling the documents and
    the original words / bytes / characters the metric is divided by ('1 document, 2,103 words')."""
    details = record.get("details", {})
    for unit, noun in (("words", "word"), ("bytes", "byte"), ("chars", "character")):
        if isinstance(details.get(f"original_{unit}"), int):
            return f"{_count(record['n_examples'], 'document')}, {_count(details[f'original_{unit}'], noun)}"
    return _count(record["n_examples"], "example")


# ----------------------------------------------------------------------------
# Markdown


def markdown(runs: list[dict]) -> str:
    names = labels(runs)
    lines = ["# Zero-shot results", ""]
    lines += [
        "Laid out like Table 3 of the GPT-2 paper (Radford et al. 2019). Rows marked *paper* are the paper's numbers; the",
        "others are ours. Perplexities are per original word (whitespace-separated items of the original test text), enwik8",
        "is in bits per byte and text8 in bits per character; accuracies are in %. — means not evaluated. The exact",
        "variant of every number is listed below the tables. A model marked `--limit N` was evaluated on the first N",
        "examples of each task (the first N lines of a language-modelling text): a partial run, not comparable with the paper.",
        "",
    ]
    head = "| Model | " + " | ".join(c for c, _, _ in TABLE3) + " |"
    lines += [head, "|" + "---|" * (len(TABLE3) + 1)]
    for size, printed in PAPER_TABLE3_PRINTED.items():
        lines.append(f"| {size} *paper* | " + " | ".join(printed) + " |")
    for r, name in zip(runs, names):
        cells = []
        for _, task, mid in TABLE3:
            m = _lm_metric(r, task, mid) if mid in ("ppl", "bpb", "bpc") and task != "lambada" else metric(r, task, mid)
            cells.append(_fmt(m["value"]) if m else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")

    # LAMBADA's scoring variants, with the published re-evaluations of the released 124M model
    if any(metric(r, "lambada", "acc") for r in runs):
        lines += ["## LAMBADA scoring variants", "", "| Model | whole word (ACC) | last token (ACC) | stop-word filter (ACC) | PPL |", "|---|---|---|---|---|"]
        lines.append("| 1542M *paper* | — | — | 63.24 | 8.63 |")
        lines.append(
            f"| 124M released weights, public re-evaluation | {_fmt(REEVALUATED_124M[('lambada', 'acc')])} | "
            f"~{_fmt(REEVALUATED_124M[('lambada', 'acc-last-token')])} | — | {_fmt(REEVALUATED_124M[('lambada', 'ppl')])} |"
        )
        for r, name in zip(runs, names):
            vals = [metric(r, "lambada", i) for i in ("acc", "acc-last-token", "acc-stopword-filter", "ppl")]
            lines.append(f"| {name} | " + " | ".join(_fmt(v["value"]) if v else "—" for v in vals) + " |")
        lines.append("")

    # everything else, next to the paper's 1542M numbers where it gives one
    table3_keys = {(t, i) for _, t, i in TABLE3}
    rows: dict[tuple[str, str], dict] = {}
    for r in runs:
        for task, record in r.get("tasks", {}).items():
            for m in record["metrics"]:
                if (task, m["id"]) in table3_keys or task == "lambada" or m["id"].startswith("token-ppl"):
                    continue
                rows.setdefault((task, m["id"]), {"title": record["title"], "name": m["name"], "unit": m["unit"]})
    if rows:
        lines += ["## Other tasks and variants", ""]
        lines.append("| Task | Metric | " + " | ".join(names) + " | 1542M *paper* |")
        lines.append("|" + "---|" * (len(runs) + 3))
        for (task, mid), row in rows.items():
            values = [metric(r, task, mid) for r in runs]
            paper = PAPER_1542M.get((task, mid))
            lines.append(
                f"| {row['title']} | {mid} ({_cell(row['unit'])}) | " + " | ".join(_fmt(v["value"]) if v else "—" for v in values)
                + f" | {_fmt(paper) if paper is not None else '—'} |"
            )
        lines.append("")

    # how every number was made
    lines += ["## Variants, data and cost", ""]
    for r, name in zip(runs, names):
        m = r["model"]
        lines += [
            f"### {name}",
            "",
            f"Model `{m['path']}`: {m['n_params']:,} parameters, {m['dtype']} on {m['device']}, weights sha256 `{m['sha256'][:16]}…`; "
            f"gpt2 {r['environment']['gpt2']} (commit {str(r['environment'].get('git_commit') or 'unknown')[:12]}), "
            f"torch {r['environment']['torch']}, {r['created']}.",
            "",
            "| Task | Metric | Value | Variant |",
            "|---|---|---|---|",
        ]
        tasks = r.get("tasks", {})
        for record in tasks.values():
            for m_ in record["metrics"]:
                lines.append(f"| {record['title']} | {m_['id']} | {_fmt(m_['value'])} {_cell(m_['unit'])} | {_cell(m_['variant'])} |")
        lines += [
            "",
            "| Task | Evaluated | Tokens scored | Positions run | Time (s) | Dataset (sha256) | Details |",
            "|---|---|---|---|---|---|---|",
        ]
        for record in tasks.values():
            data = ", ".join(f"{d['source']} `{d['sha256'][:16]}…`" for d in record["datasets"])
            cached = " (cached)" if record.get("cached") else ""
            details = ", ".join(f"{k} {_fmt(v) if isinstance(v, float) else f'{v:,}' if isinstance(v, int) else v}"
                                for k, v in record.get("details", {}).items() if isinstance(v, (int, float, str)))
            lines.append(
                f"| {record['title']} | {extent(record)} | {record['tokens_scored']:,} | {record.get('positions_run', 0):,} | "
                f"{record['seconds']:.1f}{cached} | {data} | {_cell(details)} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text that cannot break a Markdown table row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------
# plots

PLOT_FILES = ("language_modeling.png", "zero_shot_tasks.png")  # Figure 4 and Figure 1 style

# Figure 4 style: language modelling against size. (task, metric id, axis label)
LM_PANELS = [
    ("wikitext2", "ppl", "WikiText-2 perplexity"),
    ("ptb", "ppl", "PTB perplexity"),
    ("wikitext103", "ppl", "WikiText-103 perplexity"),
    ("1bw", "ppl", "1BW perplexity"),
    ("lambada", "ppl", "LAMBADA perplexity"),
    ("enwik8", "bpb", "enwik8 bits per byte"),
    ("text8", "bpc", "text8 bits per character"),
]
# Figure 1 style: the zero-shot tasks against size. (title, [(task, metric id, legend)], axis label)
TASK_PANELS = [
    ("Reading comprehension", [("coqa", "f1", "CoQA")], "F1"),
    ("Translation", [("wmt14-fr-en", "bleu", "fr→en"), ("wmt14-en-fr", "bleu", "en→fr")], "BLEU"),
    ("Summarization", [("cnndm", "rouge-avg", "CNN/DM TL;DR:")], "ROUGE (mean of 1, 2, L)"),
    ("Question answering", [("nq", "em", "Natural Questions")], "accuracy (%)"),
    ("LAMBADA", [("lambada", "acc", "whole word"), ("lambada", "acc-stopword-filter", "stop-word filter")], "accuracy (%)"),
    ("Cloze and Winograd", [("cbt-cn", "acc", "CBT-CN"), ("cbt-ne", "acc", "CBT-NE"), ("wsc273", "acc-partial", "WSC273")], "accuracy (%)"),
]


def _value(r: dict, task: str, mid: str) -> float | None:
    if mid == "rouge-avg":
        parts = [metric(r, task, i) for i in ("rouge1", "rouge2", "rougeL")]
        return sum(p["value"] for p in parts) / 3 if all(parts) else None
    m = _lm_metric(r, task, mid) if mid in ("ppl", "bpb", "bpc") and task != "lambada" else metric(r, task, mid)
    return m["value"] if m else None


def _paper_value(task: str, mid: str, size: str) -> float | None:
    for (col, t, i), v in zip(TABLE3, PAPER_TABLE3[size]):
        if (t, i) == (task, mid):
            return v
    if size == "1542M":
        if mid == "rouge-avg":
            return sum(PAPER_1542M[(task, i)] for i in ("rouge1", "rouge2", "rougeL")) / 3
        return PAPER_1542M.get((task, mid))
    return None


def _params_label(n: float, _pos=None) -> str:
    return f"{n / 1e9:g}B" if n >= 1e9 else f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}K"


def _panel(ax, runs: list[dict], series: list[tuple[str, str, str]], ylabel: str, title: str) -> bool:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    drawn = False
    colors = ["C0", "C1", "C2", "C3"]
    groups: dict[int | None, list[dict]] = {}  # a line joins only runs evaluated on the same data: one per --limit
    for r in sorted(runs, key=lambda r: (_limit(r) is not None, _limit(r) or 0)):
        groups.setdefault(_limit(r), []).append(r)
    for k, (task, mid, legend) in enumerate(series):
        label = f"{legend} " if legend else ""
        for g, (limit, members) in enumerate(groups.items()):
            pts = sorted((r["model"]["n_params"], v) for r in members if (v := _value(r, task, mid)) is not None)
            if pts:
                ours = "(ours)" if limit is None else f"(ours, --limit {limit})"
                ax.plot(*zip(*pts), ("o-", "^:", "v-.", "D:")[g % 4], color=colors[k % 4], label=f"{label}{ours}")
                drawn = True
        paper = [(released_params(*PAPER_SIZES[s]), v) for s in PAPER_SIZES if (v := _paper_value(task, mid, s)) is not None]
        if paper:
            ax.plot(*zip(*paper), "s--", color=colors[k % 4], alpha=0.5, label=f"{label}(paper)")
            drawn = True
    ax.set_xscale("log")
    if "perplexity" in ylabel:
        ax.set_yscale("log")  # perplexities of models of different quality span orders of magnitude
    ax.xaxis.set_major_formatter(FuncFormatter(_params_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    return drawn


def plot(runs: list[dict], out: Path) -> list[Path]:
    """Write language_modeling.png (Figure 4 style) and zero_shot_tasks.png (Figure 1 style); return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, panels, title in [
        (PLOT_FILES[0], [(t, [(t, i, "")], label, label) for t, i, label in LM_PANELS], "Zero-shot language modelling against model size"),
        (PLOT_FILES[1], [(p[0], p[1], p[2], p[0]) for p in TASK_PANELS], "Zero-shot task performance against model size"),
    ]:
        cols = 4 if len(panels) > 6 else 3
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        for ax, (_, series, ylabel, panel_title) in zip(axes.flat, panels):
            series = [(t, i, leg or "") for t, i, leg in series]
            _panel(ax, runs, series, ylabel, panel_title)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)
    return written


# Figure 4 of the paper: perplexity on the training data and on held-out data against model size
TRAIN_HELD_OUT_PLOT = "train_vs_heldout.png"


def training_run(model_path: str) -> Path | None:
    """The `gpt2 train` run directory an evaluated model came from (the folder holding metrics.jsonl: the
    model's own folder, or up to three levels above it, e.g. runs/NAME/checkpoints/step_N), or None."""
    path = Path(model_path)
    for folder in [path, *list(path.parents)[:3]]:
        if (folder / "metrics.jsonl").is_file():
            return folder
    return None


def train_and_held_out_loss(run: Path) -> tuple[float, float, int] | None:
    """(mean training loss over the last evaluation interval, held-out loss of the last evaluation, its step)
    from a training run's metrics.jsonl; None if the run has no evaluation."""
    records = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
    evals = [r for r in records if r.get("kind") == "eval" and isinstance(r.get("val_loss"), (int, float))]
    if not evals:
        return None
    last = evals[-1]["step"]
    before = evals[-2]["step"] if len(evals) > 1 else 0
    train = [r["loss"] for r in records if r.get("kind") == "train" and before < r.get("step", -1) <= last
             and isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if not train:
        return None
    return sum(train) / len(train), evals[-1]["val_loss"], last


def plot_train_vs_held_out(runs: list[dict], out: Path) -> list[Path]:
    """Figure 4 style: training and held-out perplexity (per BPE token) against parameters, for the evaluated models
    that come from a `gpt2 train` run; returns [the PNG], or [] if none does."""
    points = []
    for r in runs:
        run = training_run(r["model"]["path"])
        losses = train_and_held_out_loss(run) if run is not None else None
        if losses is not None:
            points.append((r["model"]["n_params"], math.exp(losses[0]), math.exp(losses[1])))
    if not points:
        log.info("no evaluated model comes from a `gpt2 train` run folder with evaluations: no %s", TRAIN_HELD_OUT_PLOT)
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    points.sort()
    sizes, train, held_out = zip(*points)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(sizes, train, "o-", color="C0", label="training data (mean loss of the last evaluation interval)")
    ax.plot(sizes, held_out, "s-", color="C1", label="held-out data (last evaluation)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_params_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters")
    ax.set_ylabel("perplexity per BPE token")
    ax.set_title("Training and held-out perplexity against model size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / TRAIN_HELD_OUT_PLOT, dpi=120)
    plt.close(fig)
    return [out / TRAIN_HELD_OUT_PLOT]


def report_command(cfg) -> list[Path]:
    """`gpt2 report`: report.md and the plots for several `gpt2 eval` runs, smallest model first."""
    runs = sorted((load_results(p) for p in cfg.results), key=lambda r: r["model"]["n_params"])
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise GPT2Error(f"--out {out} is a file; give a directory")
    existing = [f.name for f in (out / "report.md", *(out / name for name in PLOT_FILES)) if f.exists()]
    if existing and not cfg.force:
        raise GPT2Error(f"--out {out} already holds {', '.join(existing)}; pass --force to replace them, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(runs), encoding="utf-8")
    files = [out / "report.md", *plot(runs, out), *plot_train_vs_held_out(runs, out)]
    log.info("wrote %s", ", ".join(str(f) for f in files))
    return files
