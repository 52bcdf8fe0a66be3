"""Versioned run folders: ``<name>-v001``, ``<name>-v002``, ... never reused, never overwritten."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from lorakit.atomic import check_writable
from lorakit.errors import RunError, WriteError

_VERSION = re.compile(r"-v(\d{3,})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """A name from outside (a dataset folder, a remote folder) as a folder and run name: letters, digits, ``.``,
    ``_`` and ``-`` kept, every other character ``_``; never hidden, never ``..``, never empty, at most 100
    characters. Different names may clean to the same one: callers that need distinct folders number them."""
    cleaned = _UNSAFE.sub("_", name)[:100]
    if cleaned.startswith((".", "-")):  # hidden, '..', or read as an option by a trainer's command line
        cleaned = "_" + cleaned[1:]
    return cleaned or "_"


def version_of(folder_name: str) -> int | None:
    """3 for ``typst-v003``; None for a folder name without a version."""
    m = _VERSION.search(folder_name)
    return int(m.group(1)) if m else None


def _versions(root: Path, name: str) -> list[int]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith(f"{name}-v") and (m := _VERSION.search(child.name)) and \
                child.name[: m.start()] == name:
            found.append(int(m.group(1)))
    return found


def next_run_dir(root: Path, name: str) -> Path:
    """The folder the next run of ``name`` would get (nothing is created)."""
    return root / f"{name}-v{max(_versions(root, name), default=0) + 1:03d}"


def check_runs_root(root: Path) -> None:
    """``root`` is a folder, or can be made as one.

    Raises:
        WriteError: naming the folder and what is in the way.
    """
    check_writable(root, f"the runs folder {root}", "choose another folder (output.dir)")


def _make_root(root: Path) -> None:
    check_runs_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only file system: refused even where access() says yes
        raise WriteError(f"cannot make the runs folder {root} ({e.strerror}); choose another folder "
                         "(output.dir)") from None


def allocate_run_dir(root: Path, name: str) -> Path:
    """Create and return the next free ``<name>-vNNN`` folder.

    ``mkdir`` either creates the folder or fails, so two runs started at once never share one.
    """
    _make_root(root)
    return _first_free(root, name, lambda v: f"{name}-v{v:03d}", max(_versions(root, name), default=0) + 1)


def _first_free(root: Path, name: str, folder: Callable[[int], str], version: int) -> Path:
    """Create the first folder ``folder(version)``, ``folder(version + 1)``... that does not exist yet."""
    for _ in range(10_000):
        candidate = root / folder(version)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            version += 1
    raise RunError(f"cannot allocate a run folder for {name!r} in {root}")


def allocate_pattern_dir(root: Path, pattern: str) -> Path:
    """Create and return ``pattern`` with ``{version}`` replaced by the next free number (``cats-v3s1600``).

    The number counts the folders that match the pattern with any number there; ``mkdir`` decides races.
    """
    before, _, after = pattern.partition("{version}")
    match = re.compile(re.escape(before) + r"(\d+)" + re.escape(after) + "$")
    _make_root(root)
    taken = [int(m.group(1)) for child in root.iterdir() if (m := match.match(child.name))]
    return _first_free(root, pattern, lambda v: f"{before}{v}{after}", max(taken, default=0) + 1)
