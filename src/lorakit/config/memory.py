"""The five settings that may change while a run is under way, in one place.

The out-of-memory overlay, the planner's starting point (``train.oom.auto_plan``), each rung of
the out-of-memory ladder and a resumed run all speak of exactly these, and only these, since
each of them changes memory without changing what a step computes (``max_length`` only with
``train.oom.allow_shorter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class MemorySettings:
    micro_batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    loss_chunk_tokens: int
    max_length: int

    # Where each lives in the config (the keys an out-of-memory overlay may set).
    KEYS: ClassVar[dict[str, str]] = {
        "micro_batch_size": "train.micro_batch_size", "grad_accum": "train.grad_accum",
        "gradient_checkpointing": "train.gradient_checkpointing", "loss_chunk_tokens": "train.loss_chunk_tokens",
        "max_length": "data.max_length"}

    @classmethod
    def of(cls, cfg: Any) -> MemorySettings:
        """The settings a RunConfig holds."""
        t = cfg.train
        return cls(t.micro_batch_size, t.grad_accum, t.gradient_checkpointing, t.loss_chunk_tokens,
                   cfg.data.max_length)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemorySettings:
        """From a saved dict (a resume state); keys this version does not know are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.KEYS})

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
