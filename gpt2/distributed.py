"""Everything torch.distributed: process groups under torchrun, DDP and FSDP2, collectives, full state dicts.

The model is written for one device (gpt2/model.py); data parallelism is
applied from outside, here, as torchtitan does:

- DDP (Li et al. 2020, "PyTorch Distributed"): every process holds the whole
  model and gradients are averaged with all-reduce (nccl on GPUs, gloo on CPUs).
- FSDP2 (`torch.distributed.fsdp.fully_shard`, ZeRO-3 style, Rajbhandari et al.
  2020): each Transformer block is one unit whose parameters, gradients and
  optimizer state are sharded across processes and gathered only while the
  block runs; the embeddings and final LayerNorm form the root unit.

`torchrun` sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here
is a no-op and training runs in one process. Multi-node runs use the same code
with torchrun's rendezvous flags (docs/training.md).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from gpt2.device import parse_device, resolve_device  # noqa: F401  (device choice lives in gpt2/device.py)

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """Where this process runs: its rank among `world` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init(device_spec: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (nccl for GPUs, gloo for CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=30)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        log.info("joined a process group of %d (%s); rank 0 is speaking", world, backend)
    return Dist(rank, world, local_rank, device)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, blocks: list[nn.Module], d: Dist, parallel: str, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Apply data parallelism to `module` (whose Transformer blocks are `blocks`); unchanged in one process.

    FSDP2 shards each block as its own unit, then the root (embeddings, final
    LayerNorm); with `param_dtype` the gathered parameters are cast to it
    (mixed precision) while gradients are reduced in float32.
    """
    if not d.enabled:
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [d.device.index] if d.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype is not None else MixedPrecisionPolicy()
    for i, block in enumerate(blocks):
        # the last block's parameters are needed again at once by the backward pass: keep them gathered
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(module, mesh=mesh, mp_policy=mp)
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers (FSDP2 shards in place and has no wrapper)."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool):
    """Run forward and backward with (enabled) or without gradient synchronisation across processes.

    Gradient accumulation only needs the sum of gradients at the last micro-batch,
    so the others skip the all-reduce (DDP) or reduce-scatter (FSDP2).
    """
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper, if any
    if isinstance(inner, nn.parallel.DistributedDataParallel) and not enabled:
        with inner.no_sync():
            yield
        return
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2
        inner.set_requires_gradient_sync(enabled)
    yield


def is_fsdp(model: nn.Module) -> bool:
    return hasattr(unwrap(model), "set_requires_gradient_sync")


def all_reduce(tensor: torch.Tensor, d: Dist, op: str = "sum") -> torch.Tensor:
    """Sum (or average) a tensor over all processes, in place; returns it."""
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        if op == "mean":
            tensor /= d.world
    return tensor


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every process."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The model's and the optimizer's full (unsharded) state dicts, on the CPU of rank 0 (empty elsewhere under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    target = unwrap(model)
    return get_model_state_dict(target, options=options), get_optimizer_state_dict(target, optimizer, options=options)


def full_model_state(model: nn.Module) -> dict:
    """The model's full state dict on the CPU of rank 0 (empty elsewhere under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict, d: Dist) -> None:
    """Load full state dicts held by rank 0 (the other ranks pass empty dicts) into every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=d.enabled)
    target = unwrap(model)
    set_model_state_dict(target, model_state, options=options)
    set_optimizer_state_dict(target, optimizer, optim_state, options=options)
