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
    """The best evaluation so far. The evaluation before the first step (step 0) is the baseline to beat. An
    untrained adapter there is never the best: it is not worth keeping, so when no trained step beats it there is
    no best step and the run keeps its last adapter. An adapter the run started from (``lora.init_from``) is a
    candidate like any step's: when no step beats it, it is the best, and ``train.keep: best`` keeps it."""

    metric: str  # as logged: eval_loss, eval_exact...
    lower_is_better: bool
    patience: int | None  # None: never stop early
    min_delta: float = 0.0
    best_value: float | None = None  # the best trained step's value (None: none beat the baseline yet)
    best_step: int | None = None
    evaluations_since_best: int = 0  # since the best step, or since the baseline while there is none
    baseline_value: float | None = None  # step 0's value
    baseline_is_candidate: bool = False  # step 0's adapter is one the run started from, not an untrained one

    @classmethod
    def of(cls, train: TrainSection, started_from_adapter: bool = False) -> Selection:
        metric = train.selection_metric
        stopping = train.early_stopping
        mode = stopping.mode if stopping else "auto"
        lower = mode == "min" or (mode == "auto" and metric.endswith(("loss", "perplexity")))
        return cls(metric, lower, stopping.patience if stopping else None, stopping.min_delta if stopping else 0.0,
                   baseline_is_candidate=started_from_adapter)

    def observe(self, step: int, metrics: dict[str, Any]) -> bool:
        """Record one evaluation; True when its adapter is the best so far: a trained step strictly better than
        the best before it, and than the baseline, by more than min_delta; step 0 when it is a candidate."""
        value = metrics.get(self.metric)
        if value is None:  # not measured at this evaluation
            return False
        if step == 0:
            self.baseline_value = float(value)
            if self.baseline_is_candidate:
                self.best_value, self.best_step, self.evaluations_since_best = float(value), 0, 0
            return self.baseline_is_candidate
        to_beat = self.best_value if self.best_value is not None else self.baseline_value
        if to_beat is None:
            better = True
        elif self.lower_is_better:
            better = value < to_beat - self.min_delta
        else:
            better = value > to_beat + self.min_delta
        if better:
            self.best_value, self.best_step, self.evaluations_since_best = float(value), step, 0
        else:
            self.evaluations_since_best += 1
        return better

    @property
    def name(self) -> str:
        return self.metric.removeprefix("eval_")

    @property
    def no_best_note(self) -> str | None:
        """One line when evaluations ran and no trained step beat the untrained adapter (the last adapter is
        kept then); None otherwise."""
        if self.best_step is not None or self.baseline_value is None:
            return None
        return (f"no trained step beat the untrained adapter ({self.name} {self.baseline_value:.4g} at step 0); "
                "the last adapter is kept")

    @property
    def start_kept_note(self) -> str | None:
        """One line when the adapter the run started from stayed the best (``train.keep: best`` keeps it then);
        None otherwise."""
        if self.best_step != 0 or self.best_value is None:
            return None
        return (f"no trained step beat the adapter the run started from ({self.name} {self.best_value:.4g} at "
                "step 0); that adapter is kept")

    @property
    def stop_reason(self) -> str | None:
        """Why training should stop now, or None."""
        if self.patience is None or self.evaluations_since_best < self.patience:
            return None
        if self.best_step is None:
            return f"{self.name} did not improve for {self.patience} evaluations; {self.no_best_note}"
        return (f"{self.name} did not improve for {self.patience} evaluations; best step {self.best_step} "
                f"({self.name} {self.best_value:.4g})")

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Selection:
        return cls(**state)
