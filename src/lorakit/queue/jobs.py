"""What the queue will train: one job per dataset folder or archive, and each job's config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from lorakit.config.load import load_config, read_config_file, with_absolute_paths
from lorakit.data.sources import SUFFIXES
from lorakit.errors import DataError
from lorakit.queue.archives import archive_stem
from lorakit.queue.state import Job, QueueState
from lorakit.queue.workspace import Workspace
from lorakit.remote.rclone import RemoteFile

log = logging.getLogger(__name__)

DATASET_CONFIGS = ("lorakit.yaml", "lorakit.yml", "lorakit.toml")


def output_name(ws: Workspace, job_name: str, overlays: list[str]) -> str:
    """``<folder>-<suffix>[-<overlay stem>...]``: what the run is called and uploaded as."""
    return "-".join([job_name, ws.suffix, *(Path(o).stem for o in overlays)])


def group_remote_files(files: list[RemoteFile]) -> dict[str, tuple[str, list[str]]]:
    """{job name: (source, remote paths)}: top-level folders and archives; loose files are skipped."""
    jobs: dict[str, tuple[str, list[str]]] = {}
    for f in sorted(files, key=lambda f: f.path):
        top, _, rest = f.path.partition("/")
        if rest:
            jobs.setdefault(top, ("folder", []))[1].append(f.path)
        elif (stem := archive_stem(top)) is not None:
            if stem in jobs:
                raise DataError(f"remote training folder holds both {stem}/ and {top}; keep one")
            jobs[stem] = ("archive", [f.path])
        else:
            log.warning("queue: %s is neither a dataset folder nor an archive; left alone", top)
    return jobs


def discover(ws: Workspace, state: QueueState, remote_files: list[RemoteFile]) -> list[Job]:
    """Add new datasets to the state (remote ones, and folders already in work_dir) and list every job."""
    for name, (source, paths) in group_remote_files(remote_files).items():
        job = state.jobs.get(name)
        if job is None:
            state.jobs[name] = Job(name, source, paths)
        elif job.done:
            log.warning("queue: %s was trained and cleaned already; its new remote files are left alone "
                        "(remove it from %s to train it again)", name, state.path)
        elif job.state == "pending":
            job.remote_files = paths
    work = Path(ws.work_dir)
    if work.is_dir():
        for folder in sorted(work.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in state.jobs:
                state.jobs[folder.name] = Job(folder.name, "local", state="unpacked")
    state.save()
    return [state.jobs[name] for name in sorted(state.jobs)]


def data_files(folder: Path) -> list[str]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return [str(p.resolve()) for p in files]


def write_job_config(ws: Workspace, dataset: Path, target: Path) -> Path:
    """The base config, the dataset folder's own lorakit.yaml, and its data files, merged into ``target``.

    Raises:
        DataError: the folder holds no data file. ConfigError: the merged config is invalid.
    """
    assert ws.config is not None
    own = next((dataset / n for n in DATASET_CONFIGS if (dataset / n).is_file()), None)
    sets_data = own is not None and "train" in (read_config_file(own).get("data") or {})
    overrides = []
    if not sets_data:
        files = data_files(dataset)
        if not files:
            raise DataError(f"{dataset}: no data file ({', '.join(SUFFIXES)}) in the dataset folder")
        overrides.append(f"data.train={json.dumps(files)}")
    loaded = load_config(ws.config, [own] if own else [], overrides)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(with_absolute_paths(loaded.config), sort_keys=False), encoding="utf-8")
    return target
