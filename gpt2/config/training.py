"""Settings of the commands that make token shards and train: prepare, train, finetune (+ predict)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt2.config.core import check_seed, opt
from gpt2.errors import ConfigError


# ---- data and training --------------------------------------------------------


@dataclass
class PrepareConfig:
    """`gpt2 prepare`: text files -> documents -> uint16 token shards + manifest.json, with a held-out split."""

    input: list[Path] = opt(help="text (.txt, .text, .md), JSON-lines (.jsonl) files, optionally compressed (.zst, .gz, .xz, .bz2), or directories of them")
    out: Path = opt(help="directory for the shards, manifest.json and a copy of the tokenizer")
    tokenizer: str = opt("gpt2", "tokenizer directory, or 'gpt2' for OpenAI's GPT-2 tokenizer")
    val_fraction: float = opt(0.05, "fraction of documents held out for evaluation (the paper held out 5% of WebText)")
    seed: int = opt(1337, "chooses which documents are held out")
    text_documents: Literal["file", "paragraph", "line"] = opt(
        "file", "what one document is in a text file: the whole file, a paragraph (blank-line separated) or a line"
    )
    jsonl_field: str = opt("text", "the field of each JSON line that holds the document")
    id_field: str | None = opt(None, "a field of each JSON line that identifies the document (e.g. url): the held-out "
                                     "split hashes it instead of the text")
    shard_tokens: int = opt(100_000_000, "tokens per shard file (2 bytes each)")
    workers: int = opt(0, "threads that encode text (0: one per CPU core)")
    force: bool = opt(False, "replace the dataset in --out, a different one or the same (to rebuild damaged shards)")
    decontaminate: list[str] = opt([], "evaluation tasks or groups whose text is cut out of the documents first (GPT-3's rule, "
                                       "as `gpt2 overlap decontaminate` without its document-frequency exemption)")
    decontaminate_n: int = opt(13, "words per n-gram of --decontaminate (GPT-3: 13)")
    decontaminate_data_dir: Path | None = opt(None, "folder of local copies of the --decontaminate datasets, as for `gpt2 eval --data-dir`")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        self.decontaminate = [v.strip() for item in self.decontaminate for v in str(item).split(",") if v.strip()]
        if not 1 <= self.decontaminate_n <= 64:
            raise ConfigError(f"--decontaminate-n must be between 1 and 64, got {self.decontaminate_n}")
        if not self.input:
            raise ConfigError("--input needs at least one file or directory")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens < 1024:
            raise ConfigError(f"--shard-tokens must be at least 1024, got {self.shard_tokens}")
        if self.workers < 0:
            raise ConfigError("--workers must be 0 (all cores) or a positive number")
        if not self.jsonl_field:
            raise ConfigError("--jsonl-field must not be empty")
        if self.id_field == "":
            raise ConfigError("--id-field must not be empty; leave it out to hash each document's text")


@dataclass
class TrainModel:
    """The network (gpt2.model.GPTConfig); unset sizes come from `preset`."""

    preset: str = opt("gpt2", "starting shape: gpt2 (124M), gpt2-medium (355M), gpt2-large (774M), gpt2-xl (1558M)")
    n_layer: int | None = opt(None, "Transformer blocks (default: the preset's)")
    n_head: int | None = opt(None, "attention heads (default: the preset's)")
    n_embd: int | None = opt(None, "width of the residual stream (default: the preset's)")
    block_size: int = opt(1024, "context length in tokens (the paper: 1024)")
    vocab_size: int | None = opt(None, "vocabulary size (default: the dataset's tokenizer)")
    dropout: float = opt(0.0, "dropout on embeddings, attention and residual branches")
    bias: bool = opt(True, "biases in Linear layers and LayerNorms, as in GPT-2")
    pad_vocab_to: int = opt(64, "round the embedding matrix up to a multiple of this for faster matmuls (same results)")

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "vocab_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"model.{name} must be positive, got {value}")
        if self.block_size < 1 or self.pad_vocab_to < 1:
            raise ConfigError("model.block_size and model.pad_vocab_to must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainData:
    """The token shards to learn from."""

    dir: Path | None = opt(None, "a dataset directory written by `gpt2 prepare` (required)")


@dataclass
class TrainOptim:
    """AdamW, linear warm-up then cosine decay (GPT-1 section 4.1; GPT-3 Table 2.1 for the values)."""

    lr: float = opt(6e-4, "peak learning rate, reached after the warm-up")
    schedule: Literal["cosine", "linear"] = opt("cosine", "decay after the warm-up: a cosine (pre-training) or a straight line (GPT-1's fine-tuning)")
    final_lr_fraction: float = opt(0.1, "the decay ends at this fraction of lr, at the last step")
    warmup_steps: int | None = opt(None, "steps of linear warm-up from 0 to lr (default: warmup_fraction of the run if set, "
                                         "else 700 steps, at most a tenth of the run)")
    warmup_fraction: float | None = opt(None, "warm-up as a fraction of the run's steps (used when warmup_steps is not set)")
    weight_decay: float = opt(0.1, "decoupled weight decay, applied to matrices only (GPT-1: 0.01)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    eps: float = opt(1e-8, "AdamW epsilon")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0: no clipping)")
    fused: bool = opt(True, "use PyTorch's fused AdamW kernel (CUDA and CPU)")

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError(f"optim.final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be 0 or more, got {self.warmup_steps}")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction <= 1.0:
            raise ConfigError(f"optim.warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ConfigError("optim.weight_decay and optim.grad_clip must be 0 or more, optim.eps positive")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class TrainEval:
    """Held-out loss, bits per byte and samples."""

    interval: int = opt(250, "evaluate every this many steps (0: only at the end)")
    max_tokens: int = opt(1_048_576, "held-out tokens per evaluation (0: the whole held-out split)")
    batch_size: int | None = opt(None, "sequences per evaluation batch (default: the training batch_size)")
    samples: int = opt(2, "samples to print at each evaluation (0: none)")
    sample_tokens: int = opt(64, "tokens per sample")
    prompt: str = opt("", "text each sample starts from (empty: the start of a document)")
    temperature: float = opt(0.8, "sampling temperature")
    top_k: int | None = opt(200, "sample among the k most likely tokens (none: all)")

    def __post_init__(self) -> None:
        if min(self.interval, self.max_tokens, self.samples) < 0 or self.sample_tokens < 1:
            raise ConfigError("eval.interval, eval.max_tokens and eval.samples must be 0 or more, eval.sample_tokens positive")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be positive, got {self.batch_size}")
        if self.temperature < 0 or (self.top_k is not None and self.top_k < 1):
            raise ConfigError("eval.temperature must be 0 or more and eval.top_k positive")


@dataclass
class TrainCheckpoint:
    """Checkpoints: atomic, the last `keep_last` plus the best by held-out loss."""

    interval: int = opt(1000, "save every this many steps (0: only at the end)")
    keep_last: int = opt(3, "checkpoints to keep, newest first (the best one is kept as well)")
    keep_best: bool = opt(True, "also keep the checkpoint with the lowest held-out loss")

    def __post_init__(self) -> None:
        if self.interval < 0 or self.keep_last < 1:
            raise ConfigError("checkpoint.interval must be 0 or more and checkpoint.keep_last at least 1")


@dataclass
class TrainLog:
    """Console, CSV/JSONL, TensorBoard and the loss plot."""

    interval: int = opt(10, "log the training loss every this many steps")
    tensorboard: bool = opt(True, "write TensorBoard events to OUT/tensorboard (needs the `tensorboard` package)")
    plot: bool = opt(True, "draw OUT/loss.png at each evaluation and at the end")
    peak_tflops: float | None = opt(None, "the device's peak TFLOP/s for MFU (default: known for GPUs, measured on CPUs)")

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ConfigError(f"log.interval must be positive, got {self.interval}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"log.peak_tflops must be positive, got {self.peak_tflops}")


@dataclass
class TrainConfig:
    """`gpt2 train`: pre-train a GPT on token shards (one process, or torchrun with DDP / FSDP2)."""

    out: Path = opt(Path("runs/train"), "run directory: config, metrics, checkpoints, plot and the final model")
    max_steps: int = opt(1000, "optimizer steps to train for")
    batch_size: int = opt(8, "sequences per forward pass on each process (the micro-batch)")
    global_batch_tokens: int = opt(
        0, "tokens per optimizer step across all processes, reached by gradient accumulation (0: one micro-batch per process)"
    )
    device: str = opt("auto", "cpu, cuda, cuda:N (auto: the local GPU under torchrun, else cuda if present, else cpu)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt(
        "auto", "compute precision (auto: bfloat16 where the hardware has it, float16 + loss scaling on older GPUs, else float32)"
    )
    compile: bool = opt(False, "compile the model with torch.compile")
    parallel: Literal["ddp", "fsdp"] = opt("ddp", "under torchrun: replicate the model (ddp) or shard it per block (fsdp, FSDP2)")
    seed: int = opt(1337, "seeds the initial weights, the data order and dropout")
    resume: bool = opt(False, "continue from the newest checkpoint in OUT (start afresh if there is none)")
    threads: int = opt(0, "CPU threads per process (0: the cores no other process is busy with, measured at start; "
                          "give a number for runs that must resume bit for bit)")
    max_nonfinite: int = opt(3, "stop after this many steps in a row with a NaN or infinite loss")
    model: TrainModel = opt(factory=TrainModel)
    data: TrainData = opt(factory=TrainData)
    optim: TrainOptim = opt(factory=TrainOptim)
    eval: TrainEval = opt(factory=TrainEval)
    checkpoint: TrainCheckpoint = opt(factory=TrainCheckpoint)
    log: TrainLog = opt(factory=TrainLog)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.data.dir is None:
            raise ConfigError("missing required setting --data.dir (a directory written by `gpt2 prepare`)")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ConfigError("max_steps and batch_size must be positive")
        if self.global_batch_tokens < 0:
            raise ConfigError(f"global_batch_tokens must be 0 or more, got {self.global_batch_tokens}")
        if self.global_batch_tokens and self.global_batch_tokens % (self.batch_size * self.model.block_size):
            raise ConfigError(
                f"global_batch_tokens ({self.global_batch_tokens:,}) must be a multiple of batch_size x model.block_size "
                f"({self.batch_size} x {self.model.block_size} = {self.batch_size * self.model.block_size:,})"
            )
        if self.optim.warmup_steps is not None and self.optim.warmup_steps > self.max_steps:
            raise ConfigError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) is longer than max_steps ({self.max_steps}); lower it, "
                f"or leave it unset for a warm-up of a tenth of the run"
            )
        if self.threads < 0 or self.max_nonfinite < 1:
            raise ConfigError("threads must be 0 or more and max_nonfinite at least 1")
        if self.device != "auto" and not (self.device == "cpu" or self.device.split(":")[0] in ("cuda", "mps")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.eval.samples and self.eval.sample_tokens >= self.model.block_size:
            raise ConfigError(
                f"eval.sample_tokens ({self.eval.sample_tokens}) must be smaller than model.block_size ({self.model.block_size}), "
                f"which also holds the prompt; lower it, or set eval.samples = 0"
            )


# ---- fine-tuning ------------------------------------------------------------------


@dataclass
class FinetuneData:
    """The task's data: the published files (found under `dir`, in the cache, or downloaded), or files of yours."""

    dir: Path | None = opt(None, "folder of local copies of the task's published files (searched by path, then by name)")
    train: Path | None = opt(None, "your own training file in the task's format, instead of the published one")
    eval: Path | None = opt(None, "your own evaluation file in the task's format, instead of the published one")
    max_train_examples: int | None = opt(None, "use only this many training examples (a seeded sample): shorter runs")

    def __post_init__(self) -> None:
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ConfigError(f"data.max_train_examples must be positive, got {self.max_train_examples}")


@dataclass
class FinetuneOptim(TrainOptim):
    """GPT-1's fine-tuning (section 4.1): Adam(W), lr 6.25e-5, warm-up over 0.2% of training then a linear
    decay to 0, weight decay 0.01 on matrices, clipping at 1. Betas and epsilon as GPT-1's released code."""

    lr: float = opt(6.25e-5, "peak learning rate (GPT-1: 6.25e-5)")
    schedule: Literal["cosine", "linear"] = opt("linear", "decay after the warm-up (GPT-1's fine-tuning: linear)")
    final_lr_fraction: float = opt(0.0, "the decay ends at this fraction of lr")
    warmup_fraction: float | None = opt(0.002, "warm-up as a fraction of the run (GPT-1: 0.2%)")
    weight_decay: float = opt(0.01, "decoupled weight decay on matrices (GPT-1: w = 0.01)")
    beta2: float = opt(0.999, "AdamW beta2")


@dataclass
class FinetuneEval:
    """The evaluation split, during and after training."""

    interval: int | None = opt(None, "evaluate every this many steps (default: once per epoch; 0: only at the end)")
    batch_size: int | None = opt(None, "examples per evaluation batch (default: micro_batch_size)")

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval < 0:
            raise ConfigError(f"eval.interval must be 0 or more, got {self.interval}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be positive, got {self.batch_size}")


@dataclass
class FinetuneCheckpoint(TrainCheckpoint):
    interval: int = opt(0, "save every this many steps (0: at each evaluation)")


@dataclass
class FinetuneLog(TrainLog):
    tensorboard: bool = opt(False, "write TensorBoard events to OUT/tensorboard (needs the `tensorboard` package)")


@dataclass
class FinetuneConfig:
    """`gpt2 finetune`: GPT-1's supervised fine-tuning of a model on a labelled task (input transforms, a linear
    head on the extract token, and the auxiliary language-model loss). Writes OUT/model (the fine-tuned model),
    OUT/metrics.json, OUT/predictions.jsonl and OUT/loss.png; resumable like `gpt2 train`. `gpt2 finetune predict
    --model OUT --input FILE` then labels new examples."""

    task: str = opt(help="cola sst2 mrpc qqp stsb rte mnli-m mnli-mm qnli snli scitail story-cloze race-m race-h")
    model: Path = opt(help="the model to fine-tune: this project's format (or a training run's folder), a Hugging Face "
                           "GPT-2 or openai-gpt directory, or OpenAI's release")
    out: Path = opt(Path("runs/finetune"), "run directory: config, metrics, checkpoints, plot, predictions and the fine-tuned model")
    tokenizer: str | None = opt(None, "tokenizer directory, or 'gpt2' (default: the model directory's own, else GPT-2's for a 50,257-token model)")
    lm_coef: float = opt(0.5, "weight λ of the auxiliary language-model loss (GPT-1: 0.5; 0 turns it off)")
    epochs: float = opt(3.0, "passes over the training examples (GPT-1: 3)")
    max_steps: int | None = opt(None, "optimizer steps (default: epochs x training examples / batch_size)")
    batch_size: int = opt(32, "examples per optimizer step across all processes (GPT-1: 32)")
    micro_batch_size: int | None = opt(None, "examples per forward pass on each process (default: batch_size / processes)")
    dropout: float = opt(0.1, "dropout in the network and before the head (GPT-1: 0.1)")
    max_len: int | None = opt(None, "longest input sequence in tokens (default: the model's context); longer examples are truncated")
    init: Literal["pretrained", "random"] = opt("pretrained", "'random': the same architecture from random weights (GPT-1 Table 5, 'w/o pre-training')")
    transfer_layers: int | None = opt(None, "keep the embeddings and the first k pre-trained blocks, start the others afresh "
                                            "(GPT-1 Figure 2, left; default: all)")
    device: str = opt("auto", "cpu, cuda, cuda:N (auto: the local GPU under torchrun, else cuda if present, else cpu)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt("auto", "compute precision (auto: bfloat16 where the hardware has it)")
    compile: bool = opt(False, "compile the model with torch.compile")
    parallel: Literal["ddp", "fsdp"] = opt("ddp", "under torchrun: replicate the model (ddp) or shard it per block (fsdp)")
    seed: int = opt(1337, "seeds the head, the added tokens' embeddings, the example order and dropout")
    resume: bool = opt(False, "continue from the newest checkpoint in OUT")
    threads: int = opt(0, "CPU threads per process (0: the cores no other process is busy with)")
    max_nonfinite: int = opt(3, "stop after this many steps in a row with a NaN or infinite loss")
    data: FinetuneData = opt(factory=FinetuneData)
    optim: FinetuneOptim = opt(factory=FinetuneOptim)
    eval: FinetuneEval = opt(factory=FinetuneEval)
    checkpoint: FinetuneCheckpoint = opt(factory=FinetuneCheckpoint)
    log: FinetuneLog = opt(factory=FinetuneLog)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        from gpt2.finetune.tasks import task

        task(self.task)  # an unknown task is refused here, with the list of tasks
        if not Path(self.model).exists():
            raise ConfigError(f"--model {self.model} does not exist: give a model directory (or a training run's folder)")
        if self.lm_coef < 0:
            raise ConfigError(f"--lm-coef must be 0 or more, got {self.lm_coef}")
        if self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        for name in ("max_steps", "micro_batch_size", "max_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"--batch-size ({self.batch_size}) must be a multiple of --micro-batch-size ({self.micro_batch_size})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.transfer_layers is not None and self.transfer_layers < 0:
            raise ConfigError(f"--transfer-layers must be 0 or more, got {self.transfer_layers}")
        if self.transfer_layers is not None and self.init == "random":
            raise ConfigError("--transfer-layers keeps pre-trained layers; it cannot go with --init random")
        if self.threads < 0 or self.max_nonfinite < 1:
            raise ConfigError("--threads must be 0 or more and --max-nonfinite at least 1")


@dataclass
class FinetunePredictConfig:
    """`gpt2 finetune predict`: label new examples with a fine-tuned model; prints JSON lines or writes them to --output."""

    model: Path = opt(help="a fine-tuned model: the --out folder of `gpt2 finetune`, or its model/ folder")
    input: Path = opt(help="examples: JSON lines (fields text / text_a, text_b / context, question, choices; label optional) "
                           "or a file (RACE: a folder) in the task's published format; labels are reported beside the predictions")
    output: Path | None = opt(None, "write the predictions here (JSON lines) instead of printing them")
    task: str | None = opt(None, "the task the model must have been fine-tuned on (a check; default: the model's own)")
    force: bool = opt(False, "replace an existing --output file")
    batch_size: int = opt(32, "examples per forward pass")
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:N, or auto (the GPU if there is one)")
    threads: int = opt(0, "CPU threads (0: torch's default)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
