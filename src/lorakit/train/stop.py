"""Stop at a safe point: Ctrl+C or SIGTERM ends training after the current optimizer step.

A signal that lands inside ``optimizer.step()`` would leave half-updated weights that no longer
match the step count, so the first signal only asks the loop to stop at the next step boundary,
where the adapter and the resume state are consistent. A second Ctrl+C stops at once.
Slurm and the queue send SIGTERM before killing a job; it is treated like the first Ctrl+C.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

SIGNAL_NAMES = {signal.SIGINT: "Ctrl+C", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """While entered, SIGINT and SIGTERM set ``reason`` instead of raising (main thread only)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
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
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl+C: stop now
        self.reason = SIGNAL_NAMES[signum]
        log.warning("%s: stopping after the current step (Ctrl+C again to stop at once)", self.reason)

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when a signal asks to stop."""
        deadline = time.monotonic() + seconds
        while self.reason is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
