"""A run folder and its manifest from creation to how the run ended: the one writer of both.

lorakit training (``lorakit.recipe``), external trainers (``lorakit.external``), Slurm submission
and the queue all create, start and end runs through this, so every run folder has the same
life: created -> running -> completed | interrupted | failed (and submitted / cancelled for Slurm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.runs.card import write_card
from lorakit.runs.manifest import Manifest
from lorakit.runs.naming import allocate_pattern_dir, allocate_run_dir


@dataclass
class RunFolder:
    path: Path
    manifest: Manifest

    @classmethod
    def create(cls, root: Path, name: str, **fields: Any) -> RunFolder:
        """A new folder ``<name>-vNNN`` (or ``name`` with its ``{version}`` filled) with a first manifest."""
        path = allocate_pattern_dir(root, name) if "{version}" in name else allocate_run_dir(root, name)
        return cls(path, Manifest.create(path, name=path.name, **fields))

    @classmethod
    def open(cls, path: Path, writable: bool = True) -> RunFolder:
        return cls(path, Manifest.load(path, writable))

    @property
    def status(self) -> str:
        return self.manifest.status

    def update(self, **fields: Any) -> None:
        self.manifest.update(**fields)

    def start(self, reason: str | None = None) -> None:
        self.manifest.set_status("running", reason)

    def end(self, status: str, reason: str | None = None, card: bool = True, **fields: Any) -> None:
        """Record how the run ended (and what it measured), then its model card."""
        if fields:
            self.manifest.update(**fields)
        self.manifest.set_status(status, reason)
        if card and self.manifest.writable:
            write_card(self.path, self.manifest.data)
