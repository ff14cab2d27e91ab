"""Training: one loop for pre-training and fine-tuning.

    loop.py       the loop every kind of training runs through (Job + Loop)
    pretrain.py   `gpt2 train`: the pre-training job on token shards
    loss.py       the language-model loss from the trunk's hidden states
    optim.py      AdamW, parameter groups, schedule, clipping
    hardware.py   precision, CPU threads, the peak FLOP/s behind MFU
    metrics.py    JSON lines / CSV / TensorBoard records and the loss plot
    run_dir.py    run.json, start-or-resume decisions, git commit
"""

from gpt2.train.hardware import cpu_name, peak_tflops
from gpt2.train.loop import Job, Loop
from gpt2.train.loss import LMLoss, lm_loss
from gpt2.train.metrics import flops_per_token
from gpt2.train.optim import lr_at, parameter_groups
from gpt2.train.pretrain import Trainer, train

__all__ = ["Job", "LMLoss", "Loop", "Trainer", "cpu_name", "flops_per_token", "lm_loss", "lr_at", "parameter_groups", "peak_tflops", "train"]
