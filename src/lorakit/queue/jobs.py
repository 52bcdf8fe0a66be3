"""What the queue will train: one job per dataset content, found in the remote training folder or in work_dir,
and each job's training config.

A job is a dataset's *content*, not its name: a remote folder whose files change after it was trained and
cleaned is a new job (a new generation, with its own local folder), trained as a new result; it is never
taken for the earlier one, and never deleted untrained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorakit.config.load import flatten_keys, load_config, with_absolute_paths
from lorakit.data.sources import SUFFIXES
from lorakit.errors import DataError
from lorakit.queue.archives import archive_stem
from lorakit.queue.keep import same_content
from lorakit.queue.state import FAILED, Job, QueueState, Source
from lorakit.queue.trust import check_dataset_config, check_inside, check_own_paths, dataset_config
from lorakit.queue.workspace import Workspace
from lorakit.redaction import redact
from lorakit.remote.rclone import RemoteFile
from lorakit.runs.naming import safe_name

log = logging.getLogger(__name__)


def output_name(ws: Workspace, job: Job, overlays: list[str]) -> str:
    """``<name>-<suffix>[-<overlay stem>...]``, the dataset's name cleaned to letters, digits, ``.``, ``_``, ``-``:
    what the run is called and uploaded as (a name taken on the remote gets ``-2``, ``-3``...)."""
    return "-".join([safe_name(job.name), ws.suffix, *(Path(o).stem for o in overlays)])


@dataclass
class RemoteDataset:
    source: str  # Source.FOLDER or Source.ARCHIVE (a value)
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
            log.warning("queue: %r is neither a dataset folder nor an archive; left alone", top)
    datasets = {name: RemoteDataset(Source.FOLDER.value, entries) for name, entries in folders.items()}
    clashes = {}
    for stem, names in archives.items():
        claims = ([f"{stem}/"] if stem in folders else []) + names
        if len(claims) > 1:
            clashes[stem] = (f"the remote training folder holds {' and '.join(claims)}, all named {stem!r}; "
                             "keep one (rename the others), then run the queue again")
            datasets.pop(stem, None)
            continue
        datasets[stem] = RemoteDataset(Source.ARCHIVE.value, [f for f in files if f.path == names[0]])
    return datasets, clashes


def fingerprint(f: RemoteFile) -> dict[str, Any]:
    """A remote file as listed: size, hashes and modification time (the sha256 of its bytes is added once they
    are downloaded)."""
    return {"size": f.size, "hashes": dict(f.hashes), **({"modtime": f.modtime} if f.modtime else {})}


def same_listing(recorded: dict[str, dict[str, Any]], files: list[RemoteFile]) -> bool:
    """The remote files are the ones recorded: the same paths, each with the same size, hashes and date."""
    if set(recorded) != {f.path for f in files}:
        return False
    return all(same_content(recorded[f.path], f) and recorded[f.path].get("modtime") in (None, f.modtime)
               for f in files)


def discover(ws: Workspace, state: QueueState, remote_files: list[RemoteFile]) -> list[Job]:
    """Add new datasets to the state (remote ones, and folders already in work_dir) and list every job.

    A dataset not yet downloaded whose name two remote entries claim, or whose folder in work_dir
    was put there by someone else, is marked failed with one line: nothing of it is touched.
    """
    work = Path(ws.work_dir)
    datasets, clashes = group_remote_files(remote_files)
    for name, dataset in datasets.items():
        if (why := _add_remote(ws, state, name, dataset)) is not None:
            clashes[name] = why
    for name, why in clashes.items():
        _mark_clash(state, name, why)
    if work.is_dir():
        folders = {j.folder for j in state.jobs.values()}
        for folder in sorted(work.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in folders:
                key = _free_key(state, work, safe_name(folder.name), on_disk=False)
                state.jobs[key] = Job(folder.name, Source.LOCAL.value, key=key, folder=folder.name, state="unpacked")
    state.save()
    return [state.jobs[key] for key in sorted(state.jobs)]


def _add_remote(ws: Workspace, state: QueueState, name: str, dataset: RemoteDataset) -> str | None:
    """Record the remote dataset ``name`` as it is listed now: its open job's listing while it is not yet
    downloaded, or a new job for content not trained yet. Why it cannot be taken, or None."""
    work = Path(ws.work_dir)
    jobs = state.of_dataset(name)
    open_jobs = [j for j in jobs if not j.done]
    if open_jobs:
        job = open_jobs[-1]
        if job.source == Source.CLASH and (work / job.folder).exists():
            return _taken(work / job.folder, name)
        if not job.reached("downloaded"):  # not fetched yet: the listing now is what will be fetched
            _take_listing(job, dataset)
        return None
    if jobs and not jobs[-1].remote_changed and same_listing(jobs[-1].remote_fingerprints, dataset.files):
        return None  # this very content was trained (and its copies cleaned as asked)
    if jobs and ws.queue.new_content == "wait":
        log.warning("queue: %s was trained as %s; its remote folder now holds other files, which wait (queue."
                    "new_content = \"wait\"; \"train\" trains them as a new result). Nothing of them is deleted.",
                    name, jobs[-1].output_name or jobs[-1].key)
        return None
    base = safe_name(name)
    if not jobs and base not in {j.folder for j in state.jobs.values()} and (work / base).exists():
        return _taken(work / base, name)
    key = _free_key(state, work, base, on_disk=True)
    job = state.jobs[key] = Job(name, dataset.source, key=key, folder=key, generation=len(jobs) + 1)
    _take_listing(job, dataset)
    if jobs:
        log.warning("queue: %s: its remote folder holds files that were not trained yet; they are trained as a new "
                    "result (work folder %s)", name, key)
    return None


def _taken(folder: Path, name: str) -> str:
    return (f"{folder} exists already but was not downloaded by the queue; move it out of the work folder (or "
            f"rename the remote {name}) so the download cannot mix with it")


def _take_listing(job: Job, dataset: RemoteDataset) -> None:
    job.source = dataset.source
    job.remote_files = [f.path for f in dataset.files]
    job.remote_fingerprints = {f.path: fingerprint(f) for f in dataset.files}


def _free_key(state: QueueState, work: Path, base: str, on_disk: bool) -> str:
    """``base``, ``base-2``, ... the first that no job uses (and, ``on_disk``, no folder in work_dir)."""
    used = set(state.jobs) | {j.folder for j in state.jobs.values()}
    for n in range(1, 100_000):
        key = base if n == 1 else f"{base}-{n}"
        if key not in used and not (on_disk and (work / key).exists()):
            return key
    raise DataError(f"no free folder name for {base!r} in {work}")


def _mark_clash(state: QueueState, name: str, why: str) -> None:
    """The dataset ``name`` cannot be taken now: failed with ``why``, and nothing of it is ever deleted."""
    open_jobs = [j for j in state.of_dataset(name) if not j.done]
    job = open_jobs[-1] if open_jobs else None
    if job is not None and job.reached("downloaded"):
        return  # fetched before the clash appeared: it goes on as it is
    if job is None:
        key = _free_key(state, Path(state.path.parent), safe_name(name), on_disk=False)
        job = state.jobs[key] = Job(name, Source.CLASH.value, key=key, folder=key)
    job.source, job.remote_files, job.remote_fingerprints = Source.CLASH.value, [], {}
    state.move(job, FAILED, error=why)


def data_files(folder: Path) -> list[str]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return [str(p.absolute()) for p in files]


def write_job_config(ws: Workspace, dataset: Path, target: Path, overlays: tuple[str, ...]) -> tuple[Path, list[str]]:
    """The base config, the dataset folder's own config (checked: ``lorakit.queue.trust``) and its data files,
    merged into ``target`` with every secret redacted.

    Returns:
        The file, and the ``--set KEY=VALUE`` flags that give the trainer the values redacted from it (a
        password in tracking.mlflow_uri): the final ones, after ``overlays``, so they never override them.

    Raises:
        DataError: the folder holds no data file, or its own config breaks a rule. ConfigError: the merged config
            is invalid.
    """
    assert ws.config is not None
    own = dataset_config(dataset)
    raw = check_dataset_config(own) if own else {}
    overrides = []
    if "train" not in (raw.get("data") or {}):
        files = data_files(dataset)
        if not files:
            raise DataError(f"{dataset}: no data file ({', '.join(SUFFIXES)}) in the dataset folder")
        check_inside(dataset, "data file", files, dataset)
        overrides.append(f"data.train={json.dumps(files)}")
    layers = [own] if own else []
    loaded = load_config(ws.config, layers, overrides)
    if own:
        check_own_paths(loaded.config, list(flatten_keys(raw)), dataset, own)
    merged = with_absolute_paths(loaded.config)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(redact(merged), sort_keys=False), encoding="utf-8")
    final = flatten_keys(with_absolute_paths(load_config(ws.config, [*layers, *overlays], overrides).config))
    kept = flatten_keys(redact(final))
    return target, [f"{key}={json.dumps(value)}" for key, value in final.items() if kept[key] != value]


def plan_lines(ws: Workspace, overlays: tuple[str, ...], test: bool, jobs: list[Job]) -> list[str]:
    """lorakit queue --dry-run: what each job would do next, one line each."""
    lines = []
    for job in jobs:
        if job.done:
            lines.append(f"{job.key}: done (cleaned)")
            continue
        if job.source == Source.CLASH:
            lines.append(f"{job.key}: skipped: {job.error}")
            continue
        name = job.output_name or output_name(ws, job, list(overlays))
        steps = []
        if not job.reached("downloaded") and job.source != Source.LOCAL:
            steps.append(f"download {', '.join(f'{ws.remote.training}/{f}' for f in job.remote_files)}")
        if not job.reached("unpacked") and job.source == Source.ARCHIVE:
            steps.append("unpack")
        if not job.reached("trained"):
            steps.append(f"train as {name}")
        if not job.reached("uploaded") and ws.remote.output:
            steps.append(f"upload to {ws.remote.output}/{name}")
        if not test and ws.cleanup.any:
            steps.append("clean up")
        lines.append(f"{job.key} [{job.state}]: " + "; ".join(steps))
    return lines
