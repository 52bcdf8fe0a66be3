"""The queue's state file: each job's stage, written atomically after every transition.

A job moves pending -> downloaded -> unpacked -> training -> trained -> uploaded -> cleaned, or to
failed (with the stage it failed in, where a re-run picks it up again). Each transition is saved
before the next side effect starts, and every stage is written so that repeating it is harmless,
so a queue killed at any point continues where it was.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorakit.runs.manifest import now, write_json_atomic

STAGES = ("pending", "downloaded", "unpacked", "training", "trained", "uploaded", "cleaned")
FAILED = "failed"
STATE_FILE = ".lorakit-queue.json"
# Test hooks: the process kills itself (SIGKILL, no clean-up) right after this many transitions, or
# at the named point inside a stage (mid-upload, between a verification and its deletion, ...).
KILL_AFTER_ENV = "LORAKIT_TEST_QUEUE_KILL_AFTER"
KILL_AT_ENV = "LORAKIT_TEST_QUEUE_KILL_AT"


def armed(point: str) -> bool:
    """The test hook asks for a kill at ``point``."""
    return os.environ.get(KILL_AT_ENV) == point


def kill_point(point: str) -> None:
    """Test hook: die here, as ``kill -9`` would, when LORAKIT_TEST_QUEUE_KILL_AT names ``point``."""
    if armed(point):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Job:
    name: str
    source: str  # "folder" (remote folder), "archive" (remote .zip/.tar.gz) or "local" (already in work_dir)
    remote_files: list[str] = field(default_factory=list)  # relative to remote.training
    # size and hashes of each remote file as listed before download: only unchanged files are deleted
    remote_fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    local_files: list[str] = field(default_factory=list)  # what the queue put into work_dir/<name>
    state: str = "pending"
    failed_in: str | None = None  # the stage a failed job goes back to on the next run
    error: str | None = None
    output_name: str | None = None
    run_dir: str | None = None
    upload_to: str | None = None  # chosen and saved before the upload starts, so a retry reuses it
    remote_output: str | None = None  # set once the upload is verified
    note: str | None = None
    seconds: float = 0.0
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state == "cleaned"

    def reached(self, stage: str) -> bool:
        """The job is at ``stage`` or beyond it (a failed job counts from the stage it failed in)."""
        current = self.failed_in if self.state == FAILED else self.state
        return STAGES.index(current or "pending") >= STAGES.index(stage)


class QueueState:
    """``<work_dir>/.lorakit-queue.json``: the jobs by name, saved on every change."""

    def __init__(self, path: Path, jobs: dict[str, Job]) -> None:
        self.path = path
        self.jobs = jobs
        self._moves = 0

    @classmethod
    def load(cls, work_dir: Path) -> QueueState:
        path = work_dir / STATE_FILE
        if not path.is_file():
            return cls(path, {})
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, {name: Job(**job) for name, job in data.get("jobs", {}).items()})

    def save(self) -> None:
        write_json_atomic(self.path, {"version": 1, "jobs": {n: asdict(j) for n, j in sorted(self.jobs.items())}})

    def move(self, job: Job, state: str, **fields: Any) -> None:
        """Record that ``job`` reached ``state`` (a stage, or failed with ``error``), and save."""
        assert state in STAGES or state == FAILED, state
        for key, value in fields.items():
            setattr(job, key, value)
        if state == FAILED:
            job.failed_in = job.failed_in if job.state == FAILED else job.state
        else:
            job.failed_in, job.error = None, None
        job.state = state
        entry = {"state": state, "at": now()}
        if state == FAILED and job.error:
            entry["error"] = job.error
        job.history.append(entry)
        self.save()
        self._moves += 1
        kill_after = os.environ.get(KILL_AFTER_ENV)
        if kill_after and self._moves >= int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)
