"""Stop at a safe point: Ctrl+C or SIGTERM ends training after the current optimizer step.

A signal that lands inside ``optimizer.step()`` would leave half-updated weights that no longer
match the step count, so the first signal only asks the loop to stop at the next step boundary,
where the adapter and the resume state are consistent. A second Ctrl+C stops at once.
Slurm and the queue send SIGTERM before killing a job; it is treated like the first Ctrl+C.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from lorakit.proc import SIGNAL_NAMES, SignalHandlers

log = logging.getLogger(__name__)


class StopRequest(SignalHandlers):
    """While entered, SIGINT and SIGTERM set ``reason`` instead of raising (main thread only)."""

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
