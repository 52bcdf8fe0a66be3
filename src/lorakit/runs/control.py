"""Stopping a run that trains on this machine, from another process (``lorakit runs stop``, the dashboard).

The training process records itself when it starts (``runs.process``); a stop sends it SIGINT, exactly as Ctrl+C
in its terminal: it finishes the step, saves the adapter so far and its resume state, and marks the run
interrupted.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from lorakit.errors import RunError
from lorakit.runs.catalog import read_manifest
from lorakit.runs.process import process_alive, this_process


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
    if not process_alive(process):
        raise RunError(f"{run_dir.name}: its training process {pid} is gone (killed without saying how it ended?)")
    os.kill(pid, signal.SIGINT)
    return pid


def check_not_training(run_dir: Path) -> None:
    """Before a run is resumed: its own training process must not be running still (two processes training one
    folder write over each other's adapter, resume state and manifest). This process is not another one: a run it
    started and left unfinished (a sweep worker's trial, a test's simulated kill) is resumed here.

    Raises:
        RunError: it is still training on this machine; stop it first.
    """
    manifest = read_manifest(run_dir)
    process = manifest.get("process") or {}
    if manifest.get("status") == "running" and process_alive(process) and process != this_process():
        raise RunError(f"{run_dir.name} is training now (process {process['pid']} on this machine); stop it first "
                       f"(lorakit runs stop {run_dir}), then resume it")
