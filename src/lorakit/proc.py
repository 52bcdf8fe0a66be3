"""Run a trainer as a child process: its output streamed to a log, its life tied to the queue's."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A queue killed with SIGKILL must not leave a trainer running that a re-run would race.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Finished:
    returncode: int
    tail: list[str]  # the last lines of output

    def error_line(self) -> str:
        """The child's own one-line error when it printed one, else its last line."""
        for line in reversed(self.tail):
            if line.startswith("error:"):
                return line.removeprefix("error:").strip()
        return self.tail[-1].strip() if self.tail else f"exit code {self.returncode}"


class Child:
    """The running child, so a signal handler can forward SIGTERM to it."""

    process: subprocess.Popen | None = None


def run_logged(cmd: Sequence[str], log_path: Path, cwd: Path | None = None, child: Child | None = None,
               echo: bool = True) -> Finished:
    """Run ``cmd``, appending its stdout and stderr to ``log_path`` (and echoing them), until it exits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    with log_path.open("a", encoding="utf-8") as log:
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if child is not None:
            child.process = proc
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                if echo:
                    sys.stderr.write(line)
            proc.wait()
        finally:
            if child is not None:
                child.process = None
    return Finished(proc.returncode, list(tail))
