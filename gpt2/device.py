"""Where a model runs and in what precision: the one place that parses --device and --dtype.

Generation, serving, evaluation and training all take a device name (cpu,
cuda, cuda:N, mps, or auto) and a dtype name; this module turns them into
torch objects, refusing at once a device this machine cannot use. It sits
below everything that runs a model (gpt2/distributed.py builds on it), so that
generation does not depend on the distributed layer.
"""

from __future__ import annotations

import torch

from gpt2.errors import GPT2Error

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def parse_device(spec: str) -> torch.device:
    """The device named by --device (cpu, cuda, cuda:N, mps), refused at once if this machine cannot use it."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise GPT2Error(f"--device {spec!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GPT2Error(f"--device {spec}: PyTorch sees no CUDA GPU on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GPT2Error(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    elif device.type == "mps":
        if not _mps_available():
            raise GPT2Error(f"--device {spec}: this PyTorch has no usable Apple GPU (MPS); use --device cpu")
    elif device.type != "cpu":
        raise GPT2Error(f"--device {spec}: only cpu, cuda and mps devices are supported")
    return device


def resolve_device(spec: str, local_rank: int = 0, *, mps: bool = False) -> torch.device:
    """'auto' -> this process's GPU if there is one (an Apple GPU too, with `mps`), else the CPU;
    otherwise the device named ('cuda' alone: the GPU of this process's local rank)."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if mps and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = parse_device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def choose_dtype(name: str, device: torch.device) -> torch.dtype:
    """--dtype: 'auto' is bfloat16 on a GPU that has it, else float32; otherwise the dtype named."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise GPT2Error(f"--dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]
