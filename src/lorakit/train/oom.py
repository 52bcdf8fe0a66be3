"""Out-of-memory recovery: step down a ladder of lower-memory settings and carry on.

Every optimizer step is planned in advance as a list of micro-batches, and its loss is
token-weighted over the whole step (``lorakit.train.loop``). So a step can be re-cut into smaller
micro-batches without changing what it computes: halving every micro-batch and doubling the
accumulation keeps the effective batch, the examples of each step and the loss, and training
continues from the last completed optimizer step. The other rungs trade speed for memory
(gradient checkpointing, a smaller loss chunk); shortening examples changes the data, so it is
only on the ladder when the user allows it.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from lorakit.data.packing import Row
from lorakit.data.tokenize import Example

MIN_LOSS_CHUNK = 32
MIN_MAX_LENGTH = 64
# The CPU allocator raises a plain RuntimeError (torch 2.13); CUDA raises torch.OutOfMemoryError.
_OOM_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "out of memory")
TEST_BUDGET_ENV = "LORAKIT_TEST_OOM_TOKENS"


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MESSAGES)


def test_token_budget() -> int | None:
    """Test hook: with LORAKIT_TEST_OOM_TOKENS=N, a micro-batch of more than N tokens is out of memory."""
    budget = os.environ.get(TEST_BUDGET_ENV)
    return int(budget) if budget else None


def check_test_budget(num_tokens: int, budget: int | None) -> None:
    if budget is not None and num_tokens > budget:
        raise torch.OutOfMemoryError(f"{TEST_BUDGET_ENV}={budget}: a micro-batch of {num_tokens} tokens")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class StepOutOfMemory(Exception):
    """Raised by the loop when optimizer step ``step`` ran out of memory; steps before it are done."""

    def __init__(self, step: int, cause: BaseException, result: Any) -> None:
        super().__init__(f"out of memory at step {step}: {(str(cause).splitlines() or [''])[0][:200]}")
        self.step = step
        self.result = result  # the LoopResult so far, to resume from


@dataclass(frozen=True)
class MemorySettings:
    """The settings a rung of the ladder may change mid-run."""

    micro_batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    loss_chunk_tokens: int
    max_length: int

    @classmethod
    def of(cls, cfg: Any) -> MemorySettings:
        """The settings a RunConfig holds."""
        t = cfg.train
        return cls(t.micro_batch_size, t.grad_accum, t.gradient_checkpointing, t.loss_chunk_tokens,
                   cfg.data.max_length)

    def applied_to(self, cfg: Any) -> Any:
        """``cfg`` (a RunConfig) with these settings."""
        train = cfg.train.model_copy(update={"micro_batch_size": self.micro_batch_size, "grad_accum": self.grad_accum,
                                             "gradient_checkpointing": self.gradient_checkpointing,
                                             "loss_chunk_tokens": self.loss_chunk_tokens})
        data = cfg.data.model_copy(update={"max_length": self.max_length})
        return cfg.model_copy(update={"train": train, "data": data})

    def describe(self) -> str:
        return (f"micro_batch_size={self.micro_batch_size} grad_accum={self.grad_accum} "
                f"gradient_checkpointing={str(self.gradient_checkpointing).lower()} "
                f"loss_chunk_tokens={self.loss_chunk_tokens} max_length={self.max_length}")


def _split(rows: list[Row]) -> list[list[Row]]:
    """One micro-batch as two (by rows, else by the examples of its one row), or as is."""
    if len(rows) > 1:
        half = (len(rows) + 1) // 2
        return [rows[:half], rows[half:]]
    if len(rows[0]) > 1:
        half = (len(rows[0]) + 1) // 2
        return [[rows[0][:half]], [rows[0][half:]]]
    return [rows]


def _recut(micro_batches: list[list[Row]], size: int, packing: bool) -> list[list[Row]]:
    """The same examples (or packed rows) in micro-batches of ``size``."""
    if packing:
        rows = [row for mb in micro_batches for row in mb]
        return [rows[i : i + size] for i in range(0, len(rows), size)]
    examples = [e for mb in micro_batches for row in mb for e in row]
    return [[examples[i : i + size]] for i in range(0, len(examples), size)]


def _truncate(rows: list[Row], max_length: int) -> list[Row]:
    cut = [[Example(e.input_ids[:max_length], e.labels[:max_length], e.where) for e in row] for row in rows]
    return [[e for e in row if e.num_trained] for row in cut if any(e.num_trained for e in row)]


def _shorten(steps: Sequence, max_length: int) -> list:
    """Every step with its examples cut to ``max_length``; micro-batches left with nothing to learn go."""
    from lorakit.train.loop import Step

    return [Step([mb for mb in (_truncate(m, max_length) for m in s.micro_batches) if mb], s.epoch) for s in steps]


def recut_steps(steps: Sequence, current: MemorySettings, target: MemorySettings, packing: bool) -> list:
    """``steps`` planned under ``current`` settings, in ``target``'s micro-batches (and max_length)."""
    from lorakit.train.loop import Step

    cut = [Step(_recut(s.micro_batches, target.micro_batch_size, packing), s.epoch) for s in steps]
    return _shorten(cut, target.max_length) if target.max_length < current.max_length else cut


@dataclass
class Ladder:
    """The remaining rungs, tried in order; a rung is used again while it still helps."""

    rungs: list[str]
    allow_shorter: bool = False
    tried: list[str] = field(default_factory=list)
    overlay: tuple[MemorySettings, str] | None = None  # the user's own file: the first step down
    packing: bool = False

    def step_down(self, steps: Sequence, settings: MemorySettings) -> tuple[list, MemorySettings, str] | None:
        """The next change: (steps re-cut, new settings, what changed), or None when nothing is left."""
        from lorakit.train.loop import Step

        if self.overlay is not None:
            target, what = self.overlay
            self.overlay = None
            self.tried.append(what)
            return recut_steps(steps, settings, target, self.packing), target, what
        while self.rungs:
            rung = self.rungs[0]
            change = None
            if rung == "micro_batch":
                split = [Step([half for mb in s.micro_batches for half in _split(mb)], s.epoch) for s in steps]
                if any(len(a.micro_batches) != len(b.micro_batches) for a, b in zip(split, steps, strict=True)):
                    new = replace(settings, micro_batch_size=max(1, settings.micro_batch_size // 2),
                                  grad_accum=settings.grad_accum * 2)
                    change = (split, new, f"micro_batch_size {settings.micro_batch_size} -> {new.micro_batch_size}"
                                          f", grad_accum {settings.grad_accum} -> {new.grad_accum}")
            elif rung == "checkpointing" and not settings.gradient_checkpointing:
                change = (list(steps), replace(settings, gradient_checkpointing=True), "gradient checkpointing on")
            elif rung == "loss_chunk" and settings.loss_chunk_tokens > MIN_LOSS_CHUNK:
                chunk = max(MIN_LOSS_CHUNK, settings.loss_chunk_tokens // 4)
                change = (list(steps), replace(settings, loss_chunk_tokens=chunk),
                          f"loss_chunk_tokens {settings.loss_chunk_tokens} -> {chunk}")
            elif rung == "max_length" and self.allow_shorter and settings.max_length > MIN_MAX_LENGTH:
                length = max(MIN_MAX_LENGTH, settings.max_length // 2)
                change = (_shorten(steps, length), replace(settings, max_length=length),
                          f"max_length {settings.max_length} -> {length}")
            if change is not None:
                self.tried.append(change[2])
                return change
            self.rungs.pop(0)
        return None


def give_up_message(step: int, tried: Sequence[str], allow_shorter: bool) -> str:
    done = "; ".join(tried) if tried else "nothing (train.oom.ladder is empty)"
    shorter = "a lower data.max_length" if allow_shorter else "a lower data.max_length or train.oom.allow_shorter: true"
    return (f"out of memory at step {step} after trying: {done}. Next: a lower lora.r, "
            f"model.quantization: nf4 (CUDA), a smaller model, {shorter}")
