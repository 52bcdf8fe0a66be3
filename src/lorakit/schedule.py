"""When a periodic action is due: the one rule for logging, validation, samples, checkpoints and resume states."""

from __future__ import annotations


def due(step: int, every: int | None) -> bool:
    """Whether an action done every ``every`` optimizer steps runs after ``step`` (never when ``every`` is 0/None)."""
    return bool(every) and step > 0 and step % every == 0  # type: ignore[operator]
