"""Out of memory, as torch reports it: recognising it, freeing what a failed step held, and the test hook.

The ladder of lower-memory settings that a run then steps down is planned in ``lorakit.train.plan``.
"""

from __future__ import annotations

import gc

import torch

from lorakit import faults
from lorakit.train.plan import LoopResult

# The CPU allocator raises a plain RuntimeError (torch 2.13); CUDA raises torch.OutOfMemoryError.
_OOM_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "out of memory")
FAULT_POINT = "oom-tokens"  # LORAKIT_FAULTS=oom-tokens:N: a micro-batch of more than N tokens is out of memory


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MESSAGES)


def fault_token_budget() -> int | None:
    """The injected out-of-memory budget (``LORAKIT_FAULTS=oom-tokens:N``), read once before training; None."""
    return faults.number(FAULT_POINT)


def injected_out_of_memory(num_tokens: int, budget: int) -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError(f"{faults.ENV}={FAULT_POINT}:{budget}: a micro-batch of {num_tokens} tokens")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class StepOutOfMemory(Exception):
    """Raised by the loop when optimizer step ``step`` ran out of memory; steps before it are done."""

    def __init__(self, step: int, cause: BaseException, result: LoopResult) -> None:
        super().__init__(f"out of memory at step {step}: {(str(cause).splitlines() or [''])[0][:200]}")
        self.step = step
        self.result = result  # the LoopResult so far, to resume from
