"""``--executor slurm``: each worker is a Slurm job with a folder of its own (``sweeps/<name>/workers/``),
submitted held, recorded, then released, like a run, so ``lorakit status/logs/cancel`` work on it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lorakit import __version__
from lorakit.config.schema import SlurmSection
from lorakit.launch.jobs import reconcile, submit_held
from lorakit.launch.sbatch import JobPlan, render
from lorakit.runs.catalog import run_dirs
from lorakit.runs.folder import RunFolder
from lorakit.sweep.study import Sweep

log = logging.getLogger(__name__)

WORKERS_DIR = "workers"


def _live_workers(sweep: Sweep) -> list[Path]:
    live = []
    for folder in run_dirs(sweep.path / WORKERS_DIR):
        _, state = reconcile(folder)
        if state is not None and state.active:
            live.append(folder)
    return live


def submit_worker(sweep: Sweep, slurm: SlurmSection) -> tuple[Path, str]:
    """One worker job; its folder and job id."""
    run = RunFolder.create(sweep.path / WORKERS_DIR, "worker", trainer="sweep-worker", sweep={"name": sweep.name},
                           command_line=["lorakit", "sweep", sweep.name])
    plan = JobPlan(run.path.resolve(), Path(sweep.working_directory), slurm, 1,
                   ("-m", "lorakit", "sweep", "work", sweep.folder, "--as", str(run.path.resolve())),
                   f"works on sweep {sweep.name} until it has its trials")
    return run.path, submit_held(run, render(plan, __version__))


def run_slurm_workers(sweep: Sweep, slurm: SlurmSection, poll: float = 5.0) -> None:
    """Submit workers until ``sweep.workers`` are alive (those of an earlier, killed command are adopted),
    then wait for all of them to leave Slurm."""
    live = _live_workers(sweep)
    for _ in range(sweep.workers - len(live)):
        folder, job_id = submit_worker(sweep, slurm)
        log.info("sweep %s: worker %s is Slurm job %s", sweep.name, folder.name, job_id)
        live.append(folder)
    while live:
        time.sleep(poll)  # polling Slurm: a worker's job ends when the sweep has its trials
        live = [f for f in live if (s := reconcile(f)[1]) is not None and s.active]
