"""``[queue] executor = "ray"``: each dataset a Ray task (``lorakit.queue.on_node``) on whichever node has the
resources; this process keeps the one state file and makes every decision about the remote.

Before a job is sent, its output name, its upload target and a claim on it are recorded (the claim travels into
the result folder first, so a retry after its node died uploads to the same folder, never under a second name).
When a task returns, the job's stages and the record of its result are written here, and the remote dataset is
deleted only after the result is checked on the remote against that record at that moment (``Keeper``). A node
that dies mid-job: Ray runs the task again on another node, which downloads and trains afresh. A queue stopped
or killed here: its tasks end with it (Ray's owner rule) and the next run sends the unfinished jobs again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from lorakit.errors import DiskFullError, LorakitError, RemoteError
from lorakit.launch.ray import connect, task_options
from lorakit.queue.on_node import JobOrder, run_job, ship
from lorakit.queue.state import FAILED, Job, Source
from lorakit.queue.training import JobFailed, QueueStopped

if TYPE_CHECKING:  # the runner hands itself over; this module never drives it
    from lorakit.queue.runner import QueueRun, StopOnSignal

log = logging.getLogger(__name__)

NODE_FIELDS = ("remote_fingerprints", "local_files", "local_sha256", "content", "run_dir", "upload_to",
               "remote_output", "note")


def _send(run: QueueRun, job: Job, task: Any, ws: dict[str, Any], files: dict[str, bytes]) -> Any:
    """Record the job's name, target and claim, then submit its task."""
    from lorakit.queue.jobs import output_name

    assert run.ws.remote.output is not None
    name = job.output_name or output_name(run.ws, job, list(run.options.overlays))
    claim = job.claim or uuid.uuid4().hex
    target = run.keeper.result_target(run.ws.remote.output, name, run_id=claim, recorded=job.upload_to, claim=claim)
    if job.state != "training" or (job.output_name, job.upload_to, job.claim) != (name, target, claim):
        run.state.move(job, "training", output_name=name, upload_to=target, claim=claim)
    order = JobOrder(ws, files, run.options.overlays, asdict(job), run.options.test)
    log.info("%s: sent to the Ray cluster (result to %s)", job.key, target)
    return task.remote(order)


def _record(run: QueueRun, job: Job, done: dict[str, Any]) -> None:
    """What the node did, as the job's stages here: failed, or trained and uploaded with its result's record."""
    there = Job(**done["job"])
    fields = {k: getattr(there, k) for k in NODE_FIELDS}
    seconds = round(job.seconds + there.seconds, 1)
    if there.state == FAILED:
        run.state.move(job, FAILED, error=f"on {done['node']}: {there.error}", node=done["node"], seconds=seconds,
                       **{k: v for k, v in fields.items() if k not in ("upload_to", "remote_output")})
        return
    if there.state != "uploaded" or done["result_files"] is None:
        raise JobFailed(f"the task on {done['node']} ended at {there.state} without an uploaded result")
    run.state.move(job, "trained", node=done["node"], seconds=seconds,
                   **{k: v for k, v in fields.items() if k != "remote_output"})
    run.state.move(job, "uploaded", remote_output=there.remote_output, result_files=done["result_files"])
    log.info("%s: trained on %s, uploaded to %s (%.0f s)", job.key, done["node"], there.remote_output, seconds)


def _returned(run: QueueRun, job: Job, done: dict[str, Any]) -> None:
    _record(run, job, done)
    if job.state != FAILED:
        _finish(run, job)


def _finish(run: QueueRun, job: Job) -> None:
    """The driver's part after a job's upload: the remote dataset, deleted once the result is checked."""
    if not run.options.test:
        run.clean(job)
        run.state.move(job, "cleaned")


def _outcome(ray: Any, ref: Any) -> dict[str, Any]:
    """The task's result; a lost node after all retries, or an error of the task, as JobFailed/its own error."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as e:  # raised inside the task: the original error (QueueStopped, RemoteError, a bug)
        raise e.as_instanceof_cause() from None
    except ray.exceptions.RayError as e:  # its node or worker died more often than max_retries allows
        raise JobFailed(f"its Ray task was lost: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def run_on_ray(run: QueueRun, jobs: list[Job], stop: StopOnSignal) -> str | None:
    """Send every unfinished job to the cluster and record each as it returns; why the queue stopped, if it did.

    Raises:
        LaunchError: Ray is missing or the cluster cannot be reached (before anything was sent).
    """
    section = run.ws.queue.ray
    ray = connect(section)
    task = ray.remote(run_job).options(**task_options(section))
    ws, files = run.ws.model_dump(), ship(run.ws, run.options.overlays)
    pending: dict[Any, Job] = {}
    stopped = None
    for job in jobs:
        if job.done or job.source == Source.CLASH or (run.options.test and job.state == "uploaded"):
            continue
        if job.source == Source.LOCAL:
            run.state.move(job, FAILED, error="a folder put into work_dir by hand is not on the remote, so no "
                           "node can download it; use the local executor for it")
        elif job.reached("uploaded"):  # recorded before a stop: only the driver's clean-up is left
            stopped = stopped or _settle(run, job, lambda j=job: _finish(run, j))
        else:
            pending[_send(run, job, task, ws, files)] = job
    while pending and not stop.reason:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in done:
            job = pending.pop(ref)
            stopped = stopped or _settle(run, job, lambda j=job, r=ref: _returned(run, j, _outcome(ray, r)))
    if stop.reason:
        for ref in pending:
            ray.cancel(ref, force=True)  # the job stays "training": the next run sends it again
        return f"stopped by {stop.reason}; run the queue again to continue"
    return stopped


def _settle(run: QueueRun, job: Job, step: Any) -> str | None:
    """Run one step of the driver's for ``job``: its failure fails this job alone; a remote that cannot be reached
    or a stop is why the queue stops (the job keeps its stage, and the next run goes on from it)."""
    try:
        step()
    except QueueStopped as e:
        return str(e)
    except (RemoteError, DiskFullError) as e:
        return f"{e}; the queue stopped and deleted nothing; run it again once that is fixed"
    except (JobFailed, LorakitError) as e:
        log.error("%s: failed: %s", job.key, e)
        run.state.move(job, FAILED, error=str(e))
    except Exception as e:  # a bug of ours must not stop an unattended queue; nothing more is deleted
        log.debug("%s: unexpected error", job.key, exc_info=True)
        log.error("%s: failed: %s: %s", job.key, type(e).__name__, e)
        run.state.move(job, FAILED, error=f"{type(e).__name__}: {e}")
    return None
