"""Files written whole (temp file + rename): a reader never sees half a file, even if the writer is killed
mid-write. Cross-cutting like ``digest.py``: run manifests, the queue's state, the model cache and ``lorakit
infer``'s output use it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def check_writable(folder: Path, what: str, fix: str) -> None:
    """``folder`` can be written, or made: its nearest existing parent is a folder this user can write. Checked
    before the work whose result would be lost when the write fails at its end.

    Raises:
        WriteError: ``what`` cannot be made there, naming what is in the way, and ``fix``.
    """
    from lorakit.disk import nearest_existing
    from lorakit.errors import WriteError

    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise WriteError(f"{existing} is a file, so {what} cannot be made there; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only file system, even for root
        raise WriteError(f"{existing} is not writable by this user, so {what} cannot be "
                         f"{'written' if existing == folder else 'made'}; {fix}")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # the temp file this call made, never the target
        raise
