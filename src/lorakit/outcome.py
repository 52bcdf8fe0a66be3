"""How a run stands or ended, as a typed record: a kind from a closed set, the sentence for people, and the numbers
the sentence names.

The training loop makes one when it stops, ``runs/`` writes it into the manifest's ``status_history`` and reads it
back (``RunFolder.outcome``), and the sweep, the queue and the launchers decide by its kind, never by parsing the
sentence. It sits at the top of the package, beside ``errors``, because ``train/`` makes outcomes and ``runs/``
records them, and neither may import the other's driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Kind(str, Enum):
    """What happened to a run. Each kind belongs to one manifest ``status`` (``Kind.status``)."""

    CREATED = "created"
    SUBMITTED = "submitted"  # a Slurm job was submitted for it
    RUNNING = "running"
    COMPLETED = "completed"  # trained every planned step
    EARLY_STOPPED = "early-stopped"  # early stopping ended it; complete, with the best adapter kept
    PRUNED = "pruned"  # a sweep's pruner ended it at an evaluation; complete, recorded as pruned in the study
    STOPPED = "stopped"  # Ctrl+C or SIGTERM: the adapter so far and a resume state are saved
    OUT_OF_MEMORY = "out-of-memory"  # the out-of-memory ladder had nothing left to try
    DISK_FULL = "disk-full"  # its disk cannot hold what it writes: a queue stops rather than go on to the next
    FAILED = "failed"
    CANCELLED = "cancelled"  # scancel

    @property
    def status(self) -> str:
        """The manifest's ``status`` word for this kind (the set ``runs.manifest.STATUSES``)."""
        return _STATUS_OF.get(self, self.value)


_STATUS_OF = {Kind.EARLY_STOPPED: "completed", Kind.PRUNED: "completed", Kind.STOPPED: "interrupted",
              Kind.OUT_OF_MEMORY: "failed", Kind.DISK_FULL: "failed"}
_KIND_OF_STATUS = {"interrupted": Kind.STOPPED}


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str = ""  # the sentence people read: "pruned at step 40", "SIGTERM", "out of memory at step 3 ..."
    numbers: dict[str, Any] = field(default_factory=dict)  # what the sentence names: {"step": 40}

    @property
    def status(self) -> str:
        return self.kind.status

    @property
    def complete(self) -> bool:
        """It ended on its own terms (every step, early stopping or pruning): its adapter is a result."""
        return self.status == "completed"

    def entry(self, at: str) -> dict[str, Any]:
        """The ``status_history`` entry: ``status`` and ``reason`` as before, plus ``kind`` and ``numbers``."""
        entry: dict[str, Any] = {"status": self.status, "at": at, "kind": self.kind.value}
        if self.reason:
            entry["reason"] = self.reason
        if self.numbers:
            entry["numbers"] = dict(self.numbers)
        return entry

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Outcome:
        """Read a ``status_history`` entry; those written before kinds existed get theirs from status and reason."""
        reason = entry.get("reason") or ""
        try:
            kind = Kind(entry["kind"])
        except (KeyError, ValueError):
            kind = _older_kind(entry.get("status", "failed"), reason)
        return cls(kind, reason, dict(entry.get("numbers") or {}))


def _older_kind(status: str, reason: str) -> Kind:
    # Manifests from before typed outcomes: the sentences they wrote are fixed now, so reading them is safe here.
    if status == "completed" and reason.startswith("pruned at step"):
        return Kind.PRUNED
    if status == "completed" and reason.startswith("stopped early at step"):
        return Kind.EARLY_STOPPED
    if status == "failed" and reason.startswith("out of memory at step"):
        return Kind.OUT_OF_MEMORY
    if status in _KIND_OF_STATUS:
        return _KIND_OF_STATUS[status]
    try:
        return Kind(status)
    except ValueError:
        return Kind.FAILED
