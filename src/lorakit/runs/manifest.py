"""manifest.json: what a run is, where it came from, and what happened to it.

It is written when the run folder is created and rewritten atomically (temp file + rename) at
every change, so a reader never sees half a file, even if the run is killed mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("created", "running", "completed", "interrupted", "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Manifest:
    """A dict kept in sync with ``manifest.json``: every ``update`` or status change is saved."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def create(cls, run_dir: Path, **fields: Any) -> Manifest:
        manifest = cls(run_dir / "manifest.json", {"status": "created", "status_history": [], **fields})
        manifest.set_status("created")
        return manifest

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        path = run_dir / "manifest.json"
        return cls(path, json.loads(path.read_text(encoding="utf-8")))

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def set_status(self, status: str, reason: str | None = None) -> None:
        assert status in STATUSES, status  # a programming error, never user input
        entry = {"status": status, "at": now()}
        if reason:
            entry["reason"] = reason
        self.data["status"] = status
        self.data["status_history"].append(entry)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)
