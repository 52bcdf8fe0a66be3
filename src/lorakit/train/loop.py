"""The training loop: padding-free micro-batches, loss on supervised tokens, token-weighted steps.

Each optimizer step's loss is the mean over *all* supervised tokens of its micro-batches: every
micro-batch's summed loss is divided by the step's total target count, known in advance from
the labels. So splitting a step into more, smaller micro-batches changes nothing but memory,
which is what lets an out-of-memory retry keep the effective batch.

With several processes (DDP or FSDP) every process plans the same steps; a step holds
``grad_accum`` micro-batches per process and each process computes its share (micro-batches
``rank, rank + world, ...``), so every example is seen once per epoch. The target count is known
from the plan on every process, so the loss is the same token-weighted mean as in one process.

The loop reads top to bottom: for each planned step, stop if asked (a signal, or early stopping,
agreed by every process), run ``train_step``, hand its numbers to the ``Reporter``, and save the
resume state, evaluate or sample when they are due.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lorakit.config.schema import PAIR_STATS, TrainSection
from lorakit.data.packing import collate
from lorakit.errors import TrainingError
from lorakit.model.attention import uses_segments
from lorakit.outcome import Kind, Outcome
from lorakit.schedule import due
from lorakit.train.callbacks import Callback
from lorakit.train.distributed import any_process, share_of, summed_over_processes
from lorakit.train.loss import as_loss_module, trained_model
from lorakit.train.oom import (
    StepOutOfMemory,
    fault_token_budget,
    free_memory,
    injected_out_of_memory,
    is_out_of_memory,
)
from lorakit.train.plan import LoopResult, Step
from lorakit.train.resume import capture_rng, restore_rng
from lorakit.train.select import Selection
from lorakit.train.stop import StopRequest

log = logging.getLogger(__name__)

# Devices without an asynchronous queue: reading a step's loss costs nothing there.
REPORT_EVERY_STEP_ON = ("cpu",)


class Evaluator(Protocol):
    """Measures the model after ``step``: {"eval_loss": ..., "eval_exact": ...}. Every process calls it."""

    def __call__(self, step: int) -> dict[str, Any]: ...


@dataclass
class LoopSetup:
    """What the loop trains and whom it tells: built once per run by the recipe."""

    model: Any  # the SupervisedLoss module, as the accelerator prepared it
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    train: TrainSection
    pad_id: int
    callbacks: Sequence[Callback] = ()
    evaluate: Evaluator | None = None  # None: no validation data
    sample: Callable[[int], None] | None = None  # greedy answers to train.sample_prompts after a step
    save_best: Callable[[int], None] | None = None  # the adapter after a step that was the best so far
    save_state: Callable[[LoopResult], None] | None = None  # the resume state, at a step boundary
    stop: StopRequest | None = None  # a signal asks to stop at the next step boundary
    selection: Selection | None = None  # which evaluation is best, and early stopping (a fresh run's)
    judge: Callable[[int, dict[str, Any]], Outcome | None] | None = None  # after an evaluation: an outcome to stop at
    fault_tokens: int | None = None  # set by run_loop from LORAKIT_FAULTS=oom-tokens:N (tests); None in real runs
    # (a sweep's pruner), or None

    @property
    def state_every(self) -> int:
        return self.train.resume_every if self.train.resumable and self.save_state is not None else 0

    @property
    def sample_every(self) -> int:
        return (self.train.sample_every or self.train.eval_every) if self.sample is not None else 0


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2**20 if sys.platform != "darwin" else kib / 2**30


class Reporter:
    """Step losses stay on the device until a log, checkpoint or evaluation needs them, so a GPU never
    waits for the host between steps; on the CPU there is no queue, so every step reports at once.
    Reading them is also where a diverged loss is caught."""

    def __init__(self, setup: LoopSetup, result: LoopResult, total_steps: int) -> None:
        self.setup, self.result, self.total_steps = setup, result, total_steps
        self.pending: list[tuple[dict[str, Any], torch.Tensor]] = []

    def add(self, metrics: dict[str, Any], loss: torch.Tensor, grad_norm: torch.Tensor,
            stats: torch.Tensor | None = None) -> None:
        """One step's numbers; ``stats``: a preference step's means of ``PAIR_STATS``."""
        device = self.setup.accelerator.device
        values = [loss.reshape(1), grad_norm.detach().float().to(device).reshape(1)]
        self.pending.append((metrics, torch.cat(values + ([stats.float()] if stats is not None else []))))
        if self._due(metrics["step"]):
            self.flush()

    def _due(self, step: int) -> bool:
        t = self.setup.train
        return (self.setup.accelerator.device.type in REPORT_EVERY_STEP_ON or step == self.total_steps
                or due(step, t.log_every) or due(step, t.save_every)
                or (self.setup.evaluate and due(step, t.eval_every)))

    def flush(self) -> None:
        """Report every pending step; raises TrainingError when a loss is NaN or infinite."""
        if not self.pending:
            return
        values = [v.tolist() for v in torch.cat([v for _, v in self.pending]).split(
            [len(v) for _, v in self.pending])]  # the one host-device sync
        reported = [metrics for metrics, _ in self.pending]
        self.pending.clear()
        for metrics, (loss, grad_norm, *stats) in zip(reported, values, strict=True):
            if not math.isfinite(loss):
                raise TrainingError(f"loss diverged at step {metrics['step']} (loss={loss}); lower train.lr or "
                                    "check the data")
            metrics.update(loss=loss, grad_norm=grad_norm, **dict(zip(PAIR_STATS, stats, strict=False)))
            self.result.history.append(metrics)
            for cb in self.setup.callbacks:
                cb.on_step_end(metrics)


class Clock:
    """Seconds of this run so far, earlier attempts and resumed sessions included."""

    def __init__(self, before: float) -> None:
        self.start = time.perf_counter() - before

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def train_step(setup: LoopSetup, step: Step, step_no: int,
               result: LoopResult) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimizer step over this process's share of the step's micro-batches.

    Returns:
        The step's loss (summed over processes), gradient norm and, for preference pairs, the means of
        ``PAIR_STATS`` over the step's pairs; still on the device.

    Raises:
        StepOutOfMemory: this step ran out of memory; its partial gradients are dropped.
    """
    acc, train = setup.accelerator, setup.train
    loss_module = as_loss_module(setup.model)
    # A prompt the examples of a row share (a DPO pair's, an instruction every row begins with) computed once;
    # not under NEFTune, which draws each example's noise on its own copy of the prompt, as the HF trainer does.
    share = uses_segments(trained_model(loss_module)) and not train.neftune_noise_alpha
    batches = [collate(rows, setup.pad_id, share) for rows in step.micro_batches]
    step_tokens = sum(b.num_tokens for b in batches)
    batches = [b for b in batches if b.num_targets]  # nothing to learn, nothing to compute
    n_targets = max(1, sum(b.loss_units for b in batches))  # supervised tokens, or pairs (DPO)
    share = share_of(batches, acc)
    step_loss = torch.zeros((), dtype=torch.float32, device=acc.device)
    step_stats: torch.Tensor | None = None
    budget = setup.fault_tokens
    try:
        for i, (batch, weight) in enumerate(share):
            if budget is not None and batch.num_computed > budget:
                raise injected_out_of_memory(batch.num_computed, budget)
            # Only the last micro-batch of a step needs to synchronise gradients across processes.
            with acc.no_sync(loss_module) if i < len(share) - 1 else nullcontext():
                with acc.autocast():  # bf16 on a GPU; nothing on the CPU
                    out = loss_module(batch.to_tensors(acc.device), train.loss_chunk_tokens)
                    loss, stats = out if isinstance(out, tuple) else (out, None)
                    loss = loss / n_targets
                # DDP and FSDP average gradients over processes; each process's sum is wanted.
                acc.backward(loss * (weight * acc.num_processes))
            step_loss += loss.detach() * weight
            if stats is not None:
                step_stats = stats.detach() / n_targets * weight + (0 if step_stats is None else step_stats)
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        raise _out_of_memory(setup, step_no, e, result) from None
    result.trained_tokens += step_tokens
    result.computed_tokens += sum(b.num_computed for b in batches)
    result.supervised_tokens += sum(b.num_targets for b in batches)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    grad_norm = (acc.clip_grad_norm_(params, train.max_grad_norm) if train.max_grad_norm
                 else torch.zeros((), device=acc.device))
    setup.optimizer.step()
    setup.scheduler.step()
    setup.optimizer.zero_grad(set_to_none=True)
    stats_sum = None if step_stats is None else summed_over_processes(step_stats, acc)
    return summed_over_processes(step_loss, acc), grad_norm, stats_sum


def _out_of_memory(setup: LoopSetup, step_no: int, error: BaseException, result: LoopResult) -> BaseException:
    """The exception a step that ran out of memory ends in, its partial gradients dropped."""
    acc = setup.accelerator
    if acc.num_processes > 1:
        return TrainingError(f"out of memory at step {step_no} in process {acc.process_index} of {acc.num_processes}; "
                             "the out-of-memory retries run in single-process training only: lower "
                             "train.micro_batch_size (raise train.grad_accum to keep the batch) or add an overlay "
                             "with --add")
    setup.optimizer.zero_grad(set_to_none=True)
    free_memory()
    return StepOutOfMemory(step_no, error, result)


def run_loop(setup: LoopSetup, steps: Sequence[Step], resume: LoopResult | None = None) -> LoopResult:
    """Run the planned optimizer steps, stopping cleanly at a step boundary when asked.

    Args:
        resume: the steps done so far (an attempt that ran out of memory, or a resumed run): continue
            after its last completed step (``steps`` may have been re-cut meanwhile). Callbacks are begun
            and the baseline evaluation is run only without it.

    Raises:
        TrainingError: the loss became NaN or infinite ("loss diverged at step N").
        StepOutOfMemory: a step ran out of memory; the steps before it are complete and reported.
    """
    result = resume or LoopResult(0, selection=setup.selection)
    setup.fault_tokens = fault_token_budget()  # read once here, never on the step's path
    total = len(steps)
    reporter = Reporter(setup, result, total)
    clock = Clock(result.seconds)
    if result.rng_state is not None:
        restore_rng(result.rng_state)  # dropout continues as if the run had never stopped
    if resume is None:
        for cb in setup.callbacks:
            cb.on_train_begin(total)
        _evaluate(setup, result, 0, 0.0, total, clock)  # the untrained adapter: the baseline to beat
        _sample(setup, 0)
    as_loss_module(setup.model).train()
    try:
        for step_no, step in enumerate(steps, 1):
            if step_no <= result.steps_done:
                continue
            if _stop_agreed(setup, result):
                _stop_here(setup, result, reporter, clock)
                break
            loss, grad_norm, stats = train_step(setup, step, step_no, result)
            result.steps_done, result.rng_state = step_no, capture_rng()
            reporter.add(_step_metrics(setup, result, step, total, clock), loss, grad_norm, stats)
            _when_due(setup, result, step, total, reporter, clock)
        else:
            reporter.flush()
            if steps and not (result.eval_history and result.eval_history[-1]["step"] == result.steps_done):
                _evaluate(setup, result, result.steps_done, steps[-1].epoch, total, clock)
                _sample(setup, result.steps_done)
    except KeyboardInterrupt:  # a second Ctrl+C, mid-step: the adapter so far is saved, no resume state
        reporter.flush()
        result.outcome = Outcome(Kind.STOPPED, (setup.stop.reason if setup.stop is not None else None) or "Ctrl+C",
                                 {"step": result.steps_done})
    except StepOutOfMemory:
        result.seconds = clock.elapsed()
        raise  # not the end of training: the caller steps down its ladder and resumes
    except BaseException:
        result.outcome = Outcome(Kind.FAILED)
        _end(setup, result, clock)
        raise
    _end(setup, result, clock)
    return result


def _step_metrics(setup: LoopSetup, result: LoopResult, step: Step, total: int, clock: Clock) -> dict[str, Any]:
    elapsed = clock.elapsed()
    return {"step": result.steps_done, "total_steps": total, "epoch": step.epoch,
            "lr": setup.scheduler.get_last_lr()[0], "trained_tokens": result.trained_tokens,
            "tokens_per_second": result.tokens_per_second(elapsed), "elapsed_s": elapsed,
            "remaining_s": result.remaining_seconds(elapsed, total, _evaluations_from(setup, result.steps_done, total)),
            "memory_gib": peak_memory_gib(setup.accelerator.device)}


def _evaluations_from(setup: LoopSetup, first: int, total: int) -> int:
    """How many evaluations steps ``first``..``total`` end with: one every ``eval_every`` steps, and the one
    after the last step."""
    if setup.evaluate is None or first > total:
        return 0
    every = setup.train.eval_every
    periodic = (total - 1) // every - (max(first, 1) - 1) // every if every else 0  # due at first..total-1
    return periodic + 1


def _when_due(setup: LoopSetup, result: LoopResult, step: Step, total: int, reporter: Reporter,
              clock: Clock) -> None:
    """Evaluate, sample and save the resume state when this step is one they are due at (never the last step:
    the end of the loop evaluates, and a completed run needs no resume state).

    The resume state comes last, so it holds this step's evaluation and best adapter: a run killed right after
    writing it resumes with both, instead of skipping the evaluation and taking an older best.
    """
    step_no = result.steps_done
    if step_no == total:
        return
    if due(step_no, setup.train.eval_every):
        reporter.flush()
        _evaluate(setup, result, step_no, step.epoch, total, clock)
    if due(step_no, setup.sample_every):
        _sample(setup, step_no)
    if due(step_no, setup.state_every):
        reporter.flush()
        result.seconds = clock.elapsed()
        setup.save_state(result)  # type: ignore[misc]  # state_every is 0 without it


def _evaluate(setup: LoopSetup, result: LoopResult, step_no: int, epoch: float, total: int, clock: Clock) -> None:
    """Measure the model after ``step_no``; keep the adapter when it is the best so far."""
    if setup.evaluate is None:
        return
    began = time.perf_counter()
    metrics = setup.evaluate(step_no)
    result.eval_seconds += time.perf_counter() - began
    elapsed = clock.elapsed()
    record = {"step": step_no, "total_steps": total, "epoch": epoch, **metrics, "elapsed_s": elapsed}
    result.eval_history.append(record)
    record["remaining_s"] = result.remaining_seconds(elapsed, total, _evaluations_from(setup, step_no + 1, total))
    for cb in setup.callbacks:
        cb.on_evaluate(record)
    if result.selection is not None and result.selection.observe(step_no, record) and setup.save_best is not None:
        setup.save_best(step_no)
    if setup.judge is not None and result.stop_requested is None:
        result.stop_requested = setup.judge(step_no, record)


def _sample(setup: LoopSetup, step_no: int) -> None:
    if setup.sample is not None:
        setup.sample(step_no)


def _stop_agreed(setup: LoopSetup, result: LoopResult) -> bool:
    """Whether to stop before the next step: a signal, or early stopping; with several processes, whether any
    process says so (each sees the same evaluations, but only the main one the generated metrics)."""
    asked = setup.stop is not None and setup.stop.reason is not None
    early = result.selection is not None and result.selection.stop_reason is not None
    return any_process(asked or early or result.stop_requested is not None, setup.accelerator)


def _stop_here(setup: LoopSetup, result: LoopResult, reporter: Reporter, clock: Clock) -> None:
    reporter.flush()  # the steps that finished keep their place in the log
    signal_reason = setup.stop.reason if setup.stop is not None else None
    early = result.selection.stop_reason if result.selection is not None else None
    if signal_reason is None:  # early stopping, a judge (here, or in another process): the run is complete
        result.outcome = result.stop_requested or Outcome(
            Kind.EARLY_STOPPED, f"stopped early at step {result.steps_done}: {early or 'another process said so'}",
            {"step": result.steps_done})
        log.info("%s", result.outcome.reason)
        return
    result.outcome = Outcome(Kind.STOPPED, signal_reason, {"step": result.steps_done})
    log.warning("interrupted at step %d; saving the adapter so far", result.steps_done)
    if setup.save_state is not None:
        result.seconds = clock.elapsed()
        setup.save_state(result)


def _end(setup: LoopSetup, result: LoopResult, clock: Clock) -> None:
    result.seconds = clock.elapsed()
    for cb in setup.callbacks:
        cb.on_train_end(result.status)
