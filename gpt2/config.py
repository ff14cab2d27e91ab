"""Typed configuration for every command.

Each command takes one dataclass. Values are resolved in three layers:
defaults, then a TOML file (`--config FILE.toml`), then command-line overrides
(`--field value`, or `--section.field=value` for nested sections). Unknown keys
are errors, values are coerced to the field's type, and each dataclass checks
itself in `__post_init__` with a message a user can act on.

A field's help text lives in its metadata so that `--help` and the docs agree:

    vocab_size: int = opt(50257, "size of the vocabulary, special tokens included")
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gpt2.errors import ConfigError

_REQUIRED = dataclasses.MISSING


def opt(default: Any = _REQUIRED, help: str = "", *, factory: Any = None, flag: str | None = None) -> Any:
    """A dataclass field with help text (and an optional short flag such as '-o')."""
    meta = {"help": help, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------
# type handling


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML or command-line value to the annotated type `tp`."""
    try:
        return _convert(value, tp)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _convert(value: Any, tp: Any) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise ValueError("must not be empty")
    tp = inner
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (list, tuple):
        item = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        if item is not str:  # numbers and paths may also be given as "a,b,c"
            value = [x for v in value for x in (v.split(",") if isinstance(v, str) else [v]) if x != ""]
        items = [_convert(v, item) for v in value]
        return items if origin is list else tuple(items)
    if tp is bool:
        return _parse_bool(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(str(value).replace("_", "")) if isinstance(value, str) else int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if tp is Path:
        return Path(value).expanduser()
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be between 0 and 2**63 - 1, got {seed}")


def check_output_file(path: Path | None, force: bool, flag: str = "--output") -> None:
    """Refuse, before any work, an output file that exists (unless `force`), is a directory, or has no folder."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{flag} {path} exists; pass --force to replace it, or choose another file")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: the folder {path.parent} does not exist")


# ----------------------------------------------------------------------------
# dict <-> dataclass


def from_dict(cls: type, data: dict[str, Any], source: str = "config", prefix: str = "") -> Any:
    """Build `cls` from a (possibly nested) dict, rejecting unknown keys."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(prefix + name for name in fields)
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' in {source} (valid keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        tp = hints[name]
        flag = "--" + (prefix + name).replace("_", "-")
        where = flag if source == "command line" else f"'{prefix}{name}' in {source}"
        if dataclasses.is_dataclass(tp):
            section = data.get(name, {})
            if isinstance(section, tp):
                kwargs[name] = section
                continue
            if not isinstance(section, dict):
                raise ConfigError(f"{where} must be a table of settings, got {section!r}")
            kwargs[name] = from_dict(tp, section, source, prefix=f"{prefix}{name}.")
        elif name in data:
            value = kwargs[name] = _coerce(data[name], tp, where)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
                raise ConfigError(f"{where} is too large ({value}); it must fit in 64 bits")
        elif f.default is _REQUIRED and f.default_factory is _REQUIRED:
            raise ConfigError(f"missing required setting {flag} (or '{prefix}{name}' in a --config file)")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain TOML/JSON-friendly values (paths as strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def to_toml(cfg: Any) -> str:
    """Serialise a config (flat keys first, then one table per section); None values are omitted."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} to TOML")

    def table(d: dict[str, Any], name: str) -> list[str]:
        lines = [f"[{name}]"] if name else []
        lines += [f"{k} = {value(v)}" for k, v in d.items() if v is not None and not isinstance(v, dict)]
        for k, v in d.items():
            if isinstance(v, dict):
                lines += [""] + table(v, f"{name}.{k}" if name else k)
        return lines

    return "\n".join(table(to_dict(cfg), "")) + "\n"


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text, so not a TOML file; check the path") from None


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    for s in sections:
        data = data.setdefault(s, {})
    data[leaf] = value


def resolve(cls: type, overrides: dict[str, Any], config_file: Path | None = None) -> Any:
    """defaults < TOML file < overrides (keys are dotted paths, e.g. 'optim.lr')."""
    data = load_toml(config_file) if config_file else {}
    source = str(config_file) if config_file else "command line"
    for key, value in overrides.items():
        _set_path(data, key, value)
    if overrides and config_file:
        source = f"{config_file} or the command line"
    return from_dict(cls, data, source)


# ----------------------------------------------------------------------------
# argparse


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per field: `--vocab-size` (also `--vocab_size`); nested sections give `--optim.lr`."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            add_arguments(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        dest = prefix + f.name
        names = ["--" + dest.replace("_", "-")]
        if "_" in dest:
            names.append("--" + dest)
        if f.metadata.get("flag"):
            names.insert(0, f.metadata["flag"])
        inner, _ = _unwrap_optional(tp)
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        help_text = f.metadata.get("help", "")
        if f.default is not _REQUIRED:
            if f.default not in (None, "", [], ()):
                help_text += f" (default: {f.default})"
        elif f.default_factory is not _REQUIRED:
            default = f.default_factory()
            if default:
                help_text += f" (default: {' '.join(map(str, default))})"
        else:
            help_text += " (required)"
        kwargs["help"] = help_text.replace("%", "%%")
        origin = typing.get_origin(inner)
        if origin in (list, tuple):
            kwargs["nargs"] = "+"
            kwargs["metavar"] = f.name.upper().rstrip("S") if f.name.endswith("s") else f.name.upper()
        elif inner is bool:
            kwargs["nargs"] = "?"
            kwargs["const"] = "true"
            kwargs["metavar"] = "BOOL"
        elif origin is Literal:
            kwargs["choices"] = typing.get_args(inner)
        else:
            kwargs["metavar"] = {int: "N", float: "X", Path: "PATH"}.get(inner, "TEXT")
        parser.add_argument(*names, **kwargs)


def overrides_from_args(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in skip and not k.startswith("_")}


# ============================================================================
# Command configurations
# ============================================================================

# ---- tokenizer (gpt2 tokenizer ...) -----------------------------------------


@dataclass
class TokenizerTrainConfig:
    """`gpt2 tokenizer train`: learn a byte-level BPE vocabulary from text files."""

    input: list[Path] = opt(help="text files to learn from (streamed; any size)")
    out: Path = opt(help="directory to write the tokenizer to (bpe.json + encoder.json + vocab.bpe)")
    vocab_size: int = opt(50257, "vocabulary size, the 256 byte tokens and the special tokens included")
    special_tokens: list[str] = opt(["<|endoftext|>"], "special tokens appended after the merges")
    workers: int = opt(0, "processes used to count words (0: one per CPU core)")
    force: bool = opt(False, "overwrite an existing tokenizer in --out")

    def __post_init__(self) -> None:
        if not self.input:
            raise ConfigError("--input needs at least one text file")
        if self.vocab_size < 256 + len(self.special_tokens):
            raise ConfigError(
                f"--vocab-size {self.vocab_size} is too small: it must be at least 256 byte tokens "
                f"+ {len(self.special_tokens)} special token(s) = {256 + len(self.special_tokens)}"
            )
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ConfigError("--special-tokens has duplicates")
        if "" in self.special_tokens:
            raise ConfigError("--special-tokens has an empty one; give tokens like <|endoftext|>, or none at all")
        if self.workers < 0:
            raise ConfigError("--workers must be 0 (all cores) or a positive number")


@dataclass
class TokenizerEncodeConfig:
    """`gpt2 tokenizer encode`: text -> token ids, with a statistics line."""

    tokenizer: str = opt("gpt2", "tokenizer directory, or 'gpt2' for OpenAI's GPT-2 tokenizer")
    text: str | None = opt(None, "text to encode (otherwise --input, otherwise stdin)")
    input: Path | None = opt(None, "UTF-8 file to encode")
    output: Path | None = opt(None, "write ids here: .npy (uint16/uint32) or text (one line of ids); default stdout")
    force: bool = opt(False, "replace an existing --output file")
    special: Literal["error", "allow", "ordinary"] = opt(
        "error",
        "text that spells a special token such as <|endoftext|>: 'error' stops, 'allow' encodes it as the "
        "special token, 'ordinary' encodes it as plain text",
    )


@dataclass
class TokenizerDecodeConfig:
    """`gpt2 tokenizer decode`: token ids -> text."""

    tokenizer: str = opt("gpt2", "tokenizer directory, or 'gpt2' for OpenAI's GPT-2 tokenizer")
    ids: list[int] | None = opt(None, "token ids to decode (otherwise --input, otherwise stdin)")
    input: Path | None = opt(None, "file of ids: .npy, or whitespace-separated integers")
    output: Path | None = opt(None, "write the text here (default stdout)")
    force: bool = opt(False, "replace an existing --output file")


# ---- the demo (gpt2 demo) -------------------------------------------------------


@dataclass
class DemoConfig:
    """`gpt2 demo`: the small end-to-end run of the README (tokenizer, shards, training, samples, plot)."""

    corpus: Path | None = opt(None, "a local copy of Tiny Shakespeare (default: $GPT2_DEMO_CORPUS, else download it once)")
    out: Path = opt(Path("runs/demo"), "directory for everything the demo writes")
    tokenizer: Literal["train", "gpt2"] = opt("train", "learn a BPE vocabulary from the corpus, or use GPT-2's")
    vocab_size: int = opt(4096, "size of the BPE vocabulary the demo learns")
    steps: int | None = opt(None, "training steps (default: the recipe's 400)")
    train_config: Path | None = opt(None, "a TOML file of `gpt2 train` settings laid over the demo's recipe")

    def __post_init__(self) -> None:
        if self.vocab_size < 257:
            raise ConfigError(f"--vocab-size must be at least 257 (256 bytes + <|endoftext|>), got {self.vocab_size}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be positive, got {self.steps}")


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

# ---- data and training --------------------------------------------------------


@dataclass
class PrepareConfig:
    """`gpt2 prepare`: text files -> documents -> uint16 token shards + manifest.json, with a held-out split."""

    input: list[Path] = opt(help="text (.txt, .text, .md), JSON-lines (.jsonl) files, optionally .gz, or directories of them")
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
    OUT/metrics.json, OUT/predictions.jsonl and OUT/loss.png; resumable like `gpt2 train`."""

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
    input: Path = opt(help="examples: JSON lines (fields text / text_a, text_b / context, question, choices) or a file "
                           "in the task's published format (tsv, csv); labels, if present, are reported beside the predictions")
    output: Path | None = opt(None, "write the predictions here (JSON lines) instead of printing them")
    task: str | None = opt(None, "the task the model must have been fine-tuned on (a check; default: the model's own)")
    force: bool = opt(False, "replace an existing --output file")
    batch_size: int = opt(32, "examples per forward pass")
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:N")
    threads: int = opt(0, "CPU threads (0: torch's default)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")


# ---- WebText corpus building (gpt2 webtext ...) -----------------------------------
#
# Each stage has a settings class (what shapes its output, also a section of `gpt2 webtext build`'s
# config) and a command class that adds its input and output folders and the engine.


@dataclass(kw_only=True)
class WebTextEngine:
    """Where a stage runs: a process pool here, or a Dask cluster (gpt2/webtext/engine.py)."""

    engine: Literal["local", "dask"] = opt("local", "local: a process pool on this machine; dask: a Dask cluster (a new "
                                                    "LocalCluster, or --scheduler)")
    workers: int = opt(0, "processes (local pool, or LocalCluster workers); 0: one per CPU core")
    scheduler: str | None = opt(None, "address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786 (implies --engine dask)")

    def check_engine(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 (one per core) or more, got {self.workers}")
        if self.scheduler is not None and not self.scheduler.strip():
            raise ConfigError("--scheduler must not be empty; give tcp://HOST:8786, or leave it out")


@dataclass(kw_only=True)
class WebTextLinks:
    """Which Reddit links are kept (GPT-2 paper section 2.1: outbound links with at least 3 karma)."""

    min_karma: int = opt(3, "keep URLs whose karma is at least this (the paper: 3)")
    karma: Literal["max", "sum"] = opt("max", "karma of a URL posted several times: the best post's score, or the sum")
    shards: int = opt(16, "link shards written (the unit of work of every later stage)")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        if self.shards < 1 or self.shards > 100_000:
            raise ConfigError(f"links.shards must be between 1 and 100,000, got {self.shards}")


@dataclass(kw_only=True)
class WebTextFetch:
    """How pages are downloaded: politely, in bounded time and size, with retries."""

    concurrency: int = opt(64, "connections open at once, in all")
    max_per_host: int = opt(2, "connections open at once to one host")
    per_host_delay: float = opt(1.0, "seconds between two requests to one host")
    connect_timeout: float = opt(10.0, "seconds to connect")
    read_timeout: float = opt(20.0, "seconds without a byte of the response")
    total_timeout: float = opt(60.0, "seconds for a whole response")
    retries: int = opt(2, "retries after a timeout, a cut connection, 429, 500, 502, 503 or 504 (with backoff; Retry-After honoured)")
    backoff: float = opt(1.0, "seconds before the first retry, doubled each time")
    max_retry_after: float = opt(120.0, "give up on a page whose Retry-After asks for longer than this")
    max_bytes: int = opt(5_000_000, "largest body read; bigger pages are dropped")
    max_redirects: int = opt(5, "redirects followed")
    robots: bool = opt(True, "honour robots.txt (fetched once per host)")
    user_agent: str = opt("gpt2-webtext/0.1 (language-model corpus research)", "the User-Agent sent; add a way to contact you")
    proxy: str | None = opt(None, "HTTP proxy for every request, e.g. http://127.0.0.1:3128")
    limit: int | None = opt(None, "fetch at most this many URLs per shard (a trial run)")

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_per_host < 1:
            raise ConfigError("--concurrency and --max-per-host must be at least 1")
        for name in ("per_host_delay", "backoff", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.retries < 0 or self.max_redirects < 0:
            raise ConfigError("--retries and --max-redirects must be 0 or more")
        if self.max_bytes < 1024:
            raise ConfigError(f"--max-bytes must be at least 1024, got {self.max_bytes}")
        if self.proxy is not None and not self.proxy.startswith(("http://", "https://")):
            raise ConfigError(f"--proxy must be an http:// or https:// URL, got {self.proxy!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be positive, got {self.limit}")
        if not self.user_agent.strip():
            raise ConfigError("--user-agent must not be empty: sites should know who is asking")


@dataclass(kw_only=True)
class WebTextExtract:
    """How the main text is taken out of each page."""

    extractor: Literal["trafilatura", "resiliparse", "newspaper"] = opt(
        "trafilatura", "trafilatura (best on public benchmarks), resiliparse (fast) or newspaper (newspaper4k, the paper's Newspaper)"
    )
    page_timeout: float = opt(30.0, "seconds one page may take; a page that takes longer is dropped (its worker is restarted)")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        if self.page_timeout <= 0:
            raise ConfigError(f"--page-timeout must be positive, got {self.page_timeout}")


@dataclass(kw_only=True)
class WebTextClean:
    """Language identification, length bounds and heuristic quality rules (gpt2/webtext/clean.py lists them)."""

    languages: list[str] = opt(["en"], "keep documents in these languages (ISO 639-1; the paper: English only)")
    min_language_score: float = opt(0.65, "the language identifier's probability the document needs")
    min_words: int = opt(50, "fewest words in a document")
    max_words: int = opt(100_000, "most words in a document")
    rules: bool = opt(True, "apply the quality rules (Gopher / C4 style); off: only language and length")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        if not self.languages or any(len(x) not in (2, 3) or not x.isalpha() for x in self.languages):
            raise ConfigError(f"--languages takes ISO 639 codes such as en, de; got {' '.join(self.languages) or 'none'}")
        if not 0.0 <= self.min_language_score <= 1.0:
            raise ConfigError(f"--min-language-score must be in [0, 1], got {self.min_language_score}")
        if self.min_words < 0 or self.max_words < max(self.min_words, 1):
            raise ConfigError(f"--min-words ({self.min_words}) and --max-words ({self.max_words}) must satisfy 0 <= min <= max")


@dataclass(kw_only=True)
class WebTextDedup:
    """Exact and near-duplicate removal: MinHash LSH over word n-grams, the copy with the most karma kept."""

    exact: bool = opt(True, "drop documents whose normalised text is the same")
    near: bool = opt(True, "drop near-duplicates found by MinHash LSH")
    ngram: int = opt(5, "words per shingle (FineWeb: 5)")
    bands: int = opt(14, "LSH bands (FineWeb: 14)")
    rows: int = opt(8, "MinHash values per band (FineWeb: 8); two documents of Jaccard similarity s share a band with "
                       "probability 1 - (1 - s^rows)^bands")
    seed: int = opt(1, "seeds the MinHash functions")
    compress: bool = opt(False, "write zstd-compressed shards (.jsonl.zst)")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise ConfigError("--ngram, --bands and --rows must be at least 1")
        if self.bands * self.rows > 1024:
            raise ConfigError(f"--bands x --rows ({self.bands * self.rows}) must be at most 1024 hash functions")


@dataclass(kw_only=True)
class WebTextLinksConfig(WebTextEngine, WebTextLinks):
    """`gpt2 webtext links`: Pushshift submission dumps -> links with at least 3 karma (JSON lines + stats.json)."""

    input: list[Path] = opt(help="Pushshift RS_* dumps (.zst, .xz, .bz2, .gz or .jsonl), or folders of them")
    out: Path = opt(help="folder for links-NNNNN.jsonl and stats.json (new, empty, or an interrupted run's)")

    def __post_init__(self) -> None:
        WebTextLinks.__post_init__(self)
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one dump")


@dataclass(kw_only=True)
class WebTextFetchConfig(WebTextEngine, WebTextFetch):
    """`gpt2 webtext fetch`: download the pages of links shards (or of a file of URLs, one per line) into WARC files."""

    links: list[Path] = opt(help="the output folder of `gpt2 webtext links`, links shards, or text files of URLs (one per line)")
    out: Path = opt(help="folder for the WARC files (fetch-NNNNN.warc.gz) and stats.json")

    def __post_init__(self) -> None:
        WebTextFetch.__post_init__(self)
        self.check_engine()
        if not self.links:
            raise ConfigError("--links needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextExtractConfig(WebTextEngine, WebTextExtract):
    """`gpt2 webtext extract`: WARC files -> documents (JSON lines of url, text, title, karma, ...)."""

    warc: list[Path] = opt(help="the output folder of `gpt2 webtext fetch`, or .warc / .warc.gz files")
    out: Path = opt(help="folder for docs-NNNNN.jsonl and stats.json")

    def __post_init__(self) -> None:
        WebTextExtract.__post_init__(self)
        self.check_engine()
        if not self.warc:
            raise ConfigError("--warc needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextCleanConfig(WebTextEngine, WebTextClean):
    """`gpt2 webtext clean`: keep the documents in the chosen languages that pass the length and quality rules."""

    input: list[Path] = opt(help="the output folder of `gpt2 webtext extract`, or its shards")
    out: Path = opt(help="folder for the kept documents and stats.json (drops by rule)")

    def __post_init__(self) -> None:
        WebTextClean.__post_init__(self)
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextDedupConfig(WebTextEngine, WebTextDedup):
    """`gpt2 webtext dedup`: drop exact and near-duplicate documents, keeping the copy with the most karma."""

    input: list[Path] = opt(help="the output folder of `gpt2 webtext clean` (or extract), or its shards")
    out: Path = opt(help="folder for the unique documents and stats.json")

    def __post_init__(self) -> None:
        WebTextDedup.__post_init__(self)
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one folder or file")


@dataclass(kw_only=True)
class WebTextPrepare:
    """The token shards made from the final documents (`gpt2 prepare`), with the held-out split by URL."""

    tokenizer: str = opt("gpt2", "tokenizer directory, or 'gpt2' for OpenAI's GPT-2 tokenizer")
    val_fraction: float = opt(0.05, "fraction of documents held out, chosen by a keyed hash of the URL (the paper: 5%)")
    seed: int = opt(1337, "keys the hash that chooses the held-out documents")
    shard_tokens: int = opt(100_000_000, "tokens per shard file")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"prepare.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens < 1024:
            raise ConfigError(f"prepare.shard_tokens must be at least 1024, got {self.shard_tokens}")


@dataclass(kw_only=True)
class WebTextDecontaminate:
    """Removing the evaluation sets' text from the final documents (GPT-3's 13-gram rule; gpt2 overlap decontaminate)."""

    tasks: list[str] = opt([], "evaluation tasks or groups whose text is cut out, e.g. paper (empty: no such stage)")
    n: int = opt(13, "words per n-gram of the rule (GPT-3: 13)")
    data_dir: Path | None = opt(None, "folder of local copies of the evaluation datasets (as gpt2 eval --data-dir)")

    def __post_init__(self) -> None:
        self.tasks = [t for item in self.tasks for t in str(item).split(",") if t.strip()]
        if self.n < 1:
            raise ConfigError(f"decontaminate.n must be positive, got {self.n}")


@dataclass(kw_only=True)
class WebTextBuildConfig(WebTextEngine):
    """`gpt2 webtext build`: every stage in order (links, fetch, extract, clean, dedup, token shards), each resumable,
    then a report (counts per stage, drops by reason, language and length histograms, top domains)."""

    input: list[Path] = opt(help="Pushshift RS_* dumps, or folders of them")
    out: Path = opt(help="folder holding one sub-folder per stage, the token shards (tokens/) and report.md")
    links: WebTextLinks = opt(factory=WebTextLinks)
    fetch: WebTextFetch = opt(factory=WebTextFetch)
    extract: WebTextExtract = opt(factory=WebTextExtract)
    clean: WebTextClean = opt(factory=WebTextClean)
    dedup: WebTextDedup = opt(factory=WebTextDedup)
    decontaminate: WebTextDecontaminate = opt(factory=WebTextDecontaminate)
    prepare: WebTextPrepare = opt(factory=WebTextPrepare)

    def __post_init__(self) -> None:
        self.check_engine()
        if not self.input:
            raise ConfigError("--input needs at least one dump")


# ---- evaluation -----------------------------------------------------------------


@dataclass
class EvalConfig:
    """`gpt2 eval`: the GPT-2 paper's zero-shot evaluations (section 3) and GPT-1's zero-shot heuristics on one model.

    Writes OUT/results.json (every number with its variant, dataset checksums, model, tokens scored, time) and
    OUT/report.md (laid out like the paper's Table 3, the paper's numbers beside ours). Each finished task is
    cached in OUT/tasks/, so an interrupted run resumes where it stopped.
    """

    model: str = opt(help="model directory: the project's own (model.safetensors + model.json; or a training run's folder, "
                          "or one of its checkpoints), a Hugging Face GPT-2 one, or OpenAI's release")
    out: Path = opt(help="directory for results.json, report.md and the per-task cache")
    tasks: list[str] = opt(
        ["table3"],
        "tasks or groups, comma-separated. Tasks: lambada cbt-cn cbt-ne wikitext2 ptb enwik8 text8 wikitext103 1bw wsc273 "
        "coqa cnndm wmt14-en-fr wmt14-fr-en nq sst2 cola race story-cloze. Groups: table3 generation gpt1 paper all",
    )
    tokenizer: str | None = opt(None, "tokenizer directory, or 'gpt2' (default: the model directory's own, else OpenAI's GPT-2)")
    data_dir: Path | None = opt(None, "folder of local dataset copies, searched (by canonical path, then file name) before the cache and downloads")
    device: str = opt("cpu", "torch device: cpu, cuda, cuda:1, mps")
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "weights and activations (log-softmax is always float32)")
    batch_tokens: int = opt(8192, "tokens per forward pass; lower it if memory runs out (results do not depend on it beyond float rounding)")
    windows: list[str] = opt(
        ["disjoint"], "language-modelling variants: 'disjoint' (stride = context) and/or 'sliding' (stride --stride; costs context/stride times more)"
    )
    stride: int = opt(32, "stride of the sliding-window variant, in tokens")
    limit: int | None = opt(None, "only the first N examples of each task (the first N lines for language modelling): a quick, labelled partial run")
    seed: int = opt(0, "seed of the sampled summaries (CNN/Daily Mail) and of the random-3 baseline")
    wmt_shots: int = opt(5, "example pairs before each WMT-14 sentence (taken from the start of the test set, which is then not scored)")
    nq_shots: int = opt(5, "question/answer pairs before each Natural Questions question (from the start of the dev set, then not scored)")
    cola_threshold: float | None = opt(None, "CoLA: mean log-prob threshold for 'acceptable' (default: the best one on the data, reported as an upper bound)")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    force: bool = opt(False, "recompute tasks already cached in --out, and replace results of another model there")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        from gpt2.evaluate.tasks import expand

        try:  # --tasks a,b,c and --tasks a b c both work
            self.tasks = expand([t for item in self.tasks for t in str(item).split(",") if t.strip()])
        except ValueError as e:
            raise ConfigError(f"--tasks: {e}") from None
        if not self.tasks:
            raise ConfigError("--tasks is empty; name at least one task or group")
        self.windows = list(dict.fromkeys(w.strip() for item in self.windows for w in str(item).split(",") if w.strip()))
        if not self.windows or any(w not in ("disjoint", "sliding") for w in self.windows):
            raise ConfigError(f"--windows takes 'disjoint', 'sliding' or both, got {','.join(self.windows) or 'nothing'}")
        for name in ("batch_tokens", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be positive, got {self.limit}")
        for name in ("wmt_shots", "nq_shots", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")


@dataclass
class ReportConfig:
    """`gpt2 report`: Table 3 and Figure-1 / Figure-4 style plots (metric against parameter count) from several
    `gpt2 eval` runs."""

    results: list[Path] = opt(help="results.json files, or the --out directories of `gpt2 eval` runs")
    out: Path = opt(Path("report"), "directory for report.md and the PNG plots")
    force: bool = opt(False, "replace a report.md or plots already in --out")

    def __post_init__(self) -> None:
        if not self.results:
            raise ConfigError("--results needs at least one results.json (or a `gpt2 eval` output directory)")


# ---- the overlap study (gpt2 overlap ...) -----------------------------------------


def _names(values: list[str]) -> list[str]:
    """'a,b c' style lists of names -> ['a', 'b', 'c']."""
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


@dataclass
class OverlapBuildConfig:
    """`gpt2 overlap build`: a Bloom filter of the n-grams of training text (GPT-2 paper, section 4), sized for a
    false-positive rate, memory-mapped for queries; reports the rate measured on random strings."""

    input: list[Path] = opt(help="training text: text files (one document each), JSON lines (.jsonl, one document per line; "
                                 ".gz / .zst), `gpt2 prepare` dataset directories, or directories of files")
    out: Path = opt(help="the filter file to write")
    n: int = opt(8, "words per n-gram (the paper: 8)")
    fp_rate: float = opt(1e-8, "false-positive rate the filter is sized for (the paper: 1e-8)")
    jsonl_field: str = opt("text", "the field of each JSON line that holds the document")
    splits: list[str] = opt(["train"], "splits of `gpt2 prepare` datasets to read (train, val)")
    workers: int = opt(0, "processes that hash text (0: one per CPU core)")
    random_queries: int = opt(1_000_000, "random strings looked up to measure the false-positive rate (the paper: 1M)")
    force: bool = opt(False, "replace an existing --out file")

    def __post_init__(self) -> None:
        if not self.input:
            raise ConfigError("--input needs at least one file or directory")
        if not 1 <= self.n <= 64:
            raise ConfigError(f"--n must be between 1 and 64, got {self.n}")
        if not 1e-15 <= self.fp_rate < 1:
            raise ConfigError(f"--fp-rate must be in [1e-15, 1), got {self.fp_rate}")
        self.splits = _names(self.splits)
        if not self.splits or set(self.splits) - {"train", "val"}:
            raise ConfigError(f"--splits takes train and/or val, got {','.join(self.splits) or 'nothing'}")
        if self.workers < 0 or self.random_queries < 0:
            raise ConfigError("--workers and --random-queries must be 0 or more")
        if not self.jsonl_field:
            raise ConfigError("--jsonl-field must not be empty")
        check_output_file(self.out, self.force, "--out")


@dataclass
class OverlapReportConfig:
    """`gpt2 overlap report`: the share of each test set's n-grams found in a filter (the paper's Table 6), the
    overlap of every example, and, given a `gpt2 eval` folder, every metric on all / clean / dirty examples."""

    filter: Path = opt(help="a filter written by `gpt2 overlap build`")
    out: Path = opt(help="directory for overlap.json, overlap.md, examples/TASK.jsonl and overlap_histogram.png")
    tasks: list[str] = opt([], "evaluation tasks or groups, read as `gpt2 eval` reads them (e.g. wikitext2,ptb,lambada,wsc273)")
    input: list[Path] = opt([], "other test sets: text or JSON-lines files (each line an example)")
    own_train: list[str] = opt([], "NAME=FILE: also look the test set NAME up in its own training split FILE (Table 6's second column)")
    results: Path | None = opt(None, "a `gpt2 eval` output folder: recompute its metrics on all, clean and dirty examples")
    data_dir: Path | None = opt(None, "folder of local dataset copies, as for `gpt2 eval --data-dir`")
    n: int | None = opt(None, "n-gram length expected of the filter (default: the filter's own)")
    dirty_threshold: float = opt(0.15, "an example is dirty above this fraction of its n-grams found (the paper: 15%)")
    jsonl_field: str = opt("text", "the field of each JSON line that holds the text")
    verify: bool = opt(True, "check the filter's bits against their checksum first (reads the whole file once)")
    force: bool = opt(False, "replace a report already in --out")

    def __post_init__(self) -> None:
        self.tasks = _names(self.tasks)
        if not self.tasks and not self.input:
            raise ConfigError("name test sets with --tasks (e.g. wikitext2,ptb,lambada) and/or --input FILE")
        if not 0 <= self.dirty_threshold < 1:
            raise ConfigError(f"--dirty-threshold must be in [0, 1), got {self.dirty_threshold}")
        if self.n is not None and not 1 <= self.n <= 64:
            raise ConfigError(f"--n must be between 1 and 64, got {self.n}")
        for item in self.own_train:
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ConfigError(f"--own-train takes NAME=FILE (e.g. wikitext2=wiki.train.tokens), got {item!r}")


@dataclass
class OverlapDecontaminateConfig:
    """`gpt2 overlap decontaminate`: remove the text of training documents that overlaps evaluation sets, by GPT-3's
    rule (Brown et al. 2020, appendix C): cut out each 13-gram found with 200 characters on either side, drop pieces
    under 200 characters and documents cut into more than 10 pieces; write the rest as JSON lines."""

    input: list[Path] = opt(help="training text: text files, JSON lines (.jsonl; .gz / .zst), `gpt2 prepare` datasets, directories")
    out: Path = opt(help="JSON-lines file of the kept pieces ({\"text\", \"source\", \"document\", \"piece\"} per line)")
    tasks: list[str] = opt([], "evaluation tasks or groups whose text is removed (read as `gpt2 eval` reads them)")
    test_input: list[Path] = opt([], "other test sets whose text is removed: text or JSON-lines files")
    data_dir: Path | None = opt(None, "folder of local dataset copies, as for `gpt2 eval --data-dir`")
    n: int = opt(13, "words per n-gram (GPT-3: 13)")
    window: int = opt(200, "characters removed on either side of each n-gram found (GPT-3: 200)")
    min_piece: int = opt(200, "pieces shorter than this many characters are dropped (GPT-3: 200)")
    max_pieces: int = opt(10, "a document cut into more pieces than this is dropped whole (GPT-3: 10)")
    max_doc_frequency: int = opt(10, "ignore test n-grams found in more training documents than this: common phrases, not "
                                     "contamination (GPT-3: 10; 0: use every n-gram; costs a first pass)")
    jsonl_field: str = opt("text", "the field of each JSON line that holds the document")
    splits: list[str] = opt(["train"], "splits of `gpt2 prepare` datasets to read (train, val)")
    force: bool = opt(False, "replace an existing --out file")

    def __post_init__(self) -> None:
        self.tasks = _names(self.tasks)
        self.splits = _names(self.splits)
        if not self.input:
            raise ConfigError("--input needs at least one file or directory")
        if not self.tasks and not self.test_input:
            raise ConfigError("name what to remove with --tasks (e.g. lambada,wikitext2) and/or --test-input FILE")
        if not 1 <= self.n <= 64:
            raise ConfigError(f"--n must be between 1 and 64, got {self.n}")
        if min(self.window, self.min_piece, self.max_doc_frequency) < 0 or self.max_pieces < 1:
            raise ConfigError("--window, --min-piece and --max-doc-frequency must be 0 or more, --max-pieces at least 1")
        if not self.splits or set(self.splits) - {"train", "val"}:
            raise ConfigError(f"--splits takes train and/or val, got {','.join(self.splits) or 'nothing'}")
        check_output_file(self.out, self.force, "--out")
