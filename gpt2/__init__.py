"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners")
with GPT-1's fine-tuning recipe (Radford et al. 2018).

The public API, stage by stage:

    Tokenizer             byte-level BPE (paper section 2.2)         gpt2.tokenizer
    GPT, GPTConfig        the Transformer LM (section 2.3)           gpt2.model
    load_model_and_tokenizer   a model directory and its tokenizer   gpt2.weights
    SamplingParams, generate, stream   generation (section 3)        gpt2.sample

Modules that need torch are imported on first use, so `import gpt2` and the
tokenizer commands start quickly.
"""

import importlib

from gpt2.errors import GPT2Error
from gpt2.tokenizer import Tokenizer

__version__ = "0.1.0"

_LAZY = {
    "GPT": "gpt2.model",
    "GPTConfig": "gpt2.model",
    "load_model_and_tokenizer": "gpt2.weights",
    "SamplingParams": "gpt2.sample",
    "generate": "gpt2.sample",
    "stream": "gpt2.sample",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpt2' has no attribute {name!r}")


__all__ = ["GPT2Error", "Tokenizer", "__version__", *_LAZY]
