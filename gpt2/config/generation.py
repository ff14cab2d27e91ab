"""Settings of the commands that load a model: sample, serve, presets, convert."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt2.config.core import check_seed, opt
from gpt2.errors import ConfigError


# ---- model, weights, sampling ----------------------------------------------


@dataclass
class SampleConfig:
    """`gpt2 sample`: continue prompts with a trained or imported model (top-k 40 by default, as in the paper's samples)."""

    model: Path = opt(help="model directory: this project's format (or a training run's folder, or one of its checkpoints), "
                           "a Hugging Face GPT-2 directory, or OpenAI's release")
    prompt: str | None = opt(None, "prompt text (otherwise --prompt-file, otherwise stdin if it is not a terminal; "
                                   "none at all: unconditional samples that start from <|endoftext|>)")
    prompt_file: Path | None = opt(None, "file holding the prompt ('-' for stdin); a .jsonl file holds one prompt per line "
                                         "(a JSON string or an object with a \"prompt\" field)")
    tokenizer: str | None = opt(None, "tokenizer directory, or 'gpt2' (default: the model directory's own, else OpenAI's "
                                      "GPT-2 tokenizer for a 50,257-token model)")
    num_samples: int = opt(1, "samples per prompt")
    max_new_tokens: int = opt(256, "tokens to generate per sample (fewer when a stop id or string ends it)")
    temperature: float = opt(1.0, "divide the logits by this (0: greedy decoding)")
    top_k: int | None = opt(40, "sample from the k most likely tokens only (none: no limit)")
    top_p: float | None = opt(None, "sample from the smallest set of tokens whose probability reaches p (nucleus sampling)")
    seed: int | None = opt(None, "random seed (default: a fresh one, logged so the run can be repeated)")
    stop: list[str] = opt([], "stop strings: a sample ends where one appears (it is not shown); \\n, \\t and \\\\ are a line "
                              "break, a tab and a backslash, as in --interactive input")
    stop_at_eot: bool = opt(True, "end a sample at <|endoftext|> (false: go on, showing it as a line break)")
    echo: bool = opt(True, "print the prompt before its continuation")
    interactive: bool = opt(False, "read prompts line by line from the terminal until end of input (Ctrl-D); \\n in a line is a line break")
    output: Path | None = opt(None, "also write the samples to this JSON Lines file ({prompt, sample, tokens, ...} per line)")
    force: bool = opt(False, "replace an existing --output file")
    batch_size: int = opt(8, "sequences generated together")
    device: str = opt("auto", "cpu, cuda, cuda:N, mps, or auto (the GPU if there is one)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt(
        "auto", "precision of the weights while sampling (auto: bfloat16 on a GPU that has it, else float32)"
    )

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.prompt is not None and self.prompt_file is not None:
            raise ConfigError("give either --prompt or --prompt-file, not both")
        if self.interactive and (self.prompt is not None or self.prompt_file is not None):
            raise ConfigError("--interactive reads prompts from the terminal; drop --prompt / --prompt-file")
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.temperature >= 0:
            raise ConfigError(f"--temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--top-k must be at least 1 (or none for no limit), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ConfigError("--stop strings must not be empty")


@dataclass
class ServeConfig:
    """`gpt2 serve`: an OpenAI-compatible completion server (POST /v1/completions) with continuous batching,
    streaming and a web page at /. See docs/serving.md."""

    model: Path = opt(help="model directory (as for `gpt2 sample`)")
    tokenizer: str | None = opt(None, "tokenizer directory, or 'gpt2' (default: the model directory's own, else GPT-2's)")
    host: str = opt("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    port: int = opt(8000, "TCP port")
    max_batch: int = opt(16, "sequences generated together (each holds a KV-cache slot of the full context)")
    max_queue: int = opt(64, "requests that may wait for a slot; beyond that the server answers 429 with Retry-After")
    prefill_tokens: int = opt(512, "prompt tokens read per step, so that running requests keep getting tokens while a long prompt is read")
    api_key: list[str] = opt([], "accept only requests with 'Authorization: Bearer KEY' for one of these keys "
                                 "(also GPT2_API_KEYS, comma-separated); /health and the page stay open")
    cors_origin: list[str] = opt([], "origins browsers may call the API from (e.g. http://localhost:3000, or * for any)")
    model_name: str | None = opt(None, "the model's id in /v1/models and responses (default: the model directory's name)")
    request_timeout: float = opt(600.0, "seconds a request may take before it ends with a timeout error (0: no limit)")
    max_body_bytes: int = opt(1 << 20, "largest request body accepted (413 beyond)")
    shutdown_grace: float = opt(10.0, "on SIGINT / SIGTERM, seconds running requests may take to finish before they are cancelled")
    metrics: bool = opt(False, "serve Prometheus metrics at /metrics")
    no_ui: bool = opt(False, "do not serve the web page at /")
    threads: int = opt(0, "CPU threads for torch, set once at start (0: torch's default)")
    device: str = opt("auto", "cpu, cuda, cuda:N, mps, or auto (the GPU if there is one)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt(
        "auto", "precision of the weights (auto: bfloat16 on a GPU that has it, else float32)"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port must be in 0..65535, got {self.port}")
        for name in ("max_batch", "prefill_tokens", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_queue", "threads", "request_timeout", "shutdown_grace"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if any(not k.strip() for k in self.api_key):
            raise ConfigError("--api-key must not be empty")


@dataclass
class PresetsConfig:
    """`gpt2 presets`: the model sizes of the GPT-2 paper (Table 2) and GPT-1, with their parameter counts."""

    pad_vocab_to: int = opt(1, "count with the embedding padded to a multiple of this (the padding rows are not counted)")

    def __post_init__(self) -> None:
        if self.pad_vocab_to < 1:
            raise ConfigError(f"--pad-vocab-to must be at least 1, got {self.pad_vocab_to}")


@dataclass
class ConvertConfig:
    """`gpt2 convert`: convert a model directory between this project's format and Hugging Face's."""

    input: Path = opt(help="model directory: this project's format, Hugging Face (config.json + weights), or OpenAI's release "
                           "(hparams.json + model.ckpt.*)")
    output: Path = opt(help="directory to write")
    to: Literal["gpt2", "hf"] = opt("gpt2", "output format: 'gpt2' (this project: model.safetensors + model.json) or "
                                           "'hf' (a directory transformers.GPT2LMHeadModel.from_pretrained loads)")
    dtype: Literal["keep", "float32", "bfloat16", "float16"] = opt("keep", "store the weights in this precision")
    tokenizer: str | None = opt(None, "tokenizer to include (default: the input directory's own, if any)")
    force: bool = opt(False, "overwrite a different model already in --output")
