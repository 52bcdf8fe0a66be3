"""A run started elsewhere than this process: as a Slurm job, or as several processes on this machine.

Both create the run folder here, from the config, before anything starts (so every check runs first and the
job's or processes' output lands in it); ``launch/`` then does only the mechanics (sbatch, torchrun).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit import __version__
from lorakit.config.load import LoadedConfig
from lorakit.launch.jobs import submit_held
from lorakit.launch.local import run_processes as start_processes
from lorakit.launch.sbatch import JobPlan, render
from lorakit.recipe.finish import TrainOutcome
from lorakit.recipe.start import start_run
from lorakit.runs.naming import next_run_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    run_dir: Path
    script: str
    job_id: str | None  # None for a dry run


def _plan(loaded: LoadedConfig, run_dir: Path) -> JobPlan:
    launch = loaded.config.launch
    nproc = launch.nproc if launch.nproc > 1 else max(1, launch.slurm.gpus_per_node)
    return JobPlan(run_dir.resolve(), Path.cwd().resolve(), launch.slurm, nproc)


def submit_run(loaded: LoadedConfig, command_line: list[str], dry_run: bool = False,
               record: dict[str, Any] | None = None) -> Submission:
    """Create the run folder, write its sbatch script and submit it; the job id goes in the manifest.

    With ``dry_run`` nothing is created or submitted: the script the next run would get. ``record``: more
    fields for the first manifest (the queue's dataset fingerprint).

    Raises:
        LaunchError: a value the script cannot carry, or sbatch refused the job (the run is marked failed).
    """
    predicted = next_run_dir(Path(loaded.config.output.dir), loaded.run_name)
    script = render(_plan(loaded, predicted), __version__)  # a bad value fails before anything is made
    if dry_run:
        return Submission(predicted, script, None)
    run = start_run(loaded, command_line, trains_here=False, record=record)
    script = render(_plan(loaded, run.path), __version__)
    return Submission(run.path, script, submit_held(run, script))


def train_processes(loaded: LoadedConfig, command_line: list[str],
                    record: dict[str, Any] | None = None) -> TrainOutcome:
    """Create the run folder (``record``: more manifest fields), train it with ``launch.nproc`` processes, and
    report how it ended.

    The data is tokenized here first, as ``run_training`` does, though each process tokenizes it again: a row
    the chat template refuses or a module-name typo fails with no run folder (seconds, against a run's minutes).
    """
    from lorakit.recipe.checks import before_start
    from lorakit.recipe.session import prepare_data

    before_start(loaded.config)
    prepare_data(loaded.config)
    run_dir = start_run(loaded, command_line, record=record, checked=True).path
    log.info("run folder: %s; starting %d training processes", run_dir, loaded.config.launch.nproc)
    return run_processes(run_dir, loaded.config.launch.nproc)


def run_processes(run_dir: Path, nproc: int) -> TrainOutcome:
    """Train an existing run folder (new, or to resume) with ``nproc`` processes on this machine; how it ended.

    Raises:
        RunError: the run is still training (checked here, before processes that would fail and mark it failed).
        TrainingError: a process failed; the run is marked failed with the reason it gave.
    """
    from lorakit.runs.control import check_not_training

    check_not_training(run_dir)
    run = start_processes(run_dir, nproc)
    return TrainOutcome(run_dir, run.outcome, run.data.get("metrics", {}))


