"""The `gpt2` command: a table of subcommands, each a plain importable function.

Every subcommand is `function(config)` for one dataclass of `gpt2.config`; its
flags are generated from that dataclass, so `gpt2 X --help`, TOML files and the
Python API always agree. Modules are imported only when their command runs, so
`gpt2 tokenizer ...` starts without importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from pathlib import Path

from gpt2 import config as C
from gpt2.errors import GPT2Error

# name -> (one-line help, "module:function", config class)
COMMANDS: dict[str, tuple[str, str, type]] = {
    "tokenizer train": (
        "learn a byte-level BPE vocabulary from text files",
        "gpt2.tokenizer:train_command",
        C.TokenizerTrainConfig,
    ),
    "tokenizer encode": ("text -> token ids, with a statistics line", "gpt2.tokenizer:encode_command", C.TokenizerEncodeConfig),
    "tokenizer decode": ("token ids -> text", "gpt2.tokenizer:decode_command", C.TokenizerDecodeConfig),
    "demo": ("the small end-to-end demo of the README", "gpt2.demo:demo", C.DemoConfig),

    # ---- model, weights, sampling
    "sample": ("generate text from a model: prompts, files, stdin or interactive", "gpt2.sample:sample_command", C.SampleConfig),
    "convert": ("convert a model between this project's format, Hugging Face's and OpenAI's", "gpt2.weights:convert_command", C.ConvertConfig),
    "presets": ("the model sizes of the paper with their parameter counts", "gpt2.weights:presets_command", C.PresetsConfig),

    # ---- data and training
    "prepare": ("text / JSON lines -> uint16 token shards with a held-out split", "gpt2.data.prepare:prepare", C.PrepareConfig),
    "train": ("pre-train a GPT on token shards (torchrun for several processes)", "gpt2.train:train", C.TrainConfig),

    # ---- WebText corpus building
    "webtext links": ("Reddit submission dumps -> links with at least 3 karma", "gpt2.webtext.links:links", C.WebTextLinksConfig),
    "webtext fetch": ("download the linked pages into WARC files, politely and resumably", "gpt2.webtext.fetch:fetch", C.WebTextFetchConfig),
    "webtext extract": ("WARC files -> documents: the main text of each page", "gpt2.webtext.extract:extract", C.WebTextExtractConfig),
    "webtext clean": ("keep English documents that pass the length and quality rules", "gpt2.webtext.clean:clean", C.WebTextCleanConfig),
    "webtext dedup": ("drop exact and near-duplicate documents (MinHash LSH)", "gpt2.webtext.dedup:dedup", C.WebTextDedupConfig),
    "webtext build": ("every stage in order, then token shards and a report", "gpt2.webtext.build:build", C.WebTextBuildConfig),

    # ---- evaluation
    "eval": ("the paper's zero-shot evaluations on one model (Table 3 and more)", "gpt2.evaluate.run:eval_command", C.EvalConfig),
    "report": ("Table 3 and Figure-1/4 style plots from several `gpt2 eval` runs", "gpt2.evaluate.report:report_command", C.ReportConfig),

}

GROUPS = {
    "tokenizer": "byte-level BPE: train, encode, decode",
    "webtext": "build the WebText corpus (GPT-2 paper section 2.1): links, fetch, extract, clean, dedup, build",
}

log = logging.getLogger("gpt2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2",
        description="GPT-2: tokenizer, model, pre-training, sampling and the paper's evaluations.",
    )
    parser.add_argument("-q", "--quiet", dest="_quiet", action="store_true", help="only print warnings and errors")
    parser.add_argument("-v", "--verbose", dest="_verbose", action="store_true", help="print debug messages")
    top = parser.add_subparsers(dest="_command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (help_text, target, cls) in COMMANDS.items():
        words = name.split()
        sub = top
        if len(words) == 2:
            if words[0] not in groups:
                group = top.add_parser(words[0], help=GROUPS[words[0]], description=GROUPS[words[0]])
                groups[words[0]] = group.add_subparsers(dest="_subcommand", metavar="COMMAND", required=True)
            sub = groups[words[0]]
        p = sub.add_parser(words[-1], help=help_text, description=(cls.__doc__ or help_text).strip())
        p.add_argument("--config", dest="_config_file", type=Path, metavar="FILE.toml", help="read settings from a TOML file (flags override it)")
        C.add_arguments(p, cls)
        p.set_defaults(_target=target, _cls=cls, _name=name)
    return parser


def run(name: str, cfg: object) -> object:
    """Run a subcommand by name with a resolved config (what the CLI does after parsing)."""
    module, func = COMMANDS[name][1].split(":")
    return getattr(importlib.import_module(module), func)(cfg)


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    # Under torchrun only rank 0 speaks at INFO; the others report warnings and errors.
    if int(os.environ.get("RANK", "0")) != 0 and not verbose:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


_OS_FIXES = {
    errno.EEXIST: "choose another path",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file; choose another path",
    errno.ENOENT: "check the path, and that its folder exists",
    errno.EACCES: "choose a location you can read and write",
    errno.EPERM: "choose a location you can read and write",
    errno.EROFS: "choose a writable location",
    errno.ENOSPC: "free some space or choose another location",
}


def os_error_message(e: OSError) -> str:
    """One line for a failed file operation: the path, what went wrong, and what to do about it."""
    if not e.filename:
        return str(e)
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    fix = _OS_FIXES.get(e.errno)
    return f"{where}: {e.strerror or e}" + (f"; {fix}" if fix else "")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args._quiet, args._verbose)
    try:
        cfg = C.resolve(args._cls, C.overrides_from_args(args), args._config_file)
        run(args._name, cfg)
    except GPT2Error as e:
        print(f"gpt2 {args._name}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named: unreadable, a directory, disk full
        if isinstance(e, BrokenPipeError):  # `gpt2 ... | head`
            return 0
        print(f"gpt2 {args._name}: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gpt2 {args._name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
