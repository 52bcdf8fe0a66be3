"""The queue's state file: each job's stage, written atomically after every transition.

A job moves pending -> downloaded -> unpacked -> training -> trained -> uploaded -> cleaned, or to
failed (with the stage it failed in, where a re-run picks it up again). Each transition is saved
before the next side effect starts, and every stage is written so that repeating it is harmless,
so a queue killed at any point continues where it was.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from lorakit import faults
from lorakit.runs.manifest import now, write_json_atomic

log = logging.getLogger(__name__)

STAGES = ("pending", "downloaded", "unpacked", "training", "trained", "uploaded", "cleaned")
FAILED = "failed"
STATE_FILE = ".lorakit-queue.json"


class Source(str, Enum):
    """Where a job's dataset comes from (stored in the state file as its value)."""

    FOLDER = "folder"  # a remote folder under remote.training
    ARCHIVE = "archive"  # a remote .zip / .tar.gz under remote.training
    LOCAL = "local"  # a folder put into work_dir by hand: never downloaded, never deleted remotely
    CLASH = "clash"  # two remote entries that would share one name (a folder and an archive): left alone, said why

    @property
    def downloaded(self) -> bool:
        return self in (Source.FOLDER, Source.ARCHIVE)


@dataclass
class Job:
    name: str  # the dataset's name as found (a remote folder, an archive's stem, a folder in work_dir): untrusted
    source: str  # a Source value
    key: str = ""  # the job's key in the state, and its folder under output_dir: letters, digits, . _ -, unique
    folder: str = ""  # its folder in work_dir (the key, except for a folder put there by hand)
    remote_files: list[str] = field(default_factory=list)  # relative to remote.training
    # size, hashes and modification time of each remote file as listed before download, and the sha256 of the
    # bytes downloaded: only files provably unchanged since are deleted
    remote_fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    local_files: list[str] = field(default_factory=list)  # what the queue put into work_dir/<folder>
    local_sha256: dict[str, str] = field(default_factory=dict)  # each of them as it was put there
    content: str | None = None  # the dataset as downloaded and unpacked (lorakit.runs.fingerprint.content_sha256)
    deleting: list[str] = field(default_factory=list)  # remote files whose deletion began (a kill may cut it short)
    remote_deleted: bool = False  # that deletion finished: a file of that name there now is someone's new upload
    remote_changed: str | None = None  # how the remote dataset changed after its download (it was kept)
    generation: int = 1  # 2, 3...: new content under a name whose earlier content was trained and cleaned
    state: str = "pending"
    failed_in: str | None = None  # the stage a failed job goes back to on the next run
    error: str | None = None
    output_name: str | None = None
    run_dir: str | None = None
    upload_to: str | None = None  # chosen and saved before the upload starts, so a retry reuses it
    remote_output: str | None = None  # set once the upload is verified
    # The ray executor: the job's claim on its upload target (keep.CLAIM_FILE), the node that trained it, and each
    # file of its result (size, sha256) as that node uploaded it: what the remote copy is checked against once the
    # node's own copy is gone.
    claim: str | None = None
    node: str | None = None
    result_files: dict[str, dict[str, Any]] | None = None
    note: str | None = None
    seconds: float = 0.0
    history: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = self.key or self.name  # a state file written before keys: the name was the key and folder
        self.folder = self.folder or self.key

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

    @classmethod
    def load(cls, work_dir: Path) -> QueueState:
        """The state file, or a new state when there is none. An unreadable one is kept aside, never deleted,
        and the queue starts afresh: what is deleted is decided from the remote and the run folders at that
        moment, never from this file alone, so a lost state costs at most a retraining."""
        path = work_dir / STATE_FILE
        if not path.is_file():
            return cls(path, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            jobs = [Job(**{"key": key, **job}) for key, job in data["jobs"].items()]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            log.warning("queue: %s is unreadable (%s: %s); kept it as %s and started a new state (datasets already "
                        "trained are matched to their runs by content, so at most a retraining is lost)", path,
                        type(e).__name__, str(e)[:100], aside.name)
            return cls(path, {})
        return cls(path, {job.key: job for job in jobs})

    def save(self) -> None:
        write_json_atomic(self.path, {"version": 2, "jobs": {k: asdict(j) for k, j in sorted(self.jobs.items())}})

    def of_dataset(self, name: str) -> list[Job]:
        """The jobs of the remote dataset ``name``, oldest generation first."""
        return sorted((j for j in self.jobs.values() if j.name == name and j.source != Source.LOCAL),
                      key=lambda j: j.generation)

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
        faults.reached("transition")  # LORAKIT_FAULTS=transition:N dies right after the N-th
