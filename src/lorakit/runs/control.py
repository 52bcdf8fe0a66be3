"""Stopping a run that trains on this machine, from another process (``lorakit runs stop``, the dashboard).

The training process records itself (host, pid, and the kernel's start time of that pid, which tells it from a
later process given the same number) when it starts; a stop sends it SIGINT, exactly as Ctrl+C in its terminal:
it finishes the step, saves the adapter so far and its resume state, and marks the run interrupted.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

from lorakit.errors import RunError
from lorakit.runs.catalog import read_manifest


def this_process() -> dict[str, Any]:
    """What ``RunFolder.start`` records, so another process can find this one again."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def _start_time(pid: int) -> str | None:
    # Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot (Linux).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def stop_run(run_dir: Path) -> int:
    """Ask the run's training process to stop at the next step boundary (SIGINT, as Ctrl+C). Its pid.

    Raises:
        RunError: the run is not training, trains on another machine, or its process is gone.
    """
    manifest = read_manifest(run_dir)
    status = manifest.get("status")
    if status != "running":
        raise RunError(f"{run_dir.name} is not training (status {status}); nothing to stop")
    process = manifest.get("process") or {}
    if not process.get("pid"):
        raise RunError(f"{run_dir.name} records no training process (it started before lorakit recorded one)")
    if process.get("host") != socket.gethostname():
        raise RunError(f"{run_dir.name} trains on {process.get('host')}: stop it there (a Slurm job: lorakit "
                       "cancel)")
    pid = int(process["pid"])
    if _start_time(pid) is None or (process.get("started") and _start_time(pid) != process["started"]):
        raise RunError(f"{run_dir.name}: its training process {pid} is gone (killed without saying how it ended?)")
    os.kill(pid, signal.SIGINT)
    return pid
