"""Run a trainer as a child process: its output streamed to a log, its life tied to ours, signals passed on.

Cross-cutting like ``log.py``: the queue, ``lorakit run`` and external trainers all run children.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from lorakit.redaction import redact_text

PR_SET_PDEATHSIG = 1
SIGNAL_NAMES = {signal.SIGINT: "Ctrl+C", signal.SIGTERM: "SIGTERM"}
# A progress bar (tqdm, rich) or a bare log prefix is never the reason a trainer failed.
PROGRESS = re.compile(r"\d+%\|| \d+/\d+ \[|it/s\]|s/it\]|━━")
EXCEPTION = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupt|Exit)|error|fatal|Killed)\b[:\s]", re.IGNORECASE)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A queue or `lorakit run` killed with SIGKILL must not leave a trainer running that a re-run would race.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Finished:
    returncode: int
    tail: list[str]  # the last lines of output

    def error_line(self) -> str:
        """Why the child failed, in one line: its own ``error:`` line, else its last exception line
        (``torch.OutOfMemoryError: ...``), else its last line that is not a progress bar."""
        lines = [line.strip() for line in self.tail if line.strip()]
        for line in reversed(lines):
            if line.startswith("error:"):
                return line.removeprefix("error:").strip()
        for line in reversed(lines):
            if EXCEPTION.match(line) and not PROGRESS.search(line):
                return line
        for line in reversed(lines):
            if not PROGRESS.search(line):
                return line
        return f"exit code {self.returncode}"


class Child:
    """The running child, so a signal handler can pass a signal on to it (its whole process group)."""

    process: subprocess.Popen | None = None
    own_group: bool = False

    def send(self, signum: int) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.own_group:
                os.killpg(process.pid, signum)  # launchers (accelerate, torchrun) and their workers alike
            else:
                process.send_signal(signum)


def _lines(stream: object) -> object:
    """Lines of output as the child writes them; a carriage return (a progress bar redrawn) ends a line too."""
    pending = ""
    read = stream.read1 if hasattr(stream, "read1") else stream.read  # type: ignore[attr-defined]
    while chunk := read(8192):
        pending += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        *done, pending = re.split(r"(?<=[\r\n])", pending)
        yield from done
    if pending:
        yield pending


def run_logged(cmd: Sequence[str], log_path: Path, cwd: Path | None = None, child: Child | None = None,
               echo: bool = True, env: Mapping[str, str] | None = None, own_group: bool = False) -> Finished:
    """Run ``cmd``, appending its stdout and stderr to ``log_path`` (and echoing them), until it exits.

    Each line is redacted (``lorakit.redaction``) before it is written or echoed: a trainer that prints its
    config or its command line must not leave a token in the log that travels with the run.

    With ``own_group`` the child leads a process group of its own, so a signal passed on through
    ``child`` reaches every process it starts, and a terminal's Ctrl+C reaches it only through us.

    Raises:
        OSError: the program cannot be started (missing, not executable).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=40)
    with log_path.open("a", encoding="utf-8") as log:
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                                start_new_session=own_group,
                                env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
        if child is not None:
            child.process, child.own_group = proc, own_group
        line = "\n"
        try:
            assert proc.stdout is not None
            for raw in _lines(proc.stdout):
                line = redact_text(raw)
                log.write(line)
                log.flush()
                if line.strip():
                    tail.append(line.rstrip("\r\n"))
                if echo:
                    sys.stderr.write(line)
                    sys.stderr.flush()
            proc.wait()
            if echo and not line.endswith("\n"):  # a progress bar left mid-line: our next log line starts afresh
                sys.stderr.write("\n")
        finally:
            if child is not None:
                child.process = None
    return Finished(proc.returncode, list(tail))


class SignalHandlers:
    """While entered, SIGINT and SIGTERM call ``_handle`` instead of their usual action (main thread only);
    the handlers before are put back on exit. ``reason`` names the first signal that arrived."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalHandlers:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError


class ForwardSignals(SignalHandlers):
    """SIGINT and SIGTERM passed on to the child's process group and remembered; a second Ctrl+C kills it."""

    def __init__(self, child: Child) -> None:
        super().__init__()
        self.child = child

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            self.child.send(signal.SIGKILL)  # the second Ctrl+C: stop now
            return
        self.reason = SIGNAL_NAMES[signum]
        self.child.send(signum)
