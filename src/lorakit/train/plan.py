"""The plan of a run, torch-free: its optimizer steps, what they produced, and how the out-of-memory
ladder re-cuts the steps still to come.

Every optimizer step is planned before training starts, as a list of micro-batches, and its loss
is token-weighted over the whole step (``lorakit.train.loop``). So a step can be re-cut into
smaller micro-batches without changing what it computes: halving every micro-batch and doubling
the accumulation keeps the effective batch, the examples of each step and the loss, and training
continues from the last completed optimizer step. The other rungs trade speed for memory
(gradient checkpointing, a smaller loss chunk); shortening examples changes the data, so it is
only on the ladder when the user allows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lorakit.config.memory import MemorySettings
from lorakit.config.schema import DataSection, TrainSection
from lorakit.data.packing import Row, plan_micro_batches
from lorakit.data.tokenize import Example
from lorakit.outcome import Kind, Outcome
from lorakit.train.select import Selection

MIN_LOSS_CHUNK = 32
MIN_MAX_LENGTH = 64


@dataclass(frozen=True)
class Step:
    """One optimizer step: its micro-batches, and the epoch reached when it ends."""

    micro_batches: list[list[Row]]
    epoch: float


def plan_steps(examples: Sequence[Example], train: TrainSection, data: DataSection,
               processes: int = 1) -> list[Step]:
    """Every optimizer step of the run, epoch by epoch, each epoch shuffled with its own seed.

    A step holds ``grad_accum`` micro-batches for each of ``processes`` processes.
    """
    per_step = train.grad_accum * processes
    per_epoch = math.ceil(len(plan_micro_batches(examples, train.micro_batch_size, data.packing,
                                                 data.max_length, data.seed)) / per_step)
    total = train.max_steps or max(1, math.ceil(per_epoch * train.epochs))
    steps: list[Step] = []
    epoch = 0
    while len(steps) < total:
        micro = plan_micro_batches(examples, train.micro_batch_size, data.packing, data.max_length,
                                   data.seed + epoch)
        groups = [micro[i : i + per_step] for i in range(0, len(micro), per_step)]
        for index, group in enumerate(groups):
            steps.append(Step(group, epoch + (index + 1) / len(groups)))
            if len(steps) == total:
                break
        epoch += 1
    return steps


def with_epoch_cadence(train: TrainSection, steps: Sequence[Step]) -> TrainSection:
    """``train.evals_per_epoch`` and ``saves_per_epoch`` turned into ``eval_every`` and ``save_every`` for these
    steps: the steps of an epoch divided by the count, rounded up (4 in a 125-step epoch: every 32 steps, so the
    fourth is the one at the epoch's end), at least 1."""
    if not steps or not (train.evals_per_epoch or train.saves_per_epoch):
        return train
    per_epoch = round(1 / steps[0].epoch)  # the first step ends 1/N of the way through the first epoch
    update: dict[str, Any] = {"evals_per_epoch": None, "saves_per_epoch": None}
    if train.evals_per_epoch:
        update["eval_every"] = max(1, math.ceil(per_epoch / train.evals_per_epoch))
    if train.saves_per_epoch:
        update["save_every"] = max(1, math.ceil(per_epoch / train.saves_per_epoch))
    return train.model_copy(update=update)


@dataclass
class LoopResult:
    steps_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    trained_tokens: int = 0  # real (non-pad) tokens
    supervised_tokens: int = 0  # tokens that reached the loss
    computed_tokens: int = 0  # tokens the model ran on, padding included
    seconds: float = 0.0
    eval_seconds: float = 0.0  # kept out of tokens/s, which measures training alone
    rng_state: dict[str, Any] | None = None  # as it was at the end of the last completed step
    # completed, or stopped (a signal), early-stopped, pruned, failed: and why
    outcome: Outcome = field(default_factory=lambda: Outcome(Kind.COMPLETED))
    selection: Selection | None = None  # the best evaluation so far, and how long since
    stop_requested: Outcome | None = None  # a judge's verdict (a sweep's pruner), kept as the outcome

    @property
    def status(self) -> str:
        return self.outcome.status

    def tokens_per_second(self, elapsed: float) -> float:
        """Real tokens per second of training, validation time excluded."""
        return self.trained_tokens / max(elapsed - self.eval_seconds, 1e-9)

    def remaining_seconds(self, elapsed: float, total: int, evaluations_left: int) -> float:
        """Time to the end: the steps left at the training's own pace and the evaluations left at the mean one's.

        Counted apart because they differ: the quickstart's evaluation before the first step takes as long as
        two dozen steps, and folded into the pace it made the estimate at step 5 twice the real time.
        """
        pace = (elapsed - self.eval_seconds) / self.steps_done if self.steps_done else 0.0
        per_evaluation = self.eval_seconds / len(self.eval_history) if self.eval_history else 0.0
        return pace * max(0, total - self.steps_done) + per_evaluation * evaluations_left

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    @property
    def mean_loss(self) -> float | None:
        """The mean of every step's loss, resumed sessions included: the Trainer's train_loss."""
        return sum(h["loss"] for h in self.history) / len(self.history) if self.history else None


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
    cut = [[e.truncated(max_length) for e in row] for row in rows]
    return [[e for e in row if e.num_trained] for row in cut if any(e.num_trained for e in row)]


def _shorten(steps: Sequence[Step], max_length: int) -> list[Step]:
    """Every step with its examples cut to ``max_length``; micro-batches left with nothing to learn go."""
    return [Step([mb for mb in (_truncate(m, max_length) for m in s.micro_batches) if mb], s.epoch) for s in steps]


def recut_steps(steps: Sequence[Step], current: MemorySettings, target: MemorySettings,
                packing: bool) -> list[Step]:
    """``steps`` planned under ``current`` settings, in ``target``'s micro-batches (and max_length)."""
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

    def step_down(self, steps: Sequence[Step],
                  settings: MemorySettings) -> tuple[list[Step], MemorySettings, str] | None:
        """The next change: (steps re-cut, new settings, what changed), or None when nothing is left."""
        if self.overlay is not None:
            target, what = self.overlay
            self.overlay = None
            self.tried.append(what)
            return recut_steps(steps, settings, target, self.packing), target, what
        while self.rungs:
            change = self._try(self.rungs[0], steps, settings)
            if change is not None:
                self.tried.append(change[2])
                return change
            self.rungs.pop(0)  # this rung has nothing more to give
        return None

    def _try(self, rung: str, steps: Sequence[Step],
             settings: MemorySettings) -> tuple[list[Step], MemorySettings, str] | None:
        if rung == "micro_batch":
            split = [Step([half for mb in s.micro_batches for half in _split(mb)], s.epoch) for s in steps]
            if all(len(a.micro_batches) == len(b.micro_batches) for a, b in zip(split, steps, strict=True)):
                return None  # every micro-batch is one example already
            new = replace(settings, micro_batch_size=max(1, settings.micro_batch_size // 2),
                          grad_accum=settings.grad_accum * 2)
            return split, new, (f"micro_batch_size {settings.micro_batch_size} -> {new.micro_batch_size}, "
                                f"grad_accum {settings.grad_accum} -> {new.grad_accum}")
        if rung == "checkpointing" and not settings.gradient_checkpointing:
            return list(steps), replace(settings, gradient_checkpointing=True), "gradient checkpointing on"
        if rung == "loss_chunk" and settings.loss_chunk_tokens > MIN_LOSS_CHUNK:
            chunk = max(MIN_LOSS_CHUNK, settings.loss_chunk_tokens // 4)
            return (list(steps), replace(settings, loss_chunk_tokens=chunk),
                    f"loss_chunk_tokens {settings.loss_chunk_tokens} -> {chunk}")
        if rung == "max_length" and self.allow_shorter and settings.max_length > MIN_MAX_LENGTH:
            length = max(MIN_MAX_LENGTH, settings.max_length // 2)
            return (_shorten(steps, length), replace(settings, max_length=length),
                    f"max_length {settings.max_length} -> {length}")
        return None


def give_up_message(step: int, tried: Sequence[str], allow_shorter: bool) -> str:
    done = "; ".join(tried) if tried else "nothing (train.oom.ladder is empty)"
    shorter = "a lower data.max_length" if allow_shorter else "a lower data.max_length or train.oom.allow_shorter: true"
    return (f"out of memory at step {step} after trying: {done}. Next: a lower lora.r, "
            f"model.quantization: nf4 (CUDA), a smaller model, {shorter}")
