"""A run folder and its manifest from creation to how the run ended: the one writer of both.

lorakit training (``lorakit.recipe``), external trainers (``lorakit.external``), Slurm submission, evaluation,
notes and the queue all change a run through these methods, so every run folder has the same life:
created -> running -> completed | interrupted | failed (and submitted / cancelled for Slurm). A test
(``tests/unit/test_one_writer.py``) fails when a module outside ``runs/`` writes ``manifest.json`` or
``trainer_log.jsonl`` itself.

What each method writes:

============================  ====================================================================
``create``                    a new ``<name>-vNNN`` folder and its first manifest (status created)
``update(**fields)``          fields that describe the run (base model, data, plan, attempts, outputs)
``start`` / ``end``           a status entry (a typed ``Outcome``); ``start`` also the training process (host, pid),
                              ``end`` the final fields and the card
``submitted``                 the Slurm job id and status submitted
``slurm_ended``               Slurm's last word on the job, and failed when the run could not say so
``add_note``                  a note, in the manifest and the card
``add_evaluation``            an ``lorakit eval`` result (one per data file and engine), and the card
``refresh_card``              the model card (README.md, or CARD.md beside a trainer's own README.md)
``trainer_log``               trainer_log.jsonl: append (the loop's callback), trim after a resume point,
                              an external trainer's curve (``runs.trainer_log.TrainerLog``)
============================  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.outcome import Kind, Outcome
from lorakit.runs.card import refresh_card, write_card
from lorakit.runs.manifest import UNFINISHED, Manifest, now
from lorakit.runs.naming import allocate_pattern_dir, allocate_run_dir
from lorakit.runs.process import this_process
from lorakit.runs.trainer_log import TrainerLog


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
        """An existing run; ``writable=False`` for a process that must not write (not the main one)."""
        return cls(path, Manifest.load(path, writable))

    @property
    def data(self) -> dict[str, Any]:
        """The manifest as read (change it only through the methods here)."""
        return self.manifest.data

    @property
    def status(self) -> str:
        return self.manifest.status

    @property
    def outcome(self) -> Outcome:
        return self.manifest.outcome

    @property
    def trainer_log(self) -> TrainerLog:
        return TrainerLog.of(self.path)

    def update(self, **fields: Any) -> None:
        self.manifest.update(**fields)

    def start(self, reason: str | None = None) -> None:
        """Status running, and this process (host, pid) so ``runs.control.stop_run`` can ask it to stop."""
        if self.manifest.writable:
            self.manifest.data["process"] = this_process()
        self.manifest.set_status(Outcome(Kind.RUNNING, reason or ""))

    def end(self, outcome: Outcome, card: bool = True, **fields: Any) -> None:
        """Record how the run ended (and what it measured), then its model card."""
        if fields:
            self.manifest.update(**fields)
        self.manifest.set_status(outcome)
        if card and self.manifest.writable:
            write_card(self.path, self.manifest.data)

    def fail(self, reason: str) -> None:
        """Mark the run failed (no card: a run that failed before training has nothing to describe)."""
        self.end(Outcome(Kind.FAILED, reason), card=False)

    def submitted(self, job_id: str, script: str) -> None:
        """The run's Slurm job was submitted (held: released only after this is on disk)."""
        self.end(Outcome(Kind.SUBMITTED, f"Slurm job {job_id}", {"job_id": job_id}), card=False,
                 slurm={"job_id": job_id, "script": script, "submitted_at": now()})

    def slurm_ended(self, state: str, exit_code: str, failure: str) -> None:
        """Slurm's last state of the job; a run that never said how it ended is marked failed with ``failure``."""
        if self.status in UNFINISHED:
            self.manifest.set_status(Outcome(Kind.FAILED, failure))
        slurm = dict(self.manifest.data.get("slurm") or {})
        if slurm.get("state") != state:
            self.manifest.update(slurm={**slurm, "state": state, "exit_code": exit_code})

    def cancelled(self, reason: str) -> None:
        self.manifest.set_status(Outcome(Kind.CANCELLED, reason))

    def add_note(self, text: str) -> dict[str, Any]:
        note = {"at": now(), "text": text.strip()}
        self.manifest.update(notes=[*self.manifest.data.get("notes", []), note])
        self.refresh_card()
        return note

    def add_evaluation(self, data: str, engine: str, results: dict[str, Any], limit: int | None = None) -> None:
        """An evaluation's results; a later one of the same data, engine and case limit replaces it."""
        # Evaluations recorded before llama.cpp existed name no engine: they were transformers'.
        kept = [e for e in self.manifest.data.get("evaluations", [])
                if (e.get("data"), e.get("engine", "transformers"), e.get("limit")) != (data, engine, limit)]
        entry = {"data": data, "engine": engine, "at": now(), "results": results, **({"limit": limit} if limit else {})}
        self.manifest.update(evaluations=[*kept, entry])
        self.refresh_card()

    def refresh_card(self) -> None:
        """Rewrite the model card after the manifest changed, if the run has one."""
        if self.manifest.writable:
            refresh_card(self.path, self.manifest.data)
