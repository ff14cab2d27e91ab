"""Typed configuration for every command.

Each command takes one dataclass. Values are resolved in three layers:
defaults, then a TOML file (`--config FILE.toml`), then command-line overrides
(`--field value`, or `--section.field=value` for nested sections). Unknown keys
are errors, values are coerced to the field's type, and each dataclass checks
itself in `__post_init__` with a message a user can act on.

A field's help text lives in its metadata so that `--help` and the docs agree:

    vocab_size: int = opt(50257, "size of the vocabulary, special tokens included")

    core.py         the machinery: fields, TOML, overrides, coercion, argparse
    text.py         tokenizer commands, the demo
    generation.py   sample, serve, presets, convert
    training.py     prepare, train, finetune (+ predict)
    webtext.py      gpt2 webtext: each stage and the build
    evaluation.py   eval, report, the overlap study
"""

from gpt2.errors import ConfigError  # noqa: F401 (raised by every config; importable from here too)
from gpt2.config.core import (  # noqa: F401
    opt,
    check_seed,
    check_output_file,
    from_dict,
    to_dict,
    to_toml,
    load_toml,
    resolve,
    add_arguments,
    overrides_from_args,
)
from gpt2.config.text import (  # noqa: F401
    TokenizerTrainConfig,
    TokenizerEncodeConfig,
    TokenizerDecodeConfig,
    DemoConfig,
)
from gpt2.config.generation import (  # noqa: F401
    SampleConfig,
    ServeConfig,
    PresetsConfig,
    ConvertConfig,
)
from gpt2.config.training import (  # noqa: F401
    PrepareConfig,
    TrainModel,
    TrainData,
    TrainOptim,
    TrainEval,
    TrainCheckpoint,
    TrainLog,
    TrainConfig,
    FinetuneData,
    FinetuneOptim,
    FinetuneEval,
    FinetuneCheckpoint,
    FinetuneLog,
    FinetuneConfig,
    FinetunePredictConfig,
)
from gpt2.config.webtext import (  # noqa: F401
    WebTextEngine,
    WebTextLinks,
    WebTextFetch,
    WebTextExtract,
    WebTextClean,
    WebTextDedup,
    WebTextLinksConfig,
    WebTextFetchConfig,
    WebTextExtractConfig,
    WebTextCleanConfig,
    WebTextDedupConfig,
    WebTextPrepare,
    WebTextDecontaminate,
    WebTextBuildConfig,
)
from gpt2.config.evaluation import (  # noqa: F401
    EvalConfig,
    ReportConfig,
    OverlapBuildConfig,
    OverlapReportConfig,
    OverlapDecontaminateConfig,
)
