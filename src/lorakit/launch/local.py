"""Several training processes on this machine, started by torchrun's own launcher (elastic_launch).

The run folder is created by ``recipe.launch.train_processes`` before the processes start, so they all train
into the same one; each process runs ``python -m lorakit train --run-dir RUN`` and only rank 0 writes to it.
"""

from __future__ import annotations

import logging
import signal
import sys
import uuid
from pathlib import Path

from lorakit.errors import TrainingError
from lorakit.runs.folder import RunFolder
from lorakit.runs.manifest import UNFINISHED

log = logging.getLogger(__name__)


def worker_args(run_dir: Path) -> list[str]:
    """What each training process runs, after the Python interpreter."""
    return ["-m", "lorakit", "train", "--run-dir", str(run_dir)]


def run_processes(run_dir: Path, nproc: int) -> RunFolder:
    """Train an existing run folder (new, or to resume) with ``nproc`` processes on this machine.

    Raises:
        TrainingError: a process failed; the run is marked failed with the reason it gave.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # Threads: each process takes its share of the cores itself (train/host.py, LOCAL_WORLD_SIZE).
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    failure = None
    try:
        elastic_launch(config, entrypoint=sys.executable)(*worker_args(run_dir))
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        failure = f"training process {rank} exited with code {first.exitcode}"
    except SignalException as e:
        # Ctrl+C or SIGTERM reached the processes too: they stop at a step boundary and save their state.
        failure = f"stopped by {signal.Signals(e.sigval).name} before the processes could say how they ended"
    return ended_run(run_dir, failure)


def ended_run(run_dir: Path, failure: str | None) -> RunFolder:
    """A run trained by other processes, as they left it (marked failed when they died before saying how).

    Raises:
        TrainingError: it failed, or its processes died before they could say so.
    """
    run = RunFolder.open(run_dir)
    if failure and run.status in UNFINISHED:
        run.fail(failure)  # killed before it could mark itself
    outcome = run.outcome
    if outcome.status == "failed":
        raise TrainingError(f"{run_dir.name} failed: {outcome.reason or 'no reason recorded'}")
    return run
