"""Model weights in and out: the project's own format, Hugging Face directories, OpenAI's TF checkpoints.

Three layouts, one entry point each way:

- The project's format (`save_model` / `load_model`): `model.safetensors` holding the
  unwrapped model's state with the tied embedding stored once, `model.json` holding
  the format name, its version and the `GPTConfig` fields, and the tokenizer's files
  (`bpe.json`, `encoder.json`, `vocab.bpe`) when there is one.
- Hugging Face (`load_model` reads it, `export_hf` writes it): `config.json` +
  `model.safetensors` (or a sharded index, or a `pytorch_model.bin` read with
  `torch.load(weights_only=True)`), with `vocab.json` + `merges.txt`. GPT-2 is
  `GPT2LMHeadModel`; the GPT-1 variant (`norm="post"`) is `OpenAIGPTLMHeadModel`.
  HF stores the four projection matrices as `Conv1D` weights of shape (in, out), the
  transpose of `nn.Linear`'s (out, in); that transpose is the only conversion.
- OpenAI's original release (`load_model` reads it): `hparams.json` + a TensorFlow
  checkpoint `model.ckpt.{index,data-00000-of-00001}` (github.com/openai/gpt-2,
  download_model.py). TensorFlow is not needed: a checkpoint is a LevelDB-style
  table of tensor names -> (offset, size) records plus a raw data file, read here
  in ~100 lines (`read_tf_checkpoint`).

Nothing is ever unpickled except through `torch.load(weights_only=True)`. Every
directory is written atomically (into a temporary sibling, then renamed; its files
end with the permissions a plain write would give them, see gpt2/atomic.py), and
a directory that already holds a different model is not overwritten unless asked.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import logging
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gpt2.atomic import make_ordinary, temporary_dir
from gpt2.errors import GPT2Error
from gpt2.model import GPT, GPTConfig
from gpt2.tokenizer import ENDOFTEXT, Tokenizer

log = logging.getLogger(__name__)

FORMAT_NAME = "gpt2-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"

# Hugging Face's Conv1D layers hold (in, out) matrices; nn.Linear holds (out, in).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------
# the model's state


def unwrap(model: nn.Module) -> GPT:
    """The GPT inside torch.compile (`_orig_mod`) and DDP / FSDP (`module`) wrappers."""
    while not isinstance(model, GPT):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"expected a gpt2.model.GPT (possibly compiled or wrapped), got {type(model).__name__}")
        model = inner
    return model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped model's tensors on the CPU, the tied output embedding (lm_head.weight) left out."""
    state = {}
    for name, t in unwrap(model).state_dict().items():
        if name == "lm_head.weight":  # the same tensor as transformer.wte.weight
            continue
        if hasattr(t, "full_tensor"):  # a DTensor sharded by FSDP: gather it
            t = t.full_tensor()
        state[name] = t.detach().to("cpu").contiguous()
    return state


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _build(
    config: GPTConfig,
    state: dict[str, torch.Tensor],
    device,
    dtype,
    source: str,
    names: Callable[[str], str] = lambda n: n,
    layout: Callable[[str, tuple], tuple] = lambda n, shape: shape,
) -> GPT:
    """A GPT with exactly the tensors of `state` (our names and layouts).

    For messages, `names` maps one of our names to the tensor's name in `source`,
    and `layout` one of our shapes to that file's layout (e.g. transposed).
    """
    with torch.device("meta"):
        model = GPT(config)  # no memory and no random init for weights about to be replaced
    expected = {k: v.shape for k, v in model.state_dict().items() if k != "lm_head.weight"}
    for name, shape in expected.items():
        if name not in state:
            raise GPT2Error(f"{source} lacks the tensor {names(name)} (shape {layout(name, tuple(shape))}) that its config needs")
        if state[name].shape != shape:
            raise GPT2Error(
                f"tensor {names(name)} in {source} has shape {layout(name, tuple(state[name].shape))} "
                f"but its config needs {layout(name, tuple(shape))}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise GPT2Error(f"{source} has the tensor {names(extra[0])}, which a model of this config does not have")
    state = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # re-tie: assign replaced the Parameter
    return model


def _repad(config: GPTConfig, state: dict[str, torch.Tensor], pad_vocab_to: int | None) -> GPTConfig:
    """Re-pad the embedding to a multiple of `pad_vocab_to` (zero rows; logits are cut back, so results do not change)."""
    if pad_vocab_to is None or pad_vocab_to == config.pad_vocab_to:
        return config
    config = dataclasses.replace(config, pad_vocab_to=pad_vocab_to)
    wte = state["transformer.wte.weight"][: config.vocab_size]
    extra = config.padded_vocab_size - config.vocab_size
    state["transformer.wte.weight"] = torch.cat([wte, wte.new_zeros(extra, wte.shape[1])]) if extra else wte
    return config


# ----------------------------------------------------------------------------
# writing directories atomically


# the file that says which kind of model a directory holds -> that kind, in words
KINDS = {
    MODEL_JSON: "a model in this project's format",
    "config.json": "a Hugging Face model",
    "hparams.json": "OpenAI's TensorFlow checkpoint",
    "state.json": "a training checkpoint",
}


def _write_dir(directory: Path, write: Callable[[Path], None], overwrite: bool, what: str) -> Path:
    """Run `write(tmp)` into a temporary sibling of `directory`, then move its files into `directory`.

    A new directory appears complete or not at all (one rename). Into an existing
    one each file is replaced atomically, weights before the description file, and
    only after checking that nothing different would be overwritten: neither a
    different model of the same kind nor a model of another kind (whose description
    file, left beside the new weights, would misdescribe them; with `overwrite` it goes).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise GPT2Error(f"{directory} is a file; give a directory to write the {what} into")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(directory)
    try:
        write(tmp)
        for path in tmp.iterdir():  # safetensors writes private files: give each the mode a plain write would
            make_ordinary(path, like=directory / path.name)
        if not directory.exists():
            os.rename(tmp, directory)
            return directory
        names = sorted(p.name for p in tmp.iterdir())
        others = [f for f in KINDS if f not in names and (directory / f).is_file()]  # another kind of model is there
        if not overwrite:
            replace = "choose another directory or pass --force (overwrite=True in Python) to replace it"
            if others:
                raise GPT2Error(f"{directory} already holds {KINDS[others[0]]} ({others[0]}), not a {what}; {replace}")
            for name in names:
                if (directory / name).exists() and not filecmp.cmp(tmp / name, directory / name, shallow=False):
                    raise GPT2Error(f"{directory} already holds a different {what} ({name} differs); {replace}")
        for name in others:  # the replaced model's description goes first: the folder never describes weights wrongly
            (directory / name).unlink()
        for name in sorted(names, key=lambda n: n in KINDS):  # description last
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------
# the project's format


def save_model(
    model: nn.Module,
    directory: str | Path,
    tokenizer: Tokenizer | None = None,
    *,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write `model` (unwrapped from compile / DDP / FSDP) and `tokenizer` in the project's format; returns the directory.

    `extra(folder)` writes more files beside them (a fine-tuned model's head), in the same atomic write.
    Under torch.distributed call it on every rank if the model is FSDP-sharded
    (gathering needs all of them) and let only rank 0 pass through to the write.
    """
    gpt = unwrap(model)
    state = model_state(gpt)
    dtypes = {t.dtype for t in state.values()}
    description = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": dataclasses.asdict(gpt.config),
        "dtype": _dtype_name(next(iter(dtypes))) if len(dtypes) == 1 else "mixed",
        "num_params": gpt.num_params(),
    }
    if tokenizer is not None and tokenizer.n_vocab > gpt.config.vocab_size:
        raise GPT2Error(f"the tokenizer has {tokenizer.n_vocab} tokens but the model only {gpt.config.vocab_size}; they do not belong together")

    def write(tmp: Path) -> None:
        _save_safetensors(state, tmp / WEIGHTS)
        _write_json(tmp / MODEL_JSON, description)
        if tokenizer is not None:
            tokenizer.save(tmp)
        if extra is not None:
            extra(tmp)

    path = _write_dir(Path(directory), write, overwrite, "model in this project's format")
    log.info("saved %s (%s parameters, %s) to %s", type(gpt).__name__, f"{gpt.num_params():,}", description["dtype"], path)
    return path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GPT2Error(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise GPT2Error(f"{path} should hold a JSON object")
    return data


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise GPT2Error(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise GPT2Error(f"{path} is not a readable safetensors file ({e})") from None


def _config_from(fields: dict, source: Path) -> GPTConfig:
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise GPT2Error(f"{source}: unknown model setting {unknown[0]!r}; was it written by a newer release?")
    try:
        return GPTConfig(**fields)
    except (GPT2Error, TypeError) as e:
        raise GPT2Error(f"{source}: {e}") from None


def _load_own(directory: Path, device, dtype, pad_vocab_to) -> GPT:
    description = _read_json(directory / MODEL_JSON)
    if description.get("format") != FORMAT_NAME:
        raise GPT2Error(f"{directory / MODEL_JSON} is not a {FORMAT_NAME} description (format {description.get('format')!r})")
    if description.get("version") != FORMAT_VERSION:
        raise GPT2Error(
            f"{directory / MODEL_JSON} has format version {description.get('version')}; this release reads version {FORMAT_VERSION}"
        )
    if not isinstance(description.get("config"), dict):
        raise GPT2Error(f"{directory / MODEL_JSON} lacks the model's config")
    config = _config_from(description["config"], directory / MODEL_JSON)
    state = _load_safetensors(directory / WEIGHTS)
    config = _repad(config, state, pad_vocab_to)
    return _build(config, state, device, dtype, str(directory / WEIGHTS))


# ----------------------------------------------------------------------------
# Hugging Face


def _hf_config(data: dict, source: Path) -> tuple[GPTConfig, str]:
    """GPTConfig for a Hugging Face config.json ('gpt2' or 'openai-gpt'), refusing variants this model cannot run."""
    kind = data.get("model_type")
    if kind not in ("gpt2", "openai-gpt"):
        raise GPT2Error(f"{source}: model_type {kind!r} is not supported; expected 'gpt2' (or 'openai-gpt' for GPT-1)")
    n_embd = data.get("n_embd", 768)
    checks = {  # setting: (value, what this model computes)
        "n_inner": (data.get("n_inner"), (None, 4 * n_embd)),
        "scale_attn_weights": (data.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (data.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "add_cross_attention": (data.get("add_cross_attention", False), (False,)),
        "tie_word_embeddings": (data.get("tie_word_embeddings", True), (True,)),
    }
    if kind == "gpt2":  # both spellings of GELU's tanh approximation
        checks["activation_function"] = (data.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh"))
    else:  # HF's OpenAIGPT maps afn "gelu" to the tanh form, as GPT-1's code had it
        checks["afn"] = (data.get("afn", "gelu"), ("gelu",))
    for name, (value, allowed) in checks.items():
        if value not in allowed:
            raise GPT2Error(f"{source}: {name}={value!r} is not supported by this GPT-2 implementation (it needs {allowed[0]!r})")
    try:
        config = GPTConfig(
            block_size=data.get("n_positions", data.get("n_ctx", 1024 if kind == "gpt2" else 512)),
            vocab_size=data.get("vocab_size", 50257 if kind == "gpt2" else 40478),
            n_layer=data.get("n_layer", 12),
            n_head=data.get("n_head", 12),
            n_embd=n_embd,
            dropout=data.get("resid_pdrop", 0.1),
            norm="pre" if kind == "gpt2" else "post",
            layer_norm_epsilon=data.get("layer_norm_epsilon", 1e-5),
        )
    except GPT2Error as e:
        raise GPT2Error(f"{source}: {e}") from None
    return config, kind


# our parameter name -> Hugging Face's, per model_type (the block names agree)
_HF_EMBEDDINGS = {
    "gpt2": {"transformer.wte.weight": "transformer.wte.weight", "transformer.wpe.weight": "transformer.wpe.weight"},
    "openai-gpt": {"transformer.wte.weight": "transformer.tokens_embed.weight", "transformer.wpe.weight": "transformer.positions_embed.weight"},
}


def _to_hf_name(name: str, kind: str) -> str:
    return _HF_EMBEDDINGS[kind].get(name, name)


def _read_hf_tensors(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of a HF directory: model.safetensors, its sharded index, or pytorch_model.bin (weights_only)."""
    if (directory / "model.safetensors").is_file():
        return _load_safetensors(directory / "model.safetensors"), directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise GPT2Error(f"{index} lacks its weight_map")
        state = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_load_safetensors(directory / shard))
        return state, index
    binary = directory / "pytorch_model.bin"
    if binary.is_file():
        try:
            state = torch.load(binary, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise GPT2Error(f"{binary} holds more than tensors, and it is not safe to unpickle ({str(e).splitlines()[0]})") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise GPT2Error(f"{binary} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise GPT2Error(f"{binary} is not a state dict of tensors")
        return state, binary
    raise GPT2Error(f"{directory} has config.json but no weights: expected model.safetensors or pytorch_model.bin")


def _load_hf(directory: Path, device, dtype, pad_vocab_to) -> GPT:
    config, kind = _hf_config(_read_json(directory / "config.json"), directory / "config.json")
    tensors, source = _read_hf_tensors(directory)
    ours_of = {_to_hf_name(k, kind): k for k in _HF_EMBEDDINGS[kind]}
    state = {}
    lm_head = None
    for name, t in tensors.items():
        # files written by old releases of transformers lack the "transformer." prefix and carry
        # the causal-mask buffers attn.bias / attn.masked_bias, which are not weights
        full = name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
        if full.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if full == "lm_head.weight":
            lm_head = t
            continue
        ours = ours_of.get(full, full)
        state[ours] = t.t() if ours.endswith(CONV1D) and t.dim() == 2 else t
    if lm_head is not None and "transformer.wte.weight" in state:
        wte = state["transformer.wte.weight"]
        if lm_head.shape != wte.shape or not torch.equal(lm_head, wte):
            raise GPT2Error(f"{source}: lm_head.weight differs from the token embedding; this model ties them")

    config = _repad(config, state, pad_vocab_to) if "transformer.wte.weight" in state else config
    return _build(
        config, state, device, dtype, str(source),
        names=lambda n: _to_hf_name(n, kind),
        layout=lambda n, shape: shape[::-1] if n.endswith(CONV1D) else shape,
    )


def export_hf(
    model: nn.Module,
    directory: str | Path,
    tokenizer: Tokenizer | None = None,
    *,
    overwrite: bool = False,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    config_updates: dict | None = None,
) -> Path:
    """Write a Hugging Face directory that `transformers` loads: GPT2LMHeadModel (or OpenAIGPTLMHeadModel for norm="post").

    With a tokenizer, `vocab.json` + `merges.txt` + `tokenizer_config.json` are written too,
    so `GPT2Tokenizer.from_pretrained` (and AutoTokenizer) load the same tokenizer; special tokens
    beyond <|endoftext|> (fine-tuning's) are declared as such. `extra_tensors` and `config_updates`
    add a head (a fine-tuned model's, as GPT2DoubleHeadsModel) in the same atomic write.
    """
    gpt = unwrap(model)
    config = gpt.config
    kind = "gpt2" if config.norm == "pre" else "openai-gpt"
    state = model_state(gpt)
    state["transformer.wte.weight"] = state["transformer.wte.weight"][: config.vocab_size].clone()  # drop padding rows
    if not config.bias:  # HF's GPT-2 always has biases: zeros compute the same function
        with torch.device("meta"):
            biased = GPT(dataclasses.replace(config, bias=True)).state_dict()
        for name, t in biased.items():
            if name not in state and name != "lm_head.weight":
                state[name] = torch.zeros(t.shape, dtype=state["transformer.wte.weight"].dtype)
    hf_state = {}
    for name, t in state.items():
        hf_state[_to_hf_name(name, kind)] = t.t().contiguous() if name.endswith(CONV1D) else t
    dtype = _dtype_name(state["transformer.wte.weight"].dtype)
    eot = tokenizer.eot_token if tokenizer is not None else (50256 if config.vocab_size == 50257 else None)
    common = {"vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": config.n_embd,
              "n_layer": config.n_layer, "n_head": config.n_head, "layer_norm_epsilon": config.layer_norm_epsilon,
              "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
              "initializer_range": 0.02, "tie_word_embeddings": True, "dtype": dtype}
    if kind == "gpt2":
        hf_config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common, "n_inner": None,
                     "activation_function": "gelu_new", "scale_attn_weights": True, "use_cache": True,
                     "bos_token_id": eot, "eos_token_id": eot}
    else:
        hf_config = {"architectures": ["OpenAIGPTLMHeadModel"], "model_type": "openai-gpt", **common, "afn": "gelu"}
    if tokenizer is not None and tokenizer.n_vocab > config.vocab_size:
        raise GPT2Error(f"the tokenizer has {tokenizer.n_vocab} tokens but the model only {config.vocab_size}; they do not belong together")
    hf_state.update({k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    hf_config.update(config_updates or {})

    def write(tmp: Path) -> None:
        _save_safetensors(hf_state, tmp / "model.safetensors")
        _write_json(tmp / "config.json", hf_config)
        if tokenizer is not None:
            files = tmp / "tokenizer"
            files.mkdir()
            tokenizer.save_openai(files)  # GPT-2: encoder.json + vocab.bpe are HF's vocab.json + merges.txt; GPT-1: those
            for ours, theirs in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt"), ("vocab.json", "vocab.json"), ("merges.txt", "merges.txt")):
                if (files / ours).exists():
                    os.replace(files / ours, tmp / theirs)
            files.rmdir()
            from gpt2.gpt1_tokenizer import Gpt1Tokenizer

            gpt1 = isinstance(tokenizer, Gpt1Tokenizer)  # GPT-1's word-level BPE
            tok_config = {"tokenizer_class": "OpenAIGPTTokenizer" if gpt1 else "GPT2Tokenizer", "model_max_length": config.block_size}
            if not gpt1:
                tok_config["add_prefix_space"] = False
            if ENDOFTEXT in tokenizer.special_tokens:
                tok_config.update(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
            others = [t for t in tokenizer.special_tokens if t != ENDOFTEXT]
            if others:
                tok_config["additional_special_tokens"] = others
            _write_json(tmp / "tokenizer_config.json", tok_config)

    path = _write_dir(Path(directory), write, overwrite, "Hugging Face model")
    log.info("exported a Hugging Face %s model to %s", hf_config["architectures"][0], path)
    return path


# ----------------------------------------------------------------------------
# OpenAI's TensorFlow checkpoints


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _protobuf_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a serialized protobuf message (varints, fixed ints and byte strings)."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _table_block(data: bytes, handle: bytes, source: Path) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one block of a LevelDB table (keys are prefix-compressed)."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    block = data[offset : offset + size]
    if len(block) != size or data[offset + size : offset + size + 1] != b"\x00":
        raise GPT2Error(f"{source} has a truncated or compressed block; only uncompressed checkpoints can be read")
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * n_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + n_value]))
        pos += n_value
    return entries


_TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 14: "bfloat16", 19: np.float16}


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow (V2) checkpoint `prefix.index` + `prefix.data-*`, without TensorFlow.

    The index is a LevelDB table (github.com/google/leveldb, doc/table_format.md)
    whose keys are tensor names and whose values are BundleEntryProto records
    (tensorflow/core/protobuf/tensor_bundle.proto): dtype, shape, shard, offset, size.
    """
    prefix = Path(prefix)
    index = prefix.with_name(prefix.name + ".index")
    try:
        data = index.read_bytes()
    except FileNotFoundError:
        raise GPT2Error(f"TensorFlow checkpoint index {index} does not exist") from None
    # footer: metaindex handle, index handle (varints, padded to 40 bytes), then the 8-byte magic number
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != 0xDB4775248B80FB57:
        raise GPT2Error(f"{index} is not a TensorFlow checkpoint index")
    footer = data[-48:-8]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # skip the metaindex handle
    records: dict[str, bytes] = {}
    try:
        for _, handle in _table_block(data, footer[pos:], index):
            for key, value in _table_block(data, handle, index):
                records[key.decode("utf-8")] = value
    except (IndexError, struct.error) as e:
        raise GPT2Error(f"{index} is corrupt ({e})") from None
    header = dict(_protobuf_fields(records.pop("", b"")))
    if header.get(2, 0) != 0:
        raise GPT2Error(f"{index} was written on a big-endian machine; only little-endian checkpoints can be read")
    n_shards = header.get(1, 1)
    shards: dict[int, np.memmap] = {}
    tensors = {}
    for name, record in records.items():
        fields = _protobuf_fields(record)
        entry = dict(fields)
        if 7 in entry:
            raise GPT2Error(f"{index}: tensor {name} is stored in slices, which this reader does not support")
        dtype = _TF_DTYPES.get(entry.get(1, 0))
        if dtype is None:
            raise GPT2Error(f"{index}: tensor {name} has TensorFlow dtype {entry.get(1)}, which this reader does not support")
        shape = [dict(_protobuf_fields(dim)).get(1, 0) for n, dim in _protobuf_fields(entry.get(2, b"")) if n == 2]
        shard = entry.get(3, 0)
        if shard not in shards:
            path = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{n_shards:05d}")
            if not path.is_file():
                raise GPT2Error(f"checkpoint data file {path} does not exist")
            shards[shard] = np.memmap(path, dtype=np.uint8, mode="r")
        offset, size = entry.get(4, 0), entry.get(5, 0)
        raw = np.asarray(shards[shard][offset : offset + size])
        if raw.size != size:
            raise GPT2Error(f"checkpoint data for {name} is truncated ({raw.size} of {size} bytes)")
        if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into a float32's high half
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.view(np.dtype(dtype).newbyteorder("<"))
        if array.size != int(np.prod(shape)):
            raise GPT2Error(f"{index}: tensor {name} holds {array.size} values but its shape is {shape}")
        tensors[name] = array.reshape(shape).copy()
    return tensors


def _openai_checkpoint_prefix(directory: Path) -> Path:
    """The checkpoint named by the directory's `checkpoint` file, else its only *.index file."""
    pointer = directory / "checkpoint"
    if pointer.is_file():
        for line in pointer.read_text(encoding="utf-8").splitlines():
            if line.startswith("model_checkpoint_path:"):
                return directory / Path(line.split(":", 1)[1].strip().strip('"')).name
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) != 1:
        raise GPT2Error(f"{directory} has hparams.json but {len(indexes)} checkpoint .index files; expected exactly one")
    return indexes[0].with_suffix("")


def _load_openai(directory: Path, device, dtype, pad_vocab_to) -> GPT:
    hparams = _read_json(directory / "hparams.json")
    try:
        config = GPTConfig(
            block_size=hparams["n_ctx"], vocab_size=hparams["n_vocab"], n_layer=hparams["n_layer"],
            n_head=hparams["n_head"], n_embd=hparams["n_embd"],
        )
    except KeyError as e:
        raise GPT2Error(f"{directory / 'hparams.json'} lacks {e.args[0]!r}") from None
    except GPT2Error as e:
        raise GPT2Error(f"{directory / 'hparams.json'}: {e}") from None
    prefix = _openai_checkpoint_prefix(directory)
    tensors = read_tf_checkpoint(prefix)
    with torch.device("meta"):
        ours_by_name = {_openai_name(n): n for n in GPT(config).state_dict() if n != "lm_head.weight"}
    state = {}
    for name, array in tensors.items():
        if not name.startswith("model/"):
            continue  # e.g. a step counter
        t = torch.from_numpy(array)
        if name.endswith("/w"):  # conv1d weights are [1, in, out]
            if t.dim() != 3 or t.shape[0] != 1:
                raise GPT2Error(f"tensor {name} in {prefix}.index has shape {tuple(t.shape)}; expected [1, in, out]")
            t = t[0].t()
        state[ours_by_name.get(name, name)] = t
    config = _repad(config, state, pad_vocab_to) if "transformer.wte.weight" in state else config
    return _build(
        config, state, device, dtype, f"{prefix}.index",
        names=lambda n: _openai_name(n) if n.startswith("transformer.") else n,
        layout=lambda n, shape: (1, *shape[::-1]) if n.endswith(CONV1D) else shape,
    )


def _openai_name(ours: str) -> str:
    """Our parameter name -> OpenAI's variable name (openai/gpt-2 model.py): model/h0/attn/c_attn/w, model/ln_f/g, ..."""
    parts = ours.removeprefix("transformer.").split(".")
    if parts[0] in ("wte", "wpe"):
        return f"model/{parts[0]}"
    if parts[0] == "h":
        parts = [f"h{parts[1]}", *parts[2:]]
    leaf = {"bias": "b", "weight": "g" if parts[-2].startswith("ln_") else "w"}[parts[-1]]
    return "/".join(["model", *parts[:-1], leaf])


# ----------------------------------------------------------------------------
# loading any layout


def _load_checkpoint(directory: Path, device, dtype, pad_vocab_to) -> GPT:
    """The weights of a training checkpoint (gpt2.checkpoint): model.safetensors + state.json's model_config."""
    from gpt2 import checkpoint

    state = _read_json(directory / "state.json")
    if state.get("format") != checkpoint.FORMAT or state.get("format_version") != checkpoint.VERSION:
        raise GPT2Error(f"{directory / 'state.json'} is not the state of a version-{checkpoint.VERSION} {checkpoint.FORMAT}")
    if not isinstance(state.get("model_config"), dict):
        raise GPT2Error(f"{directory / 'state.json'} lacks the model's config")
    config = _config_from(state["model_config"], directory / "state.json")
    weights = _load_safetensors(directory / WEIGHTS)
    config = _repad(config, weights, pad_vocab_to)
    return _build(config, weights, device, dtype, str(directory / WEIGHTS))


def _checkpoint_tokenizer(directory: Path) -> Tokenizer | None:
    """The tokenizer a checkpoint was trained with: the one `gpt2 prepare` stored beside its token shards,
    if that dataset is still the one trained on (its fingerprint is in the checkpoint)."""
    from gpt2.data.shards import MANIFEST

    state = _read_json(directory / "state.json")
    try:
        data_dir = Path(state["config"]["data"]["dir"])
        manifest = json.loads((data_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: its dataset's tokenizer was not found; pass --tokenizer", directory)
        return None
    if manifest.get("fingerprint") != state.get("dataset"):
        log.warning("%s: %s now holds another dataset than the one trained on; pass --tokenizer", directory, data_dir)
        return None
    return Tokenizer.load(data_dir / "tokenizer")


def resolve_run(directory: Path) -> Path:
    """A training run's folder stands for its exported model (OUT/model), or while it trains for its newest checkpoint."""
    from gpt2 import checkpoint

    if not (directory / "checkpoints").is_dir() or any((directory / f).is_file() for f in (MODEL_JSON, "config.json", "hparams.json", "state.json")):
        return directory
    newest = checkpoint.latest(directory / "checkpoints")
    if (directory / "model" / MODEL_JSON).is_file():
        exported = directory / "model"
        if newest is not None and (newest / "state.json").stat().st_mtime > (exported / MODEL_JSON).stat().st_mtime:
            log.warning("%s: the exported model is older than the newest checkpoint %s; loading the export", directory, newest.name)
        log.info("%s is a training run: loading its exported model, %s", directory, exported)
        return exported
    if newest is None:
        raise GPT2Error(f"{directory} is a training run without a finished checkpoint yet; train longer or give another model")
    log.info("%s is a training run without an exported model: loading its newest checkpoint, %s", directory, newest)
    return newest


def detect_layout(directory: Path) -> str:
    """'gpt2' (this project), 'checkpoint' (a training checkpoint of this project), 'hf' (Hugging Face)
    or 'openai' (OpenAI's TF release), from the files present."""
    if (directory / MODEL_JSON).is_file():
        return "gpt2"
    if (directory / "state.json").is_file() and (directory / WEIGHTS).is_file():
        return "checkpoint"
    if (directory / "config.json").is_file():
        return "hf"
    if (directory / "hparams.json").is_file():
        return "openai"
    raise GPT2Error(
        f"{directory} holds no model: expected {MODEL_JSON} + {WEIGHTS} (this project; or a training run's folder, "
        f"or one of its checkpoints/step_N), config.json + "
        f"model.safetensors or pytorch_model.bin (Hugging Face), or hparams.json + model.ckpt.* (OpenAI)"
    )


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, *, pad_vocab_to: int | None = None
) -> tuple[GPT, Tokenizer | None]:
    """Load a model directory in any of the layouts above (or a training run's folder, or one of its
    checkpoints), and its tokenizer if the directory has one.

    `dtype` None keeps the stored precision. `pad_vocab_to` re-pads the embedding
    matrix (e.g. 64 or 128 for faster matmuls; results are unchanged). The model
    is returned in eval mode.
    """
    path = Path(path)
    if not path.exists():
        raise GPT2Error(f"model directory {path} does not exist")
    if path.is_file():
        if path.name not in (MODEL_JSON, WEIGHTS, "config.json", "pytorch_model.bin", "hparams.json"):
            raise GPT2Error(f"{path} is a file; give the directory that holds the model")
        path = path.parent
    path = resolve_run(path)
    layout = detect_layout(path)
    loader = {"gpt2": _load_own, "checkpoint": _load_checkpoint, "hf": _load_hf, "openai": _load_openai}[layout]
    model = loader(path, device, dtype, pad_vocab_to)
    model.eval()
    tokenizer = None
    if any((path / f).is_file() for f in ("bpe.json", "encoder.json", "vocab.json")):
        tokenizer = Tokenizer.load(path)
    elif layout == "checkpoint":
        tokenizer = _checkpoint_tokenizer(path)
    if tokenizer is not None:
        if tokenizer.n_vocab > model.config.vocab_size:
            raise GPT2Error(
                f"the tokenizer in {path} has {tokenizer.n_vocab} tokens but the model only {model.config.vocab_size}; "
                f"they do not belong together"
            )
    log.info("loaded %s (%s parameters, %s layout) from %s", type(model).__name__, f"{model.num_params():,}", layout, path)
    return model, tokenizer


def load_model_and_tokenizer(
    path: str | Path, tokenizer: str | None = None, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[GPT, Tokenizer]:
    """A model (`load_model`) with the tokenizer to use with it: `tokenizer` (a directory or 'gpt2',
    refused if the model directory has a different one of its own), else the model directory's own,
    else OpenAI's GPT-2 tokenizer for a 50,257-token model."""
    from gpt2.tokenizer import load_tokenizer

    model, own = load_model(path, device=device, dtype=dtype)
    if tokenizer is not None:
        chosen = load_tokenizer(tokenizer)
        if own is not None and chosen.fingerprint() != own.fingerprint():
            raise GPT2Error(f"--tokenizer {tokenizer} differs from the tokenizer saved with the model; drop --tokenizer to use the model's")
    elif own is not None:
        chosen = own
    elif model.config.vocab_size == 50257:
        chosen = load_tokenizer("gpt2")
    else:
        raise GPT2Error(f"the model directory has no tokenizer and the model has {model.config.vocab_size} tokens; pass --tokenizer DIR")
    if chosen.n_vocab > model.config.vocab_size:
        raise GPT2Error(
            f"the tokenizer has {chosen.n_vocab} tokens but the model only {model.config.vocab_size}; wrong tokenizer for this model"
        )
    return model, chosen


# ----------------------------------------------------------------------------
# gpt2 convert


def convert_command(cfg) -> Path:
    """`gpt2 convert`."""
    from gpt2.tokenizer import load_tokenizer

    source, target = Path(cfg.input), Path(cfg.output)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise GPT2Error("--output is the --input directory; write the converted model somewhere else")
    layout = detect_layout(resolve_run(source)) if source.is_dir() else None
    if source.is_dir() and (resolve_run(source) / "finetune.json").is_file():  # a fine-tuned model: its head goes along
        from gpt2.finetune.hf import convert_task_model

        return convert_task_model(resolve_run(source), target, cfg)
    model, tokenizer = load_model(source, dtype=None if cfg.dtype == "keep" else DTYPES[cfg.dtype])
    if cfg.tokenizer is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
        if tokenizer.n_vocab > model.config.vocab_size:
            raise GPT2Error(
                f"--tokenizer has {tokenizer.n_vocab} tokens but the model only {model.config.vocab_size}; wrong tokenizer for this model?"
            )
    if cfg.to == "hf":
        export_hf(model, target, tokenizer, overwrite=cfg.force)
    else:
        save_model(model, target, tokenizer, overwrite=cfg.force)
    dtype = _dtype_name(model.lm_head.weight.dtype)
    log.info(
        "converted %s (%s layout) -> %s (%s format): %s parameters, %s%s",
        source, layout or "?", target, cfg.to, f"{model.num_params():,}", dtype, ", with its tokenizer" if tokenizer else "",
    )
    return target


# ----------------------------------------------------------------------------
# gpt2 presets

# the sizes OpenAI gives for its released checkpoints (the paper's Table 2 says 117M, 345M, 762M, 1542M)
RELEASED = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M", "gpt1": "117M"}


def presets_command(cfg) -> dict[str, int]:
    """`gpt2 presets`: print a table of the presets; returns their parameter counts."""
    import sys

    from gpt2.model import PRESETS

    counts = {}
    lines = [f"{'preset':12s} {'layers':>6s} {'width':>6s} {'heads':>6s} {'context':>8s} {'vocab':>7s} {'norm':>5s} {'parameters':>14s}  released as"]
    for name in PRESETS:
        config = GPTConfig.from_name(name, pad_vocab_to=cfg.pad_vocab_to)
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            counts[name] = GPT(config).num_params()
        lines.append(
            f"{name:12s} {config.n_layer:6d} {config.n_embd:6d} {config.n_head:6d} {config.block_size:8d} {config.vocab_size:7d} "
            f"{config.norm:>5s} {counts[name]:14,d}  {RELEASED[name]}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return counts
