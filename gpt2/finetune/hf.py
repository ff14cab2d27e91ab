"""A fine-tuned model through `gpt2 convert`: to this project's format with its head, or to Hugging Face's.

transformers has GPT-1's multiple-choice head exactly: `GPT2DoubleHeadsModel`
(and `OpenAIGPTDoubleHeadsModel` for GPT-1's post-LayerNorm network) reads the
hidden state at `mc_token_ids` and applies dropout then a linear layer with a
bias, one logit per choice; its constructor fixes one output per choice. So a
multiple-choice model (Story Cloze, RACE) exports there, with the added tokens
declared as special tokens of the tokenizer; tests/test_finetune.py checks
that transformers then gives our logits. GPT-1's classification head has a
bias and several outputs, which `GPT2ForSequenceClassification` (no bias) and
the double-heads classes (one output) cannot hold, and no class adds the two
orderings of a similarity pair: those models stay in this project's format.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.finetune.run import FINETUNE_JSON, HEAD_WEIGHTS, load_task_model
from gpt2.weights import DTYPES, export_hf, save_model


def convert_task_model(source: Path, target: Path, cfg) -> Path:
    """`gpt2 convert` of a fine-tuned model directory (`cfg`: a ConvertConfig)."""
    model, spec, tokenizer, info = load_task_model(source)
    gpt = model.gpt if cfg.dtype == "keep" else model.gpt.to(DTYPES[cfg.dtype])
    if cfg.to == "gpt2":

        def copy_head(folder: Path) -> None:
            for name in (HEAD_WEIGHTS, FINETUNE_JSON):
                shutil.copyfile(source / name, folder / name)

        return save_model(gpt, target, tokenizer, overwrite=cfg.force, extra=copy_head)
    if spec.kind != "multiple_choice":
        raise GPT2Error(
            f"{source} is fine-tuned for {spec.name} ({spec.kind}); transformers has no class with GPT-1's {spec.kind} head "
            f"(GPT2ForSequenceClassification's layer has no bias; the double-heads models give one output per sequence): "
            f"keep it in this project's format (--to gpt2)"
        )
    kind = "GPT2DoubleHeadsModel" if gpt.config.norm == "pre" else "OpenAIGPTDoubleHeadsModel"
    linear = model.head.linear
    updates = {
        "architectures": [kind],
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_proj_to_labels": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "num_labels": 1,
        "task_specific_params": {"gpt1_finetune": {k: info[k] for k in ("task", "kind", "labels", "special_tokens", "max_len")}},
    }
    tensors = {"multiple_choice_head.summary.weight": linear.weight, "multiple_choice_head.summary.bias": linear.bias}
    return export_hf(gpt, target, tokenizer, overwrite=cfg.force, extra_tensors=tensors, config_updates=updates)
