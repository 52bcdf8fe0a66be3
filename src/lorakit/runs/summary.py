"""What a person wants to know about one run, read (never written) from its folder: the summary that
``lorakit runs show`` prints and the dashboard's run page shows, from the same code.

Reading is forgiving: a half-written manifest or a missing log makes that part "unreadable: reason", never an
error, because a dashboard over live run folders reads them while they are being written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lorakit.config.load import flatten_keys
from lorakit.outcome import Outcome
from lorakit.runs.catalog import folder_size, has_checkpoint, steps_text
from lorakit.runs.manifest import MANIFEST_FILE, created_at, outcome_of
from lorakit.runs.process import CRASHED, shown_status
from lorakit.runs.trainer_log import TrainerLog

# The config keys a person looks at first (the rest is one click or `--json` away).
SETTINGS = ("model.name_or_path", "lora.r", "lora.alpha", "lora.target_modules", "data.max_length",
            "data.template", "train.lr", "train.epochs", "train.max_steps", "train.micro_batch_size",
            "train.grad_accum", "train.eval_metrics", "train.keep")
SAMPLES_DIR = "samples"  # greedy answers to train.sample_prompts, one file per step (recipe/evaluation.py)
VAL_ANSWERS_DIR = "val_answers"  # the validation answers the generated metrics were computed from, per step


@dataclass
class RunView:
    path: Path
    name: str
    unreadable: str | None = None  # why the manifest could not be read; every other field is then empty
    manifest: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None
    created: str = ""
    duration_s: float | None = None
    size_bytes: int = 0
    crashed: str | None = None  # why a run marked running is not (its process is gone), said for people

    @property
    def status(self) -> str:
        if self.crashed:
            return CRASHED
        return self.outcome.status if self.outcome else "unreadable"

    @property
    def reason(self) -> str:
        return self.crashed or (self.outcome.reason if self.outcome else (self.unreadable or ""))

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics") or {}

    @property
    def base_model(self) -> str:
        base = self.manifest.get("base_model") or {}
        config = self.manifest.get("config") or {}
        return str(base.get("name") or (config.get("model") or {}).get("name_or_path") or
                   self.manifest.get("command_template") or "-")

    @property
    def data(self) -> dict[str, str]:
        """Data file -> sha256 (an external trainer's dataset folder: its content hash)."""
        files = dict(self.manifest.get("data_files") or {})
        dataset = self.manifest.get("dataset")
        if isinstance(dataset, dict) and dataset.get("path") and not files:
            files[str(dataset["path"])] = str(dataset.get("sha256", ""))
        return files

    @property
    def sweep(self) -> str:
        sweep = self.manifest.get("sweep") or {}
        return f"{sweep.get('name', '')}#{sweep['trial']}" if "trial" in sweep else str(sweep.get("name", ""))

    @property
    def steps(self) -> str:
        return steps_text(self.path, self.manifest)

    @property
    def best(self) -> tuple[str, int, float] | None:
        m = self.metrics
        if m.get("best_step") is None or m.get("best_value") is None:
            return None
        return str(m.get("best_metric", "")), int(m["best_step"]), float(m["best_value"])

    def settings(self) -> dict[str, Any]:
        flat = flatten_keys(self.manifest.get("config") or {})
        return {key: flat[key] for key in SETTINGS if key in flat}

    def lineage(self) -> list[str]:
        lines = []
        parent = self.manifest.get("parent")
        if parent:
            lines.append(f"continued from {parent.get('name') or parent.get('path')}")
        for resume in self.manifest.get("resumes") or []:
            lines.append(f"resumed after step {resume.get('from_step')}")
        if self.sweep:
            lines.append(f"sweep {self.sweep}")
        # `lorakit export --gguf` writes into the run's gguf/ unless told otherwise: what was shipped from it.
        lines += [f"exported {p.relative_to(self.path).as_posix()}" for p in sorted(self.path.glob("gguf/*.gguf"))]
        return lines


def read_run(run_dir: Path, with_size: bool = True) -> RunView:
    """The run's view; a manifest that cannot be read gives a view that says why, and nothing else."""
    view = RunView(run_dir, run_dir.name)
    try:
        manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        view.outcome = outcome_of(manifest)
    except (OSError, ValueError, KeyError, TypeError) as e:
        view.unreadable = f"manifest.json unreadable: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
        return view
    view.manifest = manifest
    view.name = str(manifest.get("name") or run_dir.name)
    view.created = created_at(manifest)
    view.crashed = crash_reason(run_dir, manifest)
    view.duration_s = _duration(manifest, _last_write(run_dir) if view.crashed else None)
    if with_size:
        view.size_bytes = folder_size(run_dir)
    return view


def crash_reason(run_dir: Path, manifest: dict[str, Any]) -> str | None:
    """For a run marked running whose process on this machine is gone: what happened and what to do."""
    if shown_status(manifest) != CRASHED:
        return None
    pid = (manifest.get("process") or {}).get("pid")
    then = (f"lorakit train --resume {run_dir} continues it from its resume state" if has_checkpoint(run_dir)
            else "it kept no resume state (train.resumable)")
    return f"its training process {pid} is gone without a word, killed or out of memory; {then}"


def _last_write(run_dir: Path) -> datetime | None:
    times = [f.stat().st_mtime for f in (run_dir / MANIFEST_FILE, TrainerLog.of(run_dir).path) if f.is_file()]
    return datetime.fromtimestamp(max(times), timezone.utc) if times else None


def _duration(manifest: dict[str, Any], crashed_at: datetime | None = None) -> float | None:
    """From the first start to how it ended (a run still training: to now; a crashed one: to its last write)."""
    history = manifest.get("status_history") or []
    try:
        started = next(datetime.fromisoformat(h["at"]) for h in history if h.get("status") == "running")
        ended = ((crashed_at or datetime.now(timezone.utc)) if manifest.get("status") == "running"
                 else datetime.fromisoformat(history[-1]["at"]))
    except (StopIteration, KeyError, ValueError, TypeError):
        return None
    return max(0.0, (ended - started).total_seconds())


def log_entries(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """trainer_log.jsonl split into training lines and validation lines (empty when there is no log)."""
    train, evaluation = [], []
    for entry in TrainerLog.of(run_dir).read():
        (evaluation if any(k.startswith("eval_") for k in entry) else train).append(entry)
    return train, evaluation


def samples(run_dir: Path, folder: str = SAMPLES_DIR) -> dict[int, list[dict[str, str]]]:
    """The greedy answers to the sample prompts, by step (``samples/step-NNNNNN.jsonl``); with
    ``folder=VAL_ANSWERS_DIR`` the validation answers the generated metrics were computed from."""
    found: dict[int, list[dict[str, str]]] = {}
    for path in sorted((run_dir / folder).glob("step-*.jsonl")):
        try:
            step = int(path.stem.split("-", 1)[1])
            found[step] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (ValueError, OSError):
            continue
    return found


def files(run_dir: Path) -> list[tuple[str, int]]:
    """The run folder's top-level files and folders with their sizes."""
    out = []
    for child in sorted(run_dir.iterdir()):
        size = folder_size(child) if child.is_dir() else child.stat().st_size
        out.append((child.name + ("/" if child.is_dir() else ""), size))
    return out


def size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def render_text(view: RunView) -> str:
    """The summary ``lorakit runs show`` prints: what a person looks at first, in a few dozen lines."""
    if view.unreadable:
        return f"{view.name}: {view.unreadable}\n"
    lines = [f"{view.name}  {view.status}" + (f" ({view.reason})" if view.reason else ""),
             f"  folder      {view.path}", f"  created     {view.created}"
             + (f", ran {view.duration_s:.0f} s" if view.duration_s is not None else ""),
             f"  base model  {view.base_model}", "  data"]
    lines += [f"    {name}  sha256 {digest[:12]}" for name, digest in view.data.items()] or ["    -"]
    if settings := view.settings():
        lines.append("  settings")
        lines += [f"    {key} = {json.dumps(value)}" for key, value in settings.items()]
    m = view.metrics
    lines.append(f"  steps       {view.steps}" + (f", {m['train_tokens_per_second']} tokens/s"
                                                  if m.get("train_tokens_per_second") else ""))
    losses = [f"{k} {m[k]:.4f}" for k in ("train_loss", "eval_loss") if isinstance(m.get(k), (int, float))]
    if losses:
        lines.append(f"  final       {', '.join(losses)}")
    if view.best:
        metric, step, value = view.best
        lines.append(f"  best        step {step} ({metric} {value:.4g})")
    if note := (view.manifest.get("adapter") or {}).get("note"):
        lines.append(f"  note        {note}")
    for attempt in view.manifest.get("attempts") or []:
        if len(view.manifest["attempts"]) > 1:
            lines.append(f"  attempt {attempt.get('attempt')}  {attempt.get('change')}"
                         + (f": {attempt['error']}" if attempt.get("error") else ""))
    lines += [f"  lineage     {line}" for line in view.lineage()]
    for evaluation in view.manifest.get("evaluations") or []:
        for label, results in (evaluation.get("results") or {}).items():
            figures = ", ".join(f"{k} {v}" for k, v in results.items())
            first = f", first {evaluation['limit']} cases" if evaluation.get("limit") else ""
            lines.append(f"  eval        {evaluation.get('data')} ({evaluation.get('engine', 'transformers')}{first}), "
                         f"{label}: {figures}")
    lines += [f"  noted       {n.get('at')}: {n.get('text')}" for n in view.manifest.get("notes") or []]
    lines.append("  files")
    lines += [f"    {name:<32} {size_text(size):>10}" for name, size in files(view.path)]
    return "\n".join(lines) + "\n"
