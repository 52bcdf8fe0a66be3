"""Where batch work runs: the closed set of executors the queue (``[queue] executor``) and sweeps
(``--executor``) accept, defined once."""

from __future__ import annotations

from enum import Enum


class Executor(str, Enum):
    LOCAL = "local"  # here, one job after another (a sweep: N worker processes)
    SLURM = "slurm"  # each job (a sweep: each worker) its own Slurm job, submitted held, recorded, released
    RAY = "ray"  # each job (a sweep: each trial) a Ray task on whichever node of a Ray cluster has the resources

    @classmethod
    def names(cls) -> list[str]:
        return [e.value for e in cls]
