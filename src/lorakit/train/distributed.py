"""What changes when torchrun (or srun) started several training processes.

Process start, rendezvous and the process group are accelerate's and torchrun's: this module
only picks the accelerate options for ``launch.strategy`` and gathers the adapter to save.
"""

from __future__ import annotations

import os
from typing import Any

from lorakit.errors import ConfigError


def process_rank() -> int:
    """This process's rank as torchrun sets it (0 when started alone)."""
    return int(os.environ.get("RANK", "0"))


def distributed_options(strategy: str) -> dict[str, Any]:
    """Accelerator keyword arguments for ``launch.strategy`` in this process's environment.

    Raises:
        ConfigError: fsdp without GPUs (accelerate shards models over GPUs only).
    """
    if strategy == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("launch.strategy: fsdp needs GPUs (accelerate shards a model over GPUs only); "
                              "use ddp on CPUs")
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
