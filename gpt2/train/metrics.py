"""What a training run records: JSON lines, CSV, TensorBoard, the loss plot, and the FLOPs behind MFU.

Every record is a dict with `step` and `kind` ("train" or "eval"); rank 0
writes it to OUT/metrics.jsonl and OUT/metrics.csv and, if installed, to
TensorBoard. On resume, the records after the checkpoint's step (the part of the
run that was lost) are dropped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

from gpt2.model import GPTConfig

log = logging.getLogger(__name__)

CSV_FIELDS = ("step", "kind", "tokens", "loss", "val_loss", "val_bpb", "lr", "grad_norm", "tok_per_s", "mfu", "elapsed")


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 per weight of every matmul plus attention's 12 L C T."""
    C, L = config.n_embd, config.n_layer
    matmul_weights = L * 12 * C * C + config.vocab_size * C  # q,k,v, projection, 2 MLP layers; the output layer
    return 6 * matmul_weights + 12 * L * C * seq_len


class Metrics:
    """Every record goes to OUT/metrics.jsonl, OUT/metrics.csv and TensorBoard (rank 0 only)."""

    def __init__(self, out: Path, resume_step: int | None, tensorboard: bool, fields: tuple[str, ...] = CSV_FIELDS):
        self.out = out
        self.fields = fields
        self.jsonl = out / "metrics.jsonl"
        self.csv = out / "metrics.csv"
        self.records: list[dict] = []
        if resume_step is not None and self.jsonl.is_file():
            # keep what was logged up to the checkpoint; later records belong to the lost part of the run
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if record.get("step", 0) <= resume_step:
                    self.records.append(record)
        with open(self.jsonl, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        with open(self.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.records)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step is not None else None)
            except ImportError:
                log.warning("TensorBoard logging is off: install the `tensorboard` package (pip install 'gpt2[train]')")

    def add(self, record: dict) -> None:
        self.records.append(record)
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(record)
        if self.tb is not None:
            prefix = "train" if record["kind"] == "train" else "eval"
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)) and value is not None:
                    self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def last(self, kind: str, key: str):
        """The newest value of `key` among records of `kind`, or None."""
        return next((r[key] for r in reversed(self.records) if r.get("kind") == kind and r.get(key) is not None), None)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _moving_average(values: list[float]) -> list[float]:
    """A centred moving average over ~2% of the points (narrower at the ends), so the curve does not lag."""
    half = max(1, len(values) // 100)
    sums = [0.0]
    for value in values:
        sums.append(sums[-1] + value)
    out = []
    for i in range(len(values)):
        w = min(half, i, len(values) - 1 - i)
        out.append((sums[i + w + 1] - sums[i - w]) / (2 * w + 1))
    return out


PLOT_LABELS = {"loss": "training loss", "val_loss": "held-out loss", "axis": "cross-entropy (nats per token)"}


def plot_losses(
    records: list[dict], path: Path, title: str, tokens_per_step: int | None = None, metric: tuple[str, str] | None = None,
    train_key: str = "loss", labels: dict[str, str] = PLOT_LABELS,
) -> None:
    """Training loss (`train_key` of the train records, raw and smoothed) and held-out loss against steps (and
    tokens, on top), to a PNG; `labels` names the two curves and the axis.

    `metric` = (record key, label) adds an evaluation metric (a fine-tuning task's accuracy, say) on a
    second axis at the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r[train_key]) for r in records if r.get("kind") == "train" and r.get(train_key) is not None and math.isfinite(r[train_key])]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label=labels["loss"])
        ax.plot(steps, _moving_average(list(losses)), color="tab:blue", linewidth=1.6, label=f"{labels['loss']} (moving average)")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, losses, "o-", color="tab:orange", linewidth=1.6, markersize=4, label=labels["val_loss"])
    ax.set_xlabel("step")
    if tokens_per_step:
        top = ax.secondary_xaxis("top", functions=(lambda s: s * tokens_per_step / 1e6, lambda t: t * 1e6 / tokens_per_step))
        top.set_xlabel("tokens (millions)")
    ax.set_ylabel(labels["axis"])
    handles, labels = ax.get_legend_handles_labels()
    if metric is not None:
        key, label = metric
        points = [(r["step"], r[key]) for r in records if r.get("kind") == "eval" and r.get(key) is not None]
        if points:
            right = ax.twinx()
            steps, values = zip(*points)
            right.plot(steps, values, "s-", color="tab:green", linewidth=1.6, markersize=4, label=label)
            right.set_ylabel(label)
            more_handles, more_labels = right.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
