"""Speed and scale applied from outside the model, in torchtitan's order: LoRA, activation
checkpointing, torch.compile, FSDP2. The model stays a plain single-device module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its device and its place among the torchrun processes."""
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_runtime(device: str = "auto") -> Runtime:
    """Single process, or the torchrun group (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    from codegemma.device import resolve_device

    device = resolve_device(device).type
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return Runtime(dev, rank, world, local)


def close_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """Recompute a layer's activations in the backward pass: every layer (full) or every N-th."""
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    every = 1 if mode == "full" else int(mode.split("-", 1)[1])
    for i, layer in enumerate(model.layers):
        if i % every == 0:
            model.layers[i] = checkpoint_wrapper(layer, preserve_rng_state=True)


def apply_compile(model: nn.Module) -> None:
    """Compile each decoder layer in place (names unchanged); identical layers share one graph."""
    for layer in model.layers:
        layer.compile(fullgraph=True)


def apply_fsdp(root: nn.Module, layers: nn.ModuleList, param_dtype: torch.dtype | None,
               reduce_dtype: torch.dtype = torch.float32) -> None:
    """FSDP2: shard each decoder layer, then the root (the loss module: embedding + final norm).

    Parameters stay fp32 (the master copy) and sharded; each layer's are gathered in `param_dtype`
    for compute, and gradients are reduced in fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    layers = list(layers)
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again at once by the backward pass: keep them.
        fully_shard(layer, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    fully_shard(root, mp_policy=mp)


def all_reduce_sum(value: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()
