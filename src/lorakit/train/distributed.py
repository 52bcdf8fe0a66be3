"""What changes when torchrun (or srun) started several training processes.

Process start, rendezvous and the process group are accelerate's and torchrun's: this module
picks the accelerate options for ``launch.strategy``, shares a step's micro-batches out, sums
what the processes computed, agrees on when to stop, and gathers the adapter to save.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from lorakit.errors import ConfigError


def process_rank() -> int:
    """This process's rank as torchrun sets it (0 when started alone)."""
    return int(os.environ.get("RANK", "0"))


FSDP_NEEDS_GPUS = "launch.strategy: fsdp needs GPUs (accelerate shards a model over GPUs only); use ddp on CPUs"


def check_strategy(strategy: str, nproc: int) -> None:
    """Before a run folder is made for ``lorakit train --nproc``: fsdp on a machine without GPUs is refused.

    Raises:
        ConfigError: as ``distributed_options`` would in every process.
    """
    if strategy == "fsdp" and nproc > 1:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(FSDP_NEEDS_GPUS)


def distributed_options(strategy: str) -> dict[str, Any]:
    """Accelerator keyword arguments for ``launch.strategy`` in this process's environment.

    Raises:
        ConfigError: fsdp without GPUs (accelerate shards models over GPUs only).
    """
    if strategy == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(FSDP_NEEDS_GPUS)
        from accelerate.utils import FullyShardedDataParallelPlugin

        # The adapter is small; the frozen base is what is worth sharding, layer by layer.
        return {"fsdp_plugin": FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                                              state_dict_type="FULL_STATE_DICT")}
    return {}  # ddp: accelerate's defaults


def is_sharded(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def adapter_state_dict(accelerator: Any, prepared: Any) -> dict[str, Any] | None:
    """The whole model's state dict gathered from its shards under FSDP (every process must call
    this), for PEFT to pick the adapter weights from; None otherwise (PEFT reads the model)."""
    if not is_sharded(accelerator):
        return None
    full = accelerator.get_state_dict(prepared)
    return {key.removeprefix("model."): value for key, value in full.items()}


def share_of(batches: Sequence[Any], accelerator: Any | None) -> list[tuple[Any, float]]:
    """This process's batches with their weights: every process gets the same number of them.

    A process short of work gets copies of the first batch with weight 0: the forward and
    backward passes still run (the collectives of DDP and FSDP need every process), but add nothing.
    """
    world = accelerator.num_processes if accelerator is not None else 1
    if world == 1:
        return [(b, 1.0) for b in batches]
    mine: list[tuple[Any, float]] = [(b, 1.0) for b in batches[accelerator.process_index :: world]]
    return mine + [(batches[0], 0.0)] * (math.ceil(len(batches) / world) - len(mine))


def summed_over_processes(value: Any, accelerator: Any | None) -> Any:
    """A tensor summed over every process (itself, with one)."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value, reduction="sum")


def any_process(flag: bool, accelerator: Any) -> bool:
    """Whether ``flag`` holds in any process (every process calls this, at the same step boundary)."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    total = accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum")
    return bool(total.item())
