"""The runs in an output folder: find one, summarise them, clean up failed ones, add notes."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import RunError
from lorakit.outcome import Kind
from lorakit.runs.manifest import MANIFEST_FILE, created_at, outcome_of
from lorakit.runs.naming import version_of
from lorakit.runs.process import shown_status
from lorakit.runs.trainer_log import TrainerLog

RESUME_FILE = "resume_state.pt"  # lorakit.train.resume.STATE_FILE, named here without importing torch
NO_CLEAN_ENV = "LORAKIT_NO_CLEAN"
# What counts as a trained model in any run folder (lorakit's adapter, sd-scripts' LoRAs, checkpoints, GGUF).
MODEL_PATTERNS = ("*.safetensors", "*.ckpt", "*.pt", "*.bin", "*.gguf")
IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.webp")  # sample images: worth keeping, too


def model_files(run_dir: Path, patterns: tuple[str, ...] = MODEL_PATTERNS) -> list[Path]:
    """The non-empty files in ``run_dir`` (at any depth) that match one of ``patterns``."""
    if not run_dir.is_dir():
        return []
    found = {p for pattern in patterns for p in run_dir.rglob(pattern) if p.is_file() and p.stat().st_size > 0}
    return sorted(found)


def is_run(folder: Path) -> bool:
    """Whether ``folder`` is a run folder (lorakit's own or an external trainer's: it has a manifest)."""
    return (folder / MANIFEST_FILE).is_file()


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """A run's manifest, read only (changes go through ``RunFolder``)."""
    path = run_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{run_dir}: not a lorakit run (no manifest.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict):
        raise RunError(f"{path}: holds a {type(manifest).__name__}, not a lorakit run manifest")
    return manifest


def find_run(ref: str, runs_dir: Path) -> Path:
    """A run folder from a path, a folder name under ``runs_dir``, or a run name (its latest version).

    Raises:
        RunError: nothing matches.
    """
    for candidate in (Path(ref), runs_dir / ref):
        if is_run(candidate):
            return candidate
    versions = versions_of(ref, runs_dir)
    if versions:
        return versions[-1]
    deeper = [found for holder in where_runs_are(runs_dir) if (found := _run_in(ref, holder))]
    where = (f"; found {', '.join(map(str, deeper))}: give its path" if deeper
             else " (lorakit runs list shows what there is)")
    raise RunError(f"no run {ref!r}: not a run folder, and nothing of that name in {runs_dir}/{where}")


def _run_in(ref: str, folder: Path) -> Path | None:
    if is_run(folder / ref):
        return folder / ref
    versions = versions_of(ref, folder)
    return versions[-1] if versions else None


def run_dirs(runs_dir: Path) -> list[Path]:
    """The run folders (those with a manifest) under ``runs_dir``, by name: its children, and for the
    queue's layout (``outputs/<dataset>/<run>``) the children of a child that is not a run itself."""
    if not runs_dir.is_dir():
        return []
    found = []
    for child in (d for d in runs_dir.iterdir() if d.is_dir()):
        if is_run(child):
            found.append(child)
        else:
            found.extend(d for d in child.iterdir() if d.is_dir() and is_run(d))
    return sorted(found, key=lambda d: (d.name, str(d)))


def where_runs_are(runs_dir: Path) -> list[Path]:
    """When ``runs_dir`` holds no run: the folders below it (below the working directory if it does not exist)
    that hold runs, where to point ``--dir`` when output.dir is deeper, as in an imported LLaMA-Factory
    config's ``saves/<model>/lora/<name>-v001``."""
    if run_dirs(runs_dir):
        return []
    return folders_holding_runs(runs_dir if runs_dir.is_dir() else Path("."))


def folders_holding_runs(top: Path, depth: int = 4, visits: int = 2000) -> list[Path]:
    """The folders below ``top`` (``depth`` levels and ``visits`` folders at most, never inside a run) that
    hold run folders."""
    found: list[Path] = []
    level = [top]
    for _ in range(depth + 1):
        below = []
        for folder in (f for f in level if f.is_dir() and not is_run(f)):
            visits -= 1
            if visits < 0:
                return sorted(found)
            try:
                children = [d for d in folder.iterdir() if d.is_dir() and not d.is_symlink()]
            except OSError:  # a folder this user may not read
                continue
            if folder != top and any(is_run(d) for d in children):
                found.append(folder)
            below.extend(children)
        level = below
    return sorted(found)


def versions_of(name: str, runs_dir: Path) -> list[Path]:
    """The run folders ``<name>-vNNN`` under ``runs_dir``, oldest version first."""
    found = [d for d in run_dirs(runs_dir) if d.name.rsplit("-v", 1)[0] == name and version_of(d.name)]
    return sorted(found, key=lambda d: version_of(d.name) or 0)




def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def has_checkpoint(run_dir: Path) -> bool:
    checkpoints = run_dir / "checkpoints"
    return (run_dir / RESUME_FILE).is_file() or (checkpoints.is_dir() and any(checkpoints.iterdir()))


ENDED = ("failed", "interrupted", "cancelled")  # the statuses a run that did not complete ends in
# A run writes its last files moments before its ending status (whose time is in whole seconds); a file changed
# well after that was written by someone else. lorakit itself updates only these after the end (notes, evaluations).
AFTER_END_S = 120
UPDATED_AFTER_END = frozenset({MANIFEST_FILE, "README.md", "CARD.md"})


def worth_keeping(run_dir: Path) -> str | None:
    """What in a run folder is worth keeping (a checkpoint or resume state, a model file, sample images, notes
    someone wrote with lorakit or as a file after the run ended), said for a log line; None when it holds nothing
    of that kind. The one rule for discarding an unfinished run."""
    manifest = read_manifest(run_dir)
    if notes := manifest.get("notes"):
        return f"{len(notes)} note(s) written with lorakit runs note" if isinstance(notes, list) else "notes"
    if later := written_after_end(run_dir, manifest):
        return f"a file written after the run ended ({later.relative_to(run_dir)})"
    if has_checkpoint(run_dir):
        return "a checkpoint"
    if models := model_files(run_dir):
        return f"a model file ({models[0].relative_to(run_dir)})"
    if images := model_files(run_dir, IMAGE_PATTERNS):
        return f"images ({images[0].relative_to(run_dir)})"
    return None


def written_after_end(run_dir: Path, manifest: dict[str, Any]) -> Path | None:
    """A file of an ended run (failed, interrupted, cancelled) changed well after its ending status was written,
    other than lorakit's own manifest and card; None where there is none or the end is not known."""
    from datetime import datetime

    history = manifest.get("status_history")
    last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else {}
    if manifest.get("status") not in ENDED or last.get("status") != manifest.get("status"):
        return None
    try:
        ended = datetime.fromisoformat(str(last.get("at"))).timestamp()
    except ValueError:
        return None
    for path in sorted(run_dir.rglob("*")):
        if (path.is_file() and not path.is_symlink() and path.relative_to(run_dir).as_posix() not in UPDATED_AFTER_END
                and path.stat().st_mtime > ended + AFTER_END_S):
            return path
    return None


# The kinds a status word hides: a pruned trial and an out-of-memory run read differently from their status alone.
ENDINGS_SHOWN = frozenset({Kind.EARLY_STOPPED, Kind.PRUNED, Kind.OUT_OF_MEMORY, Kind.DISK_FULL})


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: str
    status: str
    base_model: str
    data: str
    steps: str
    train_loss: float | None
    eval_loss: float | None
    created: str
    size_bytes: int
    ended_as: str = ""  # the outcome's kind where it says more than the status: pruned, early-stopped, disk-full

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def status_text(self) -> str:
        """``completed (pruned)``: the status, and how it ended where that says more."""
        return f"{self.status} ({self.ended_as})" if self.ended_as else self.status


def steps_text(run_dir: Path, manifest: dict[str, Any]) -> str:
    """``done/total``; while a run trains (or after it crashed) done is its log's last step. An external trainer
    whose config names no step count (no ``steps_key``) may say it in its log (LLaMA-Factory's ``total_steps``)."""
    done, total = (manifest.get("metrics") or {}).get("train_steps"), manifest.get("total_steps")
    live = done is None and manifest.get("status") == "running"
    if live or total is None:
        entries = TrainerLog.of(run_dir).read()  # maybe a trainer's own file: only whole numbers are taken from it
        if live:
            done = max((e["current_steps"] for e in entries if _whole(e.get("current_steps"))), default=None)
        if total is None:
            total = next((e["total_steps"] for e in reversed(entries) if _whole(e.get("total_steps"))), None)
    return f"{done if done is not None else '-'}/{total if total is not None else '-'}"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def summarise(run_dir: Path) -> RunSummary:
    m = read_manifest(run_dir)
    metrics = m.get("metrics") or {}
    data = list(m.get("data_files") or {})
    status, kind = shown_status(m), outcome_of(m).kind
    return RunSummary(name=run_dir.name, path=str(run_dir), status=status, base_model=_base_model(m),
                      data=", ".join(Path(d).name for d in data) or "-", steps=steps_text(run_dir, m),
                      train_loss=metrics.get("train_loss"), eval_loss=metrics.get("eval_loss"),
                      created=created_at(m), size_bytes=folder_size(run_dir),
                      ended_as=kind.value if status == kind.status and kind in ENDINGS_SHOWN else "")


def _base_model(m: dict[str, Any]) -> str:
    """A lorakit run's base model; for an external run what its config or its LoRA's metadata names, or "-"."""
    if (m.get("base_model") or {}).get("name"):
        return str(m["base_model"]["name"])
    config = m.get("config") or {}
    if isinstance(config.get("model"), dict) and config["model"].get("name_or_path"):
        return str(config["model"]["name_or_path"])
    for key in ("pretrained_model_name_or_path", "model_name_or_path", "base_model"):
        if isinstance(config.get(key), str):
            return config[key]
    for meta in (m.get("model_metadata") or {}).values():
        if meta.get("ss_sd_model_name"):
            return str(meta["ss_sd_model_name"])
    return "-"


def list_runs(runs_dir: Path, status: str | None = None, sweep: str | None = None) -> list[RunSummary]:
    """The runs under ``runs_dir``, oldest first; only those of ``status``, and of the sweep named ``sweep``."""
    dirs = [d for d in run_dirs(runs_dir)
            if sweep is None or (read_manifest(d).get("sweep") or {}).get("name") == sweep]
    summaries = sorted((summarise(d) for d in dirs), key=lambda s: (s.created, s.name))
    return [s for s in summaries if status is None or s.status == status]


@dataclass(frozen=True)
class CleanDecision:
    run: str
    removed: bool
    reason: str


def clean_runs(runs_dir: Path, dry_run: bool = False) -> list[CleanDecision]:
    """Remove the folders of failed, interrupted or cancelled runs that hold no model file (an adapter,
    an intermediate LoRA, a checkpoint), no image (samples), no resume state and no note (``runs note``, or a file
    someone wrote after the run ended).

    Everything else is kept, with the reason. ``LORAKIT_NO_CLEAN=1`` turns removal off.

    Raises:
        RunError: LORAKIT_NO_CLEAN is set.
    """
    if os.environ.get(NO_CLEAN_ENV, "") not in ("", "0"):
        raise RunError(f"{NO_CLEAN_ENV}={os.environ[NO_CLEAN_ENV]}: runs clean removes nothing")
    decisions = []
    for run_dir in run_dirs(runs_dir):
        # a crashed run is kept: its process is gone by what this machine can see, which is not proof enough
        # to delete (a process in another PID namespace under the same host name looks gone)
        status = shown_status(read_manifest(run_dir))
        if status not in ENDED:
            decisions.append(CleanDecision(run_dir.name, False, f"kept: {status}"))
        elif held := worth_keeping(run_dir):
            decisions.append(CleanDecision(run_dir.name, False, f"kept: {status} but holds {held}"))
        else:
            if not dry_run:
                shutil.rmtree(run_dir)
            verb = "would remove" if dry_run else "removed"
            decisions.append(CleanDecision(run_dir.name, True, f"{verb}: {status}, no model file, no checkpoint"))
    return decisions


def add_note(run_dir: Path, text: str) -> dict[str, Any]:
    """Append a note to the manifest and, when the run has one, to its model card."""
    if not text.strip():
        raise RunError("a note needs some text")
    from lorakit.runs.folder import RunFolder

    return RunFolder.open(run_dir).add_note(text)
