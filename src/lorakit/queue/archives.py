"""Unpack .zip and .tar.gz datasets without letting an entry land outside its folder.

Every entry is checked before anything is written: absolute paths, ``..`` components and links
pointing out of the target are refused with the entry's name. Extraction goes to a temporary
folder that is renamed into place, so a crash never leaves a half-unpacked dataset that looks whole.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from lorakit.atomic import make_shared
from lorakit.disk import is_disk_full
from lorakit.errors import DataError, DiskFullError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")


def archive_stem(name: str) -> str | None:
    """``cats.zip`` -> ``cats``; None when ``name`` is not an archive lorakit unpacks."""
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _check_name(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        raise DataError(f"{archive}: entry {name!r} would be written outside the dataset folder; refusing to unpack")
    return path


def _check_link(archive: Path, name: str, target: str, hard: bool = False) -> None:
    # A symbolic link's target is relative to its own folder; a hard link's to the archive's root.
    where = (PurePosixPath() if hard else PurePosixPath(name).parent) / target
    if PurePosixPath(target).is_absolute() or ".." in PurePosixPath(os.path.normpath(str(where))).parts:
        raise DataError(f"{archive}: entry {name!r} links to {target!r}, outside the dataset folder; "
                        "refusing to unpack")


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            _check_name(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                _check_link(archive, info.filename, z.read(info).decode("utf-8", "replace"))
        z.extractall(into)  # zipfile writes links as plain files holding the target text


def _extract_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as t:
        for member in t.getmembers():
            _check_name(archive, member.name)
            if member.issym():
                _check_link(archive, member.name, member.linkname)
            elif member.islnk():
                _check_link(archive, member.name, member.linkname, hard=True)
            elif not (member.isfile() or member.isdir()):
                raise DataError(f"{archive}: entry {member.name!r} is a device or fifo; refusing to unpack")
        t.extractall(into, filter="data")  # the standard library's own guard, on top of ours


def unpack(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into the folder ``target`` (created; must not exist). The archive is kept: deleting
    it is the queue's decision (``lorakit.queue.keep``), once its remote original is verified.

    An archive holding one top-level folder and nothing else has that folder's contents moved up.

    Raises:
        DataError: an unsafe entry, a corrupt archive, or an unknown format; the archive is kept.
        DiskFullError: the disk of ``target`` has no room for the contents (the archive is kept too).
    """
    if archive_stem(archive.name) is None:
        raise DataError(f"{archive}: not an archive lorakit unpacks ({', '.join(ARCHIVE_SUFFIXES)})")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpacking-", dir=target.parent))
    try:
        try:
            if archive.name.lower().endswith(".zip"):
                _extract_zip(archive, staging)
            else:
                _extract_tar(archive, staging)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            if is_disk_full(e):  # not the archive's fault: every later dataset needs this disk too
                raise DiskFullError(f"{archive}: no room to unpack it on the disk of {target.parent} "
                                    f"({type(e).__name__}: {e}); free space there") from None
            raise DataError(f"{archive}: cannot unpack ({type(e).__name__}: {e})") from None
        children = list(staging.iterdir())
        root = children[0] if len(children) == 1 and children[0].is_dir() else staging
        if root == staging:
            make_shared(staging)  # mkdtemp's folder is private; it becomes the dataset's folder
        os.replace(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
