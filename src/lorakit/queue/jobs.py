"""What the queue will train: one job per dataset folder or archive, and each job's config."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lorakit.config.load import load_config, read_config_file, with_absolute_paths
from lorakit.data.sources import SUFFIXES
from lorakit.errors import DataError
from lorakit.queue.archives import archive_stem
from lorakit.queue.keep import fingerprint
from lorakit.queue.state import FAILED, Job, QueueState
from lorakit.queue.workspace import Workspace
from lorakit.remote.rclone import RemoteFile

log = logging.getLogger(__name__)

DATASET_CONFIGS = ("lorakit.yaml", "lorakit.yml", "lorakit.toml")


def output_name(ws: Workspace, job_name: str, overlays: list[str]) -> str:
    """``<folder>-<suffix>[-<overlay stem>...]``: what the run is called and uploaded as."""
    return "-".join([job_name, ws.suffix, *(Path(o).stem for o in overlays)])


@dataclass
class RemoteDataset:
    source: str  # "folder" or "archive"
    files: list[RemoteFile] = field(default_factory=list)


def group_remote_files(files: list[RemoteFile]) -> tuple[dict[str, RemoteDataset], dict[str, str]]:
    """Top-level folders and archives of the remote training folder, by dataset name; loose files are skipped.

    Returns:
        The datasets, and {name: why} for names two entries claim (``alpha/`` beside ``alpha.zip``).
    """
    folders: dict[str, list[RemoteFile]] = {}
    archives: dict[str, list[str]] = {}
    for f in sorted(files, key=lambda f: f.path):
        top, _, rest = f.path.partition("/")
        if rest:
            folders.setdefault(top, []).append(f)
        elif (stem := archive_stem(top)) is not None:
            archives.setdefault(stem, []).append(top)
        else:
            log.warning("queue: %s is neither a dataset folder nor an archive; left alone", top)
    datasets = {name: RemoteDataset("folder", entries) for name, entries in folders.items()}
    clashes = {}
    for stem, names in archives.items():
        claims = ([f"{stem}/"] if stem in folders else []) + names
        if len(claims) > 1:
            clashes[stem] = (f"the remote training folder holds {' and '.join(claims)}, all named {stem!r}; "
                             "keep one (rename or remove the others), then run the queue again")
            datasets.pop(stem, None)
            continue
        datasets[stem] = RemoteDataset("archive", [f for f in files if f.path == names[0]])
    return datasets, clashes


def discover(ws: Workspace, state: QueueState, remote_files: list[RemoteFile]) -> list[Job]:
    """Add new datasets to the state (remote ones, and folders already in work_dir) and list every job.

    A dataset not yet downloaded whose name two remote entries claim, or whose folder in work_dir
    was put there by someone else, is marked failed with one line: nothing of it is touched.
    """
    work = Path(ws.work_dir)
    datasets, clashes = group_remote_files(remote_files)
    for name, dataset in datasets.items():
        job = state.jobs.get(name)
        if (job is None or job.source == "clash") and (work / name).exists():
            clashes[name] = (f"{work / name} exists already but was not downloaded by the queue; move it away "
                             f"(or rename the remote {name}) so the download cannot mix with it")
            continue
        if job is None:
            job = state.jobs[name] = Job(name, dataset.source)
        elif job.done:
            log.warning("queue: %s was trained and cleaned already; its new remote files are left alone "
                        "(remove it from %s to train it again)", name, state.path)
            continue
        if not job.reached("downloaded"):  # not fetched yet: the listing now is what will be fetched
            job.source = dataset.source
            job.remote_files = [f.path for f in dataset.files]
            job.remote_fingerprints = {f.path: fingerprint(f) for f in dataset.files}
    for name, why in clashes.items():
        job = state.jobs.get(name)
        if job is None or not job.reached("downloaded"):
            job = state.jobs.setdefault(name, Job(name, "clash"))
            job.remote_files, job.remote_fingerprints = [], {}  # nothing of a clash is ever deleted
            state.move(job, FAILED, error=why)
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
