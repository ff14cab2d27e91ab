"""Settings of the tokenizer commands and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpt2.config.core import opt
from gpt2.errors import ConfigError


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
