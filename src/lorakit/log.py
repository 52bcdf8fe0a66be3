"""Logging set-up for the CLI. Library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os


class RankZeroFilter(logging.Filter):
    """Drop records from every process but the main one in multi-process runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return os.environ.get("RANK", "0") == "0"


def setup_logging(verbose: bool = False) -> None:
    """Send lorakit's log records to stderr through rich, one line each."""
    import sys

    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
    else:  # logs and CI: one unwrapped line per record
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(RankZeroFilter())
    root = logging.getLogger("lorakit")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    import warnings

    # peft asks transformers for checkpointing through a name transformers 5.2x deprecates: not the user's to fix.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
