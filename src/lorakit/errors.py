"""The exceptions lorakit raises for problems a user can fix.

Each message follows the house format: what is wrong, where (key path or file:line), what was
got, and how to fix it. The CLI prints the message alone, never a traceback.
"""


class LorakitError(Exception):
    """Base class: a problem with the user's input or environment, reported in one message."""

    exit_code = 1


class ConfigError(LorakitError):
    """The layered config is invalid (unknown key, wrong type, bad value)."""

    exit_code = 2


class DataError(LorakitError):
    """A data file is missing, malformed, or yields no usable examples."""


class DataRefusal(DataError):
    """Data lorakit will not train as it stands (preference pairs, media, labels): said once per file."""


class PreferenceRows(DataRefusal):
    """Preference pairs where supervised rows were expected (``data check`` then reads them as pairs)."""


class LabelledRows(DataRefusal):
    """KTO's true/false-labelled rows without data.label_field (``data check`` then reads them with it)."""


class ModelError(LorakitError):
    """The base model cannot be found, converted or loaded as configured."""


class TrainingError(LorakitError):
    """Training stopped for a reason the user must look at (divergence, say)."""


class OutOfMemoryError(TrainingError):
    """A step ran out of memory and the out-of-memory ladder had nothing left to try (the run's kind: out-of-memory)."""


class MemoryBudgetError(LorakitError):
    """A memory budget cannot hold the run even at its smallest settings."""


class WriteError(LorakitError):
    """A file or folder lorakit was asked to write cannot be made where it was asked."""


class DiskFullError(LorakitError):
    """The disk a run or a result is written to is full (or too small for what a run will write)."""

    exit_code = 28  # ENOSPC's number: a parent (the queue) tells a full disk, which stops it, from a failed run


class RunError(LorakitError):
    """A run folder is missing, unreadable or in the wrong state."""


class RemoteError(LorakitError):
    """rclone could not reach, authenticate to, read or write a remote."""


class RemoteFullError(RemoteError):
    """The remote refused a write: out of quota, full, or read-only."""


class QueueError(LorakitError):
    """A queue workspace is invalid, or the queue cannot go on."""


class LaunchError(LorakitError):
    """Training processes or a Slurm job could not be started, watched or stopped."""
