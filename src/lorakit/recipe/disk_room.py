"""Room on disk for what a run will write, checked before its first step.

A run that cannot save its adapter fails at its end, after all the hours of training it then cannot keep. What a
run writes is known once its adapter exists: copies of the adapter (the final one, ``last/``, ``best/``, the
intermediate checkpoints it keeps), the rolling resume state, the tokenizer's files. The sum is a floor (logs,
plots and the card are left out), so a run refused here could not have finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit import faults
from lorakit.config.schema import TrainSection
from lorakit.disk import free_bytes, size_text
from lorakit.errors import DiskFullError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")  # what transformers 5 saves
ADAM_MOMENTS = 2  # the resume state holds the adapter and both of AdamW's moments for each of its weights


@dataclass(frozen=True)
class RunWrites:
    adapter: int  # bytes of one copy of the adapter's weights
    copies: dict[str, int]  # what holds a copy: the final adapter, last/, best/, checkpoints
    resume_state: int
    tokenizer: int

    @property
    def total(self) -> int:
        return self.adapter * sum(self.copies.values()) + self.resume_state + self.tokenizer

    def describe(self) -> str:
        copies = sum(self.copies.values())
        parts = [f"the {size_text(self.adapter)} adapter" if copies == 1 else
                 f"{copies} copies of the {size_text(self.adapter)} adapter: "
                 + ", ".join(f"{n} {what}s" if n > 1 else what for what, n in self.copies.items())]
        if self.resume_state:
            parts.append(f"the resume state {size_text(self.resume_state)}")
        if self.tokenizer:
            parts.append(f"the tokenizer {size_text(self.tokenizer)}")
        return "; ".join(parts)


def run_writes(model: Any, train: TrainSection, total_steps: int, steps_done: int, tokenizer_dir: Path) -> RunWrites:
    """What a run (``steps_done`` of ``total_steps`` already trained) will still write, at the least."""
    adapter = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    copies = {"final": 1}
    if train.keeps == "both":
        copies["last/"] = 1
    if train.keeps != "last":
        copies["best/"] = 1  # still there while the best one is written on top
    checkpoints = _checkpoints_to_write(train, total_steps, steps_done)
    if checkpoints:
        copies["checkpoint"] = checkpoints
    resume = adapter * (1 + ADAM_MOMENTS) if train.resumable else 0
    tokenizer = sum(f.stat().st_size for f in map(tokenizer_dir.joinpath, TOKENIZER_FILES) if f.is_file())
    return RunWrites(adapter, copies, resume, tokenizer)


def _checkpoints_to_write(train: TrainSection, total_steps: int, steps_done: int) -> int:
    """Checkpoints are saved at every ``save_every``-th step but the last; at most ``save_total_limit`` stay."""
    every = train.save_every
    if not every:
        return 0
    due = (total_steps - 1) // every - steps_done // every
    return max(0, min(due, train.save_total_limit or due))


def check_room(run_dir: Path, writes: RunWrites) -> None:
    """Raises DiskFullError when the disk holding ``run_dir`` has less free space than the run will write."""
    armed = faults.number("free-bytes")  # tests: the disk as full as a job on another machine would find it
    free = free_bytes(run_dir) if armed is None else armed
    if free >= writes.total:
        return
    fixes = ["free space there", "set output.dir to a disk with room"]
    if "checkpoint" in writes.copies:
        fixes.append("keep fewer checkpoints (train.save_total_limit)")
    raise DiskFullError(
        f"not enough disk space for this run in {run_dir.parent.absolute()}: {size_text(free)} free, and it will "
        f"write at least {size_text(writes.total)} ({writes.describe()}); {', '.join(fixes[:-1])} or {fixes[-1]}")
