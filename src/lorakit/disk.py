"""A full disk, recognised and said in one line. Cross-cutting like ``atomic.py``.

Libraries report it in their own words: Python's ``OSError`` (errno ENOSPC), the Rust I/O error of tokenizers and
safetensors ("No space left on device (os error 28)"), numpy's ``tofile`` an errno-less "Not enough free space to
write", torch's zip writer an "unexpected pos" that names no cause at all. A long run must not end in a traceback
because its last save found no room, and the user must learn which disk to free.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from lorakit.errors import DiskFullError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# strerror (as Rust's io::Error prints it too), and numpy's tofile (the GGUF writer's), which sets no errno
FULL_WORDS = ("No space left on device", "Disk quota exceeded", "Not enough free space to write")
NEARLY_FULL = 1 << 20  # bytes: under this much free after a failed write, the write found no room


def nearest_existing(path: str | Path) -> Path:
    """``path``, or its nearest parent that exists: where a folder still to be made would go."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    return where


def free_bytes(path: str | Path) -> int:
    """Free space on the disk that holds ``path`` (or its nearest existing parent)."""
    return shutil.disk_usage(nearest_existing(Path(path).absolute())).free


def is_disk_full(error: BaseException, where: str | Path | None = None) -> bool:
    """Whether ``error`` (or what caused it) is a write that found no room; with ``where``, also any error
    raised while the disk holding ``where`` is left (nearly) full, as torch's writer's is."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return True
        if any(words in str(seen) for words in FULL_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    if where is None:
        return False
    try:
        return free_bytes(where) < NEARLY_FULL
    except OSError:
        return False


def full_disk_line(lines: list[str]) -> str | None:
    """The last of a child's output ``lines`` that says its disk was full, in any library's words."""
    return next((line.strip() for line in reversed(lines) if any(words in line for words in FULL_WORDS)), None)


def disk_full_error(error: BaseException, target: Path) -> DiskFullError | None:
    """``error`` said in one line naming the disk it could not write ``target`` to; None when it is not a full
    disk."""
    folder = target.parent.absolute()
    if not is_disk_full(error, folder):
        return None
    return DiskFullError(f"no space left on the disk of {folder} writing {target.name} ({type(error).__name__}: "
                         f"{error}; {size_text(free_bytes(folder))} free now); free space there, or write elsewhere")


def size_text(size: float) -> str:
    """Bytes as people read them: 512 B, 3.4 MiB, 1.25 GiB."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.2f} GiB"
