"""Which evaluation was best so far, and whether training should stop early. Torch-free.

The state is a few numbers, saved with the resume state, so a resumed run stops where an
uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lorakit.config.schema import TrainSection


@dataclass
class Selection:
    metric: str  # as logged: eval_loss, eval_exact...
    lower_is_better: bool
    patience: int | None  # None: never stop early
    min_delta: float = 0.0
    best_value: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0

    @classmethod
    def of(cls, train: TrainSection) -> Selection:
        metric = train.selection_metric
        stopping = train.early_stopping
        mode = stopping.mode if stopping else "auto"
        lower = mode == "min" or (mode == "auto" and metric.endswith(("loss", "perplexity")))
        return cls(metric, lower, stopping.patience if stopping else None, stopping.min_delta if stopping else 0.0)

    def observe(self, step: int, metrics: dict[str, Any]) -> bool:
        """Record one evaluation; True when it is the best so far (strictly better by more than min_delta)."""
        value = metrics.get(self.metric)
        if value is None:  # not measured at this evaluation
            return False
        if self.best_value is None:
            better = True
        elif self.lower_is_better:
            better = value < self.best_value - self.min_delta
        else:
            better = value > self.best_value + self.min_delta
        if better:
            self.best_value, self.best_step, self.evaluations_since_best = float(value), step, 0
        else:
            self.evaluations_since_best += 1
        return better

    @property
    def stop_reason(self) -> str | None:
        """Why training should stop now, or None."""
        if self.patience is None or self.evaluations_since_best < self.patience:
            return None
        name = self.metric.removeprefix("eval_")
        return (f"{name} did not improve for {self.patience} evaluations; best step {self.best_step} "
                f"({name} {self.best_value:.4g})")

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Selection:
        return cls(**state)
