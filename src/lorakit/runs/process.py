"""The training process a run records (host, pid, and the kernel's start time of that pid, which tells it from a
later process given the same number), and whether it still runs: a run killed without a word (``kill -9``, the
kernel's out-of-memory killer, a reboot) keeps status running in its manifest; readers show it as crashed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

CRASHED = "crashed"  # shown, never written: the manifest says running while its process on this machine is gone


def this_process() -> dict[str, Any]:
    """What ``RunFolder.start`` records, so another process can find this one again."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": start_time(pid)}


def start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/PID/stat); None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(process: dict[str, Any]) -> bool | None:
    """Whether the recorded process still runs: None when this machine cannot tell (another host, no pid)."""
    if not process.get("pid") or process.get("host") != socket.gethostname():
        return None
    pid = int(process["pid"])
    if process.get("started") is None:  # recorded without /proc (macOS): the pid alone, though it may be reused
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process has that number now
            return True
        return True
    return start_time(pid) == process["started"]


def shown_status(manifest: dict[str, Any]) -> str:
    """The manifest's status, or crashed for a run marked running whose process on this machine is gone."""
    status = str(manifest.get("status", "?"))
    if status == "running" and process_alive(manifest.get("process") or {}) is False:
        return CRASHED
    return status
