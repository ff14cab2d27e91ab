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
import json
import logging
import os
import sys
import time
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
    "sample": ("generate text from a model: prompts, files, stdin or interactive", "gpt2.sample_cli:sample_command", C.SampleConfig),
    "serve": ("an OpenAI-compatible completion server with continuous batching and a web page", "gpt2.serve:serve_command", C.ServeConfig),
    "convert": ("convert a model between this project's format, Hugging Face's and OpenAI's", "gpt2.weights:convert_command", C.ConvertConfig),
    "presets": ("the model sizes of the paper with their parameter counts", "gpt2.weights:presets_command", C.PresetsConfig),

    # ---- data and training
    "prepare": ("text / JSON lines -> uint16 token shards with a held-out split", "gpt2.data.prepare:prepare", C.PrepareConfig),
    "train": ("pre-train a GPT on token shards (torchrun for several processes)", "gpt2.train:train", C.TrainConfig),

    # ---- fine-tuning
    "finetune": ("GPT-1's supervised fine-tuning on a labelled task (`gpt2 finetune predict` labels new data)",
                 "gpt2.finetune.run:finetune", C.FinetuneConfig),
    "finetune predict": ("label new examples with a fine-tuned model", "gpt2.finetune.run:predict", C.FinetunePredictConfig),

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
    "overlap build": ("a Bloom filter of the n-grams of training text (paper section 4)", "gpt2.overlap.build:build", C.OverlapBuildConfig),
    "overlap report": (
        "how much of each test set is in a filter: Table 6, per example, metrics on clean / dirty examples",
        "gpt2.overlap.report:report_command", C.OverlapReportConfig,
    ),
    "overlap decontaminate": (
        "remove training text that overlaps evaluation sets (GPT-3's 13-gram rule) -> JSON lines",
        "gpt2.overlap.decontaminate:decontaminate_command", C.OverlapDecontaminateConfig,
    ),

}

GROUPS = {
    "tokenizer": "byte-level BPE: train, encode, decode",
    "overlap": "the paper's n-gram overlap study (section 4): Bloom filters, Table 6, decontamination",
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
        listed = {"help": help_text}
        if len(words) == 2 and words[0] in COMMANDS:  # `gpt2 finetune predict` beside `gpt2 finetune`: see main()
            words = ["-".join(words)]
            listed = {}  # named in the help of its parent command instead
        if len(words) == 2:
            if words[0] not in groups:
                group = top.add_parser(words[0], help=GROUPS[words[0]], description=GROUPS[words[0]])
                groups[words[0]] = group.add_subparsers(dest="_subcommand", metavar="COMMAND", required=True)
            sub = groups[words[0]]
        p = sub.add_parser(words[-1], **listed, description=(cls.__doc__ or help_text).strip(), prog=f"gpt2 {name}")
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
    # other libraries' INFO lines ("generated new fontManager") are not the command's output
    for name in ("matplotlib", "PIL", "urllib3", "asyncio"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


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


def user_error(message: str) -> int:
    """Report a user error as one line; returns the exit status (2).

    Under torchrun every process meets the same error: rank 0 prints it, and each process also writes it to
    torchrun's error file, so that torchrun's failure summary names it as the root cause instead of "<N/A>".
    """
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as f:
                # torchrun's own format; it shows py_callstack as the failure's "traceback"
                json.dump({"message": {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}}, f)
        except OSError:
            pass
    return 2


def _join_subcommand(argv: list[str]) -> list[str]:
    """`gpt2 finetune predict ...` -> `gpt2 finetune-predict ...`: a command that has a subcommand of its own
    (argparse cannot give one name both options and subcommands)."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            if word in COMMANDS and i + 1 < len(argv) and f"{word} {argv[i + 1]}" in COMMANDS:
                return [*argv[:i], f"{word}-{argv[i + 1]}", *argv[i + 2 :]]
            return argv
    return argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_subcommand(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args._quiet, args._verbose)
    try:
        cfg = C.resolve(args._cls, C.overrides_from_args(args), args._config_file)
        run(args._name, cfg)
    except GPT2Error as e:
        return user_error(f"gpt2 {args._name}: error: {e}")
    except OSError as e:  # a file the user named: unreadable, a directory, disk full
        if isinstance(e, BrokenPipeError):  # `gpt2 ... | head`
            return 0
        return user_error(f"gpt2 {args._name}: error: {os_error_message(e)}")
    except KeyboardInterrupt:
        print(f"gpt2 {args._name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
