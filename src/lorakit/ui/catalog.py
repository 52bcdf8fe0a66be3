"""What the dashboard shows, found on disk: run folders (both layouts), queue workspaces and sweeps.

Everything here reads; nothing writes. A file that cannot be read (a half-written manifest, a corrupt state file
or journal) becomes that item's "unreadable: reason", and everything else is shown as usual.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lorakit.config.load import tomllib
from lorakit.queue.workspace import Workspace
from lorakit.runs.catalog import run_dirs
from lorakit.runs.summary import RunView, read_run

QUEUE_STATE = ".lorakit-queue.json"
SWEEP_SPEC = "sweep.json"


def item_id(path: Path) -> str:
    """A stable id for a folder or file in URLs (its resolved path never appears there)."""
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]


@dataclass
class Sources:
    run_roots: list[Path] = field(default_factory=list)
    queues: list[Path] = field(default_factory=list)  # workspace files
    sweeps: list[Path] = field(default_factory=list)  # sweeps/<name>/ folders

    @classmethod
    def of(cls, paths: list[Path]) -> Sources:
        """Output folders, queue workspaces (.toml) and sweeps among ``paths``; none given: ./runs and ./sweeps."""
        found = cls()
        for path in paths or [p for p in (Path("runs"), Path("sweeps")) if p.is_dir()] or [Path("runs")]:
            if path.is_file() and path.suffix == ".toml":
                found.queues.append(path)
                output = _workspace_paths(path).get("output_dir")
                if output is not None:
                    found.run_roots.append(output)
            elif (path / SWEEP_SPEC).is_file():
                found.sweeps.append(path)
            elif path.is_dir() and any((child / SWEEP_SPEC).is_file() for child in path.iterdir() if child.is_dir()):
                found.sweeps += sorted(c for c in path.iterdir() if (c / SWEEP_SPEC).is_file())
            else:
                found.run_roots.append(path)
        return found

    def runs(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for root in self.run_roots:
            for run in run_dirs(root):
                seen.setdefault(run, None)
        return list(seen)

    def find_run(self, run_id: str) -> Path | None:
        return next((run for run in self.runs() if item_id(run) == run_id), None)


def _workspace_paths(workspace: Path) -> dict[str, Path]:
    """work_dir and output_dir of a queue workspace, relative to its file (as the queue reads them). Read from
    the TOML alone, not validated whole: the pages of a workspace whose trainer config is gone still show."""
    try:
        raw = tomllib.loads(workspace.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    defaults = {"output_dir": Workspace.model_fields["output_dir"].default}  # work_dir has none: it is required
    return {key: workspace.parent / str(raw[key] if key in raw else defaults[key]) for key in ("work_dir", "output_dir")
            if key in raw or key in defaults}


@dataclass(frozen=True)
class RunRow:
    id: str
    view: RunView

    def as_dict(self) -> dict[str, Any]:
        v = self.view
        best = v.best
        return {"id": self.id, "name": v.name, "path": str(v.path), "status": v.status, "reason": v.reason,
                "base_model": v.base_model if not v.unreadable else "-",
                "data": ", ".join(Path(d).name for d in v.data) or "-", "steps": v.steps if not v.unreadable else "-",
                "best": f"{best[0]} {best[2]:.4g} @ {best[1]}" if best else "-",
                "train_loss": v.metrics.get("train_loss"), "eval_loss": v.metrics.get("eval_loss"),
                "created": v.created, "duration_s": v.duration_s, "size_bytes": v.size_bytes, "sweep": v.sweep}


def run_rows(sources: Sources) -> list[RunRow]:
    return [RunRow(item_id(run), read_run(run)) for run in sources.runs()]


@dataclass
class QueueView:
    id: str
    workspace: Path
    jobs: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, str]] = field(default_factory=list)  # what the queue warned about, newest last
    unreadable: str | None = None


def read_queue(workspace: Path) -> QueueView:
    """The queue's jobs from its state file, read only (the queue itself moves an unreadable one aside)."""
    view = QueueView(item_id(workspace), workspace)
    work_dir = _workspace_paths(workspace).get("work_dir")
    if work_dir is None:
        view.unreadable = f"{workspace.name}: not a readable workspace (a TOML file with work_dir)"
        return view
    from lorakit.queue.notices import read_notices

    view.notices = read_notices(work_dir)
    state = work_dir / QUEUE_STATE
    if not state.is_file():
        return view
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
        view.jobs = [{"key": key, **job} for key, job in sorted(data["jobs"].items())]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        view.unreadable = f"{state.name} unreadable: {str(e)[:200]}"
    return view


@dataclass
class SweepView:
    id: str
    folder: Path
    name: str
    trials: list[Any] = field(default_factory=list)  # sweep.results.TrialRow
    direction: str = "minimize"
    metric: str = ""
    unreadable: str | None = None


def read_sweep(folder: Path) -> SweepView:
    """A sweep's trials, read from a copy of its journal (opening a study may write; the dashboard never does)."""
    view = SweepView(item_id(folder), folder, folder.name)
    try:
        from lorakit.sweep.results import trial_rows
        from lorakit.sweep.study import load_sweep
    except ImportError as e:  # optuna is an extra
        view.unreadable = f"sweeps need optuna: {e}"
        return view
    with tempfile.TemporaryDirectory(prefix="lorakit-ui-") as scratch:
        copy = Path(scratch) / folder.name
        try:
            shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("workers", "*.lock"))
            # sweep.json names its folder absolutely: point it at the copy, or Optuna appends to the real journal.
            sweep = replace(load_sweep(folder.name, Path(scratch)), folder=str(copy))
            view.trials = trial_rows(sweep)
            space = sweep.space(sweep.base_config().config)
            view.direction, view.metric = space.direction, space.metric
        except Exception as e:  # a corrupt journal or spec: this sweep says so, the page goes on
            view.unreadable = f"unreadable: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
    return view
