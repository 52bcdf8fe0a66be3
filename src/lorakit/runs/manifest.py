"""manifest.json: what a run is, where it came from, and what happened to it.

It is written when the run folder is created and rewritten atomically (temp file + rename) at
every change, so a reader never sees half a file, even if the run is killed mid-write.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lorakit.atomic import write_json_atomic
from lorakit.outcome import Kind, Outcome
from lorakit.redaction import redact

MANIFEST_FILE = "manifest.json"
STATUSES = ("created", "submitted", "running", "completed", "interrupted", "failed", "cancelled")  # Kind.status
UNFINISHED = ("created", "submitted", "running")  # a run in one of these has not said how it ended


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """A dict kept in sync with ``manifest.json``: every ``update`` or status change is saved.

    In a multi-process run only the main process writes; the others hold a copy that is never saved.
    """

    def __init__(self, path: Path, data: dict[str, Any], writable: bool = True) -> None:
        self.path = path
        self.data = data
        self.writable = writable

    @classmethod
    def create(cls, run_dir: Path, **fields: Any) -> Manifest:
        """A new manifest with a ``run_id`` no other run has (the queue tells its own uploads by it)."""
        manifest = cls(run_dir / MANIFEST_FILE, {"run_id": uuid.uuid4().hex, "status": "created",
                                                   "status_history": [], **fields})
        manifest.set_status(Outcome(Kind.CREATED))
        return manifest

    @classmethod
    def load(cls, run_dir: Path, writable: bool = True) -> Manifest:
        path = run_dir / MANIFEST_FILE
        return cls(path, json.loads(path.read_text(encoding="utf-8")), writable)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def set_status(self, outcome: Outcome) -> None:
        self.data["status"] = outcome.status
        self.data["status_history"].append(outcome.entry(now()))
        self.save()

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.data)

    def save(self) -> None:
        if self.writable:  # credentials inside values (URLs with a password) never reach the file
            write_json_atomic(self.path, redact(self.data))


def outcome_of(manifest: dict[str, Any]) -> Outcome:
    """How the run stands, from a manifest's dict (old manifests included: their kind comes from their status)."""
    history = manifest.get("status_history") or [{"status": manifest.get("status", "failed")}]
    return Outcome.from_entry(history[-1])


def created_at(manifest: dict[str, Any]) -> str:
    """When the run folder was made (its first status entry), as ISO text; "" when unknown."""
    return (manifest.get("status_history") or [{}])[0].get("at", "")
