"""Files written whole (temp file + rename): a reader never sees half a file, even if the writer is killed
mid-write. Cross-cutting like ``digest.py``: run manifests, the queue's state, the model cache and ``lorakit
infer``'s output use it.

A temporary file or folder is made private (0600, 0700), and safetensors (from 0.8) writes every file that way
(safetensors issue #782): renamed into place, a run's adapter or a merged model would stay unreadable to the
teammates and services (a vLLM server under its own user) the umask lets read everything else. What lorakit
writes gets the mode a plain ``open()`` or ``mkdir`` would have given it.
"""

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


def current_umask() -> int:
    """This process's umask, read without setting it (Linux's /proc) where possible: setting it to read it back
    would leave another thread's files made meanwhile world-writable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def make_shared(path: Path) -> None:
    """``path`` (a file, or a folder) with the mode a plain ``open()`` (``mkdir``) would have given it."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


def share_weights(folder: Path) -> None:
    """The ``*.safetensors`` files just written into ``folder`` made readable as the umask allows (safetensors
    makes them private); a file whose mode someone chose (not exactly 0600) is left as it is."""
    for weights in folder.glob("*.safetensors"):
        if weights.stat().st_mode & 0o777 == 0o600 and weights.stat().st_uid == os.getuid():
            make_shared(weights)


def save_shared(model: Any, folder: Path, **kwargs: Any) -> None:
    """``model.save_pretrained(folder)`` (an adapter, or a whole model), its weights readable as the umask allows
    (``share_weights``): a teammate's or a vLLM server's user could not load them otherwise."""
    model.save_pretrained(folder, **kwargs)
    share_weights(Path(folder))


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # the mode of the file it replaces, else what a plain open() gives: mkstemp's 0600 would stick otherwise
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # the temp file this call made, never the target
        raise
