"""What an external trainer left in its run folder: the files (sizes, sha256), its LoRAs' metadata, its
training curve and its sample images, gathered for the manifest and the model card.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorakit.errors import RunError
from lorakit.model.resolve import sha256_file
from lorakit.runs.artifacts import plot_loss
from lorakit.runs.trainer_log import TrainerLog
from lorakit.textfile import read_json

if TYPE_CHECKING:
    from lorakit.runs.folder import RunFolder

log = logging.getLogger(__name__)

# The files lorakit itself writes into an external run folder; everything else is the trainer's.
OWN_FILES = {"manifest.json", "trainer.log", "dataset_files.tsv", "config.toml", "config.yaml", "config.yml",
             "config.json"}
OWN_FOLDERS = {"files"}
# sd-scripts (ss_*) and the modelspec standard: what a LoRA file says about how it was trained.
METADATA_PREFIXES = ("ss_", "modelspec.")
LOSS_TAGS = ("loss/current", "loss/average", "train/loss", "loss", "train_loss")
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{0,63}")  # train_loss, eval_loss, eval_rewards/accuracies
SAMPLE = re.compile(r"_(\d{6})_(\d{2})_")  # sd-scripts: <name>_<step:06d>_<prompt:02d>_<time>[_<seed>].png


def produced_files(run_dir: Path) -> list[Path]:
    """The files the trainer wrote (lorakit's own left out), sorted."""
    return sorted(p for p in run_dir.rglob("*") if p.is_file() and p.relative_to(run_dir).parts[0] not in OWN_FOLDERS
                  and str(p.relative_to(run_dir)) not in OWN_FILES)


def describe_outputs(run_dir: Path) -> list[dict[str, Any]]:
    return [{"path": p.relative_to(run_dir).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in produced_files(run_dir)]


def lora_metadata(path: Path) -> dict[str, str]:
    """The training metadata in a .safetensors header (``ss_*``, ``modelspec.*``); {} when it has none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # a file that is not really safetensors: say so, keep going
        log.warning("%s: cannot read its safetensors header (%s)", path.name, e)
        return {}
    return {k: v for k, v in sorted(meta.items()) if k.startswith(METADATA_PREFIXES)}


def models_metadata(run_dir: Path, models: list[Path]) -> dict[str, dict[str, str]]:
    return {p.relative_to(run_dir).as_posix(): meta for p in models if p.suffix == ".safetensors"
            and (meta := lora_metadata(p))}


def _tensorboard_history(run_dir: Path) -> list[dict[str, Any]]:
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not events:
        return []
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        log.info("TensorBoard event files found; pip install tensorboard to read their curves")
        return []
    steps: dict[int, dict[str, Any]] = {}
    for folder in sorted({e.parent for e in events}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags().get("scalars", [])
        loss = next((t for t in LOSS_TAGS if t in tags), next((t for t in tags if "loss" in t.lower()), None))
        lr = next((t for t in tags if t.lower().startswith("lr")), None)
        for tag, key in ((loss, "loss"), (lr, "lr")):
            for event in acc.Scalars(tag) if tag else []:
                steps.setdefault(event.step, {"step": event.step})[key] = event.value
    return [steps[s] for s in sorted(steps) if "loss" in steps[s]]


def _jsonl_history(log: TrainerLog) -> list[dict[str, Any]]:
    history = []
    for row in log.read():
        step = row.get("current_steps", row.get("step"))
        if step is not None and isinstance(row.get("loss"), (int, float)):
            history.append({"step": step, "loss": row["loss"], **({"lr": row["lr"]} if "lr" in row else {})})
    return history


def gather_curve(run: RunFolder, total_steps: int | None) -> list[dict[str, Any]]:
    """The training loss by step: the trainer's own trainer_log.jsonl (LLaMA-Factory), else its TensorBoard
    scalars (sd-scripts' logging_dir), written as trainer_log.jsonl; training_loss.png drawn from it."""
    run_dir, own_log = run.path, run.trainer_log
    history = _jsonl_history(own_log) if own_log.path.is_file() else _tensorboard_history(run_dir)
    if history and not own_log.path.is_file():
        own_log.write_history(history, total_steps)
    if history and not (run_dir / "training_loss.png").exists():  # never over the trainer's own plot
        plot_loss(run_dir / "training_loss.png", history, [])
    return history


def trainer_results(run_dir: Path) -> dict[str, float]:
    """The numbers of the trainer's own all_results.json (the Hugging Face Trainer's, which LLaMA-Factory writes:
    train_loss as the mean over the run, eval_loss...). The file is the trainer's, so only finite numbers under
    plain names are taken, and an unreadable file gives nothing."""
    path = run_dir / "all_results.json"
    if not path.is_file():
        return {}
    try:
        found = read_json(path, RunError, dict, "not a JSON object")
    except (RunError, OSError) as e:
        log.warning("%s; its numbers are left out of the manifest", e)
        return {}
    return {k: float(v) for k, v in found.items() if isinstance(k, str) and METRIC_NAME.fullmatch(k)
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def latest_samples(run_dir: Path) -> list[str]:
    """The newest sample image of each prompt (sd-scripts' ``sample/``), as paths in the run folder."""
    latest: dict[str, tuple[int, Path]] = {}
    for image in sorted(run_dir.rglob("sample*/*.png")):
        m = SAMPLE.search(image.name)
        prompt, step = (m.group(2), int(m.group(1))) if m else (image.stem, 0)
        if prompt not in latest or step >= latest[prompt][0]:
            latest[prompt] = (step, image)
    return [p.relative_to(run_dir).as_posix() for _, p in (latest[k] for k in sorted(latest))]
