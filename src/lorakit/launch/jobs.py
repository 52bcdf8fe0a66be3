"""Runs trained as Slurm jobs: submit one, see how it is doing, read its log, cancel it.

The run folder is made at submission by ``recipe.launch.submit_run`` (so the job's output lands in it) and the job
trains it with ``lorakit train --run-dir``. The job is submitted held, recorded in the manifest, then
released, so the job never starts from a manifest that does not yet name it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import LaunchError
from lorakit.launch.sbatch import SCRIPT_NAME
from lorakit.launch.slurm import JobState, job_state, release, sbatch, scancel
from lorakit.runs.catalog import read_manifest
from lorakit.runs.folder import RunFolder
from lorakit.runs.trainer_log import TrainerLog


def submit_held(run: RunFolder, script: str) -> str:
    """The one Slurm submission sequence, for runs and sweep workers alike: the script into the run folder,
    submitted held, the job id recorded in the manifest, then released, so the job never starts from a manifest
    that does not name it. Its job id.

    Raises:
        LaunchError: sbatch refused it (the run is marked failed with sbatch's message).
    """
    script_path = run.path / SCRIPT_NAME
    script_path.write_text(script, encoding="utf-8")
    try:
        job_id = sbatch(script_path, hold=True)
    except LaunchError as e:
        run.fail(str(e))
        raise
    run.submitted(job_id, SCRIPT_NAME)
    release(job_id)
    return job_id


def job_id_of(manifest: dict[str, Any], run_dir: Path) -> str:
    job_id = (manifest.get("slurm") or {}).get("job_id")
    if not job_id:
        raise LaunchError(f"{run_dir.name} was not submitted to Slurm (no job id in its manifest)")
    return str(job_id)


def log_files(run_dir: Path, job_id: str) -> list[Path]:
    return [run_dir / f"slurm-{job_id}.out", run_dir / f"slurm-{job_id}.err"]


def log_tail(run_dir: Path, job_id: str, lines: int = 10) -> list[str]:
    """The last lines the job wrote: its error stream, where lorakit logs, else its output."""
    for path in reversed(log_files(run_dir, job_id)):
        if path.is_file():
            text = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
            if text:
                return text[-lines:]
    return []


def reconcile(run_dir: Path) -> tuple[RunFolder, JobState | None]:
    """The run's manifest and its job's Slurm state; a job that ended without the run saying how
    (killed at its time limit, out of memory, python missing) marks the run failed with its log tail.

    Written only once the job has left the queue: while it runs, the job alone writes the manifest.
    """
    run = RunFolder.open(run_dir)
    job_id = job_id_of(run.data, run_dir)
    state = job_state(job_id)
    if state is None or state.active:
        return run, state
    run.slurm_ended(state.state, state.exit_code, f"Slurm job {job_id} ended {state.describe()}"
                    + "".join(f"; log: {line}" for line in log_tail(run_dir, job_id, 1)))
    return run, state


def wait_for(run_dir: Path, timeout: float, poll: float = 1.0) -> tuple[RunFolder, JobState | None]:
    """Poll until the run's job has left the queue (or ``timeout`` seconds passed)."""
    deadline = time.monotonic() + timeout
    while True:
        manifest, state = reconcile(run_dir)
        if state is None or not state.active or time.monotonic() > deadline:
            return manifest, state
        time.sleep(poll)


def cancel_run(run_dir: Path, wait_seconds: float = 120) -> JobState | None:
    """scancel the run's job, wait for it to stop, and mark the run cancelled.

    Raises:
        LaunchError: the job had already ended, or did not stop in time.
    """
    job_id = job_id_of(read_manifest(run_dir), run_dir)
    state = job_state(job_id)
    if state is not None and not state.active:
        raise LaunchError(f"Slurm job {job_id} of {run_dir.name} already ended ({state.describe()})")
    scancel(job_id)
    run, state = wait_for(run_dir, wait_seconds)  # read afresh: the job may have written it meanwhile
    if state is not None and state.active:
        raise LaunchError(f"Slurm job {job_id} is still {state.state} {wait_seconds:.0f} s after scancel")
    # The job may have saved a resume state on SIGTERM: `lorakit train --resume` can still continue it.
    run.cancelled(f"scancel of Slurm job {job_id}")
    return state


@dataclass(frozen=True)
class JobRow:
    run: str
    job_id: str
    slurm_state: str
    status: str
    step: str
    loss: float | None
    eval_loss: float | None
    remaining: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def progress(run_dir: Path) -> dict[str, Any]:
    """The last training line and the last validation line of trainer_log.jsonl (empty before the first step)."""
    last: dict[str, Any] = {}
    for entry in TrainerLog.of(run_dir).read():
        last["eval" if "eval_loss" in entry else "train"] = entry
    return last


def job_row(run_dir: Path) -> JobRow:
    manifest, state = reconcile(run_dir)
    seen = progress(run_dir)
    train, evaluation = seen.get("train", {}), seen.get("eval", {})
    slurm = manifest.data["slurm"]
    slurm_state = state.describe() if state else f"{slurm.get('state', 'gone')} (no longer in Slurm)"
    total = train.get("total_steps") or manifest.data.get("total_steps")
    step = f"{train.get('current_steps', 0)}/{total if total else '-'}"
    remaining = train.get("remaining_time", "-") if manifest.status == "running" else "-"
    return JobRow(run_dir.name, slurm["job_id"], slurm_state, manifest.status, step, train.get("loss"),
                  evaluation.get("eval_loss"), remaining)


def follow_logs(run_dir: Path, follow: bool, write: Callable[[str], Any] = sys.stdout.write,
                poll: float = 1.0) -> None:
    """Print the job's output and error streams; with ``follow``, keep printing until the job ends."""
    job_id = job_id_of(read_manifest(run_dir), run_dir)
    offsets = dict.fromkeys(log_files(run_dir, job_id), 0)
    while True:
        for chunk in _new_text(offsets):
            write(chunk)
        if not follow:
            return
        state = job_state(job_id)
        if state is None or not state.active:
            for chunk in _new_text(offsets):  # what it wrote while stopping
                write(chunk)
            return
        time.sleep(poll)


def _new_text(offsets: dict[Path, int]) -> Iterator[str]:
    for path, offset in offsets.items():
        if path.is_file() and path.stat().st_size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            offsets[path] = offset + len(data)
            yield data.decode("utf-8", errors="replace")
