"""The training loop: padding-free micro-batches, loss on supervised tokens, token-weighted steps.

Each optimizer step's loss is the mean over *all* supervised tokens of its micro-batches: every
micro-batch's summed loss is divided by the step's total target count, known in advance from
the labels. So splitting a step into more, smaller micro-batches changes nothing but memory,
which is what lets an out-of-memory retry keep the effective batch.

With several processes (DDP or FSDP) every process plans the same steps; a step holds
``grad_accum`` micro-batches per process and each process computes its share (micro-batches
``rank, rank + world, ...``), so every example is seen once per epoch. The target count is known
from the plan on every process, so the loss is the same token-weighted mean as in one process.
Every process runs the same number of forward passes per step (a process short of work runs one
with weight 0), which FSDP's collectives need.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from lorakit.config.schema import DataSection, TrainSection
from lorakit.data.packing import Row, collate, plan_micro_batches
from lorakit.data.tokenize import Example
from lorakit.errors import TrainingError
from lorakit.train.callbacks import Callback
from lorakit.train.loss import as_loss_module
from lorakit.train.oom import StepOutOfMemory, check_test_budget, free_memory, is_out_of_memory, test_token_budget
from lorakit.train.resume import capture_rng, restore_rng
from lorakit.train.stop import StopRequest

log = logging.getLogger(__name__)

# Devices without an asynchronous queue: reading a step's loss costs nothing there.
REPORT_EVERY_STEP_ON = ("cpu",)


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


@dataclass
class LoopResult:
    status: str  # "completed" or "interrupted"
    steps_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    trained_tokens: int = 0  # real (non-pad) tokens
    supervised_tokens: int = 0  # tokens that reached the loss
    computed_tokens: int = 0  # tokens the model ran on, padding included
    seconds: float = 0.0
    eval_seconds: float = 0.0  # kept out of tokens/s, which measures training alone
    rng_state: dict[str, Any] | None = None  # as it was at the end of the last completed step
    stop_reason: str | None = None  # "Ctrl+C" or "SIGTERM" when interrupted

    def tokens_per_second(self, elapsed: float) -> float:
        """Real tokens per second of training, validation time excluded."""
        return self.trained_tokens / max(elapsed - self.eval_seconds, 1e-9)

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    @property
    def final_eval_loss(self) -> float | None:
        return self.eval_history[-1]["eval_loss"] if self.eval_history else None


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2**20 if sys.platform != "darwin" else kib / 2**30


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


def summed_over_processes(value: torch.Tensor, accelerator: Any | None) -> torch.Tensor:
    if accelerator is None or accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value, reduction="sum")


@torch.no_grad()
def evaluate(model: Any, examples: Sequence[Example], micro_batch_size: int, pad_id: int,
             chunk_tokens: int, device: torch.device, accelerator: Any | None = None) -> float:
    """Mean next-token loss over every supervised token of ``examples`` (shared out over processes)."""
    loss_module = as_loss_module(model)
    was_training = loss_module.training
    loss_module.eval()
    batches = [b for b in (collate([list(examples[start : start + micro_batch_size])], pad_id)
                           for start in range(0, len(examples), micro_batch_size)) if b.num_targets]
    total = torch.zeros(2, dtype=torch.float32, device=device)  # summed loss, target count
    for batch, weight in share_of(batches, accelerator):
        loss = loss_module(batch.to_tensors(device), chunk_tokens)
        total += torch.stack([loss.float(), torch.tensor(float(batch.num_targets), device=device)]) * weight
    loss_module.train(was_training)
    loss_sum, count = summed_over_processes(total, accelerator).tolist()
    return loss_sum / max(1.0, count)


def run_loop(model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, steps: Sequence[Step],
             train: TrainSection, eval_examples: Sequence[Example], pad_id: int, accelerator: Any,
             callbacks: Sequence[Callback] = (), resume: LoopResult | None = None,
             stop: StopRequest | None = None, save_state: Callable[[LoopResult], None] | None = None,
             state_every: int = 0) -> LoopResult:
    """Run the planned optimizer steps; stop cleanly on Ctrl+C.

    Args:
        resume: the steps done so far (an attempt that ran out of memory, or a resumed run):
            continue after its last completed step (``steps`` may have been re-cut meanwhile).
            Callbacks are begun and the baseline validation is run only without it.
        stop: when it holds a reason (a signal arrived), stop at the next step boundary.
        save_state: writes the resume state; called every ``state_every`` steps (0: never) and
            when a ``stop`` request ends the run, always at a step boundary.

    Raises:
        TrainingError: the loss became NaN or infinite ("loss diverged at step N").
        StepOutOfMemory: a step ran out of memory; its partial gradients are dropped, the steps
            before it are complete and reported.
    """
    device = accelerator.device
    processes = accelerator.num_processes
    loss_module = as_loss_module(model)
    total_steps = len(steps)
    result = resume or LoopResult("completed", 0)
    params = [p for p in model.parameters() if p.requires_grad]
    token_budget = test_token_budget()
    if result.rng_state is not None:
        restore_rng(result.rng_state)  # dropout continues as if the run had never stopped
    if resume is None:
        for cb in callbacks:
            cb.on_train_begin(total_steps)
    loss_module.train()
    start = time.perf_counter() - result.seconds

    def report_eval(step_no: int, epoch: float) -> None:
        began = time.perf_counter()
        with accelerator.autocast():
            eval_loss = evaluate(loss_module, eval_examples, train.micro_batch_size, pad_id,
                                 train.loss_chunk_tokens, device, accelerator)
        result.eval_seconds += time.perf_counter() - began
        elapsed = time.perf_counter() - start
        metrics = {"step": step_no, "total_steps": total_steps, "epoch": epoch, "eval_loss": eval_loss,
                   "elapsed_s": elapsed, "remaining_s": elapsed / max(1, step_no) * (total_steps - step_no)}
        result.eval_history.append(metrics)
        for cb in callbacks:
            cb.on_evaluate(metrics)

    # Step losses stay on the device until a log, checkpoint or validation needs them, so a GPU
    # never waits for the host between steps; on the CPU there is no queue, so every step reports.
    pending: list[tuple[dict[str, Any], torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        values = torch.stack([v for _, v in pending]).tolist()  # the one host-device sync
        reported = [metrics for metrics, _ in pending]
        pending.clear()
        for metrics, (loss_value, grad_norm) in zip(reported, values, strict=True):
            if not math.isfinite(loss_value):
                raise TrainingError(f"loss diverged at step {metrics['step']} (loss={loss_value}); "
                                    "lower train.lr or check the data")
            metrics.update(loss=loss_value, grad_norm=grad_norm)
            result.history.append(metrics)
            for cb in callbacks:
                cb.on_step_end(metrics)

    def must_report(step_no: int) -> bool:
        return (device.type in REPORT_EVERY_STEP_ON or step_no == total_steps or step_no % train.log_every == 0
                or bool(train.save_every and step_no % train.save_every == 0)
                or bool(eval_examples and train.eval_every and step_no % train.eval_every == 0))

    at_boundary = False
    try:
        if eval_examples and resume is None:
            report_eval(0, 0.0)  # the untrained adapter's loss: the baseline to beat
        for step_no, step in enumerate(steps, 1):
            if step_no <= result.steps_done:
                continue
            if _stop_requested(stop, accelerator):
                at_boundary = True
                raise KeyboardInterrupt
            batches = [collate(rows, pad_id) for rows in step.micro_batches]
            step_tokens = sum(b.num_tokens for b in batches)
            batches = [b for b in batches if b.num_targets]  # nothing to learn, nothing to compute
            n_targets = max(1, sum(b.num_targets for b in batches))
            share = share_of(batches, accelerator)
            step_loss = torch.zeros((), dtype=torch.float32, device=device)
            try:
                for i, (batch, weight) in enumerate(share):
                    check_test_budget(batch.num_computed, token_budget)
                    # Only the last micro-batch of a step needs to synchronise gradients across processes.
                    sync = accelerator.no_sync(loss_module) if i < len(share) - 1 else nullcontext()
                    with sync:
                        with accelerator.autocast():  # bf16 on a GPU; nothing on the CPU
                            loss = loss_module(batch.to_tensors(device), train.loss_chunk_tokens) / n_targets
                        # DDP and FSDP average gradients over processes; each process's sum is wanted.
                        accelerator.backward(loss * (weight * processes))
                    step_loss += loss.detach() * weight
            except (RuntimeError, MemoryError) as e:
                if not is_out_of_memory(e):
                    raise
                if processes > 1:
                    raise TrainingError(f"out of memory at step {step_no} in process {accelerator.process_index} "
                                        f"of {processes}; the out-of-memory retries run in single-process training "
                                        "only: lower train.micro_batch_size (raise train.grad_accum to keep the "
                                        "batch) or add an overlay with --add") from None
                # Forget this step entirely (partial gradients, tensors); the steps before it stand.
                del batches, step_loss
                loss = None
                optimizer.zero_grad(set_to_none=True)
                flush()
                result.seconds = time.perf_counter() - start
                free_memory()
                raise StepOutOfMemory(step_no, e, result) from None
            step_loss = summed_over_processes(step_loss, accelerator)
            result.trained_tokens += step_tokens
            result.computed_tokens += sum(b.num_computed for b in batches)
            result.supervised_tokens += sum(b.num_targets for b in batches)
            grad_norm = (accelerator.clip_grad_norm_(params, train.max_grad_norm) if train.max_grad_norm
                         else torch.zeros((), device=device))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps_done = step_no
            result.rng_state = capture_rng()
            elapsed = time.perf_counter() - start
            metrics = {"step": step_no, "total_steps": total_steps, "epoch": step.epoch, "lr": lr,
                       "trained_tokens": result.trained_tokens,
                       "tokens_per_second": result.tokens_per_second(elapsed),
                       "elapsed_s": elapsed,
                       "remaining_s": elapsed / step_no * (total_steps - step_no),
                       "memory_gib": peak_memory_gib(device)}
            pending.append((metrics, torch.stack([step_loss, grad_norm.detach().float().to(device)])))
            if must_report(step_no):
                flush()
            if save_state is not None and state_every and step_no % state_every == 0 and step_no < total_steps:
                flush()
                result.seconds = time.perf_counter() - start
                save_state(result)
            if eval_examples and train.eval_every and step_no % train.eval_every == 0 and step_no < total_steps:
                report_eval(step_no, step.epoch)
        flush()
        if eval_examples and total_steps:
            report_eval(result.steps_done, steps[-1].epoch)
    except KeyboardInterrupt:
        flush()  # the steps that finished before Ctrl+C keep their place in the log
        result.status = "interrupted"
        result.stop_reason = (stop.reason if stop is not None else None) or "Ctrl+C"
        log.warning("interrupted at step %d of %d; saving the adapter so far", result.steps_done, total_steps)
        if at_boundary and save_state is not None:
            result.seconds = time.perf_counter() - start
            save_state(result)  # a second Ctrl+C may land mid-step; only a boundary is consistent
    except StepOutOfMemory:
        raise  # not the end of training: the caller steps down its ladder and resumes
    except BaseException:
        result.status = "failed"
        _end(callbacks, result, start)
        raise
    _end(callbacks, result, start)
    return result


def _stop_requested(stop: StopRequest | None, accelerator: Any) -> bool:
    """Whether a signal asked to stop; with several processes, whether any of them was asked."""
    asked = stop is not None and stop.reason is not None
    if accelerator.num_processes == 1:
        return asked
    flag = torch.tensor([float(asked)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item())


def _end(callbacks: Sequence[Callback], result: LoopResult, start: float) -> None:
    result.seconds = time.perf_counter() - start
    for cb in callbacks:
        cb.on_train_end(result.status)

