"""One dataset's job on a node of a Ray cluster: download, unpack, train, upload, then delete the node's own copies.

It runs exactly the stages of the local executor (``QueueRun``) in a scratch folder of its own on the node, with a
state file of its own there; the driver keeps the queue's one state file. What the job did comes back as a dict:
the fields of its ``Job`` as the node recorded them, where it ran, and every file of its result (size and sha256)
as uploaded, which is what the driver checks the remote copy against before it deletes the remote dataset.

Only the node's own copies are deleted here, each after its upload is verified on the remote (``Keeper``); the
remote dataset is the driver's decision.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lorakit.queue.keep import remove_empty_folders
from lorakit.queue.state import FAILED, Job, QueueState
from lorakit.queue.workspace import Workspace
from lorakit.runs.fingerprint import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOrder:
    """What the driver sends with each job: the workspace, and the bytes of the files it names (shipped, so that
    nodes share nothing but the rclone remote)."""

    workspace: dict[str, Any]
    files: dict[str, bytes]  # absolute path on the driver -> its bytes
    overlays: tuple[str, ...]
    job: dict[str, Any]  # the Job as the driver recorded it (claim, output name, upload target)
    test: bool = False  # lorakit queue --test: delete nothing, not even the node's own copies


def ship(ws: Workspace, overlays: tuple[str, ...]) -> dict[str, bytes]:
    """The files of the driver's machine a node needs: the base config, the overlays and the rclone config."""
    named = [ws.config, ws.remote.config, *overlays]
    return {path: Path(path).read_bytes() for path in dict.fromkeys(p for p in named if p)}


def _node_workspace(order: JobOrder, scratch: Path) -> tuple[Workspace, tuple[str, ...]]:
    """The workspace as the node runs it: its work and output folders in the job's scratch folder, the shipped
    files written there (the rclone config readable by this user only), nothing of the remote dataset deleted."""
    placed: dict[str, str] = {}
    for n, (path, data) in enumerate(order.files.items()):
        local = scratch / "files" / f"{n}-{Path(path).name}"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        local.chmod(0o600)
        placed[path] = str(local)
    ws = Workspace.model_validate(order.workspace)
    raw = ws.model_dump()
    raw.update(work_dir=str(scratch / "work"), output_dir=str(scratch / "outputs"),
               config=placed.get(ws.config or "", ws.config), overlays=[placed.get(o, o) for o in ws.overlays],
               cleanup={"local_data": True, "local_output": True, "remote_training": False})
    raw["remote"]["config"] = placed.get(ws.remote.config or "", ws.remote.config)
    return Workspace.model_validate(raw), tuple(placed.get(o, o) for o in order.overlays)


def result_record(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every file of the run: its size and sha256, keyed by its path in the run folder."""
    return {p.relative_to(run_dir).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def run_job(order: JobOrder) -> dict[str, Any]:
    """The Ray task: the job's stages on this node; what it did, for the driver to record.

    Raises:
        QueueStopped, RemoteError: as with the local executor, the job cannot go on now (the driver stops).
    """
    from lorakit.launch.ray import keep_to_reserved_cpus, this_node
    from lorakit.queue.runner import QueueOptions, QueueRun, StopOnSignal
    from lorakit.remote.rclone import Rclone

    node = this_node()
    keep_to_reserved_cpus()
    sent = Job(**order.job)
    print(f"{sent.key}: running on {node.describe()}", flush=True)  # Ray shows it in the driver's output
    began = time.monotonic()
    ws_raw = Workspace.model_validate(order.workspace)
    scratch = Path(ws_raw.queue.ray.scratch) / node.node_id[:12] / sent.key
    ws, overlays = _node_workspace(order, scratch)
    # The node's own record of the job, from the start: the stages the driver recorded were not run here.
    job = Job(name=sent.name, source=sent.source, key=sent.key, folder=sent.folder, remote_files=sent.remote_files,
              remote_fingerprints=sent.remote_fingerprints, generation=sent.generation, output_name=sent.output_name,
              upload_to=sent.upload_to, claim=sent.claim)
    Path(ws.work_dir).mkdir(parents=True, exist_ok=True)
    state = QueueState.load(Path(ws.work_dir))
    state.jobs = {job.key: job}
    rclone = Rclone(Path(ws.remote.config) if ws.remote.config else None, tuple(ws.remote.flags))
    run = QueueRun(ws, QueueOptions(test=True, overlays=overlays), state, rclone)
    record = None
    try:
        with StopOnSignal(run.child) as stop:
            run.process(job, stop)  # through "uploaded": the record is taken before the node's copies go
        if job.state == "uploaded" and job.run_dir:
            record = result_record(Path(job.run_dir))
        if record is not None and not order.test:
            try:
                run.clean(job)
                state.path.unlink()  # the driver holds the job's record; this one was the node's scratch
            except Exception as e:  # the result is uploaded and verified; a copy kept here is only disk space
                job.note = f"kept its copies on {node.describe()}: {e}"
    finally:  # copies of the driver's files (the rclone config holds credentials): sent again with every task
        shutil.rmtree(scratch / "files", ignore_errors=True)
        remove_empty_folders(scratch)
    job.seconds = round(time.monotonic() - began, 1)
    if job.state == FAILED:
        log.error("%s: failed on %s: %s", job.key, node.describe(), job.error)
    return {"job": asdict(job), "node": node.describe(), "result_files": record}
