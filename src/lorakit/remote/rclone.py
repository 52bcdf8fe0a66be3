"""rclone, the real one, driven through its CLI: list, copy, verify, delete, empty the trash.

Every call names the config file explicitly and never logs it: rclone configs hold tokens and
passwords. Failures become one-line errors with the tail of rclone's stderr, classified so the
queue can tell "stop, the remote is full" from "this remote does not exist".
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import RemoteError, RemoteFullError

log = logging.getLogger(__name__)

# rclone's words for a write the remote will not take; a read-only WebDAV answers 403, or 409 on mkdir.
FULL_MARKERS = ("quota", "storage full", "insufficient storage", "507", "no space left", "storagequotaexceeded",
                "read-only", "read only", "403 forbidden", "409 conflict")
# Fail fast on a dead server when only probing (rclone's defaults retry for minutes).
PROBE_FLAGS = ("--retries", "1", "--low-level-retries", "1", "--contimeout", "5s", "--timeout", "15s")


def _tail(stderr: str, lines: int = 2) -> str:
    kept = [line.split(" ", 2)[-1] if line[:4].isdigit() else line for line in stderr.strip().splitlines()]
    return " | ".join(kept[-lines:])[:400]


def classify(stderr: str, action: str) -> RemoteError:
    """The error a failed rclone call means, as one line."""
    text = stderr.lower()
    tail = _tail(stderr)
    if "didn't find section in config file" in text:
        return RemoteError(f"rclone {action}: no such remote in the rclone config ({tail})")
    if "401" in text or "unauthorized" in text or "authentication" in text or "permission denied" in text:
        return RemoteError(f"rclone {action}: authentication failed; check the user and password in the "
                           f"rclone config ({tail})")
    if any(m in text for m in ("connection refused", "no such host", "timeout", "i/o timeout", "connection reset",
                               "network is unreachable", "eof")):
        return RemoteError(f"rclone {action}: cannot reach the remote ({tail})")
    if any(m in text for m in FULL_MARKERS):
        return RemoteFullError(f"rclone {action}: the remote refused the write: out of quota, full or read-only "
                               f"({tail})")
    if "directory not found" in text or "object not found" in text:
        return RemoteError(f"rclone {action}: not found on the remote ({tail})")
    return RemoteError(f"rclone {action} failed ({tail})")


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the listed folder
    size: int
    hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rclone:
    """One rclone binary and config file; ``flags`` are added to every call."""

    config: Path | None = None
    flags: tuple[str, ...] = ()
    binary: str = "rclone"

    def _run(self, args: list[str], action: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        exe = shutil.which(self.binary)
        if exe is None:
            raise RemoteError(f"rclone is not installed (looked for {self.binary!r}); install the rclone package")
        cmd = [exe, *(["--config", str(self.config)] if self.config else []), *self.flags, *extra, *args]
        log.debug("rclone %s", " ".join(args))  # arguments only: never the config's contents
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise classify(done.stderr, action)
        return done

    def probe(self, remote: str) -> None:
        """Fail fast with a clear message when the remote is unreachable or refuses us."""
        self._run(["lsjson", "--max-depth", "1", remote], f"lsjson {remote}", PROBE_FLAGS)

    def list_files(self, remote: str) -> list[RemoteFile]:
        """Every file under ``remote``, with size and the hashes the remote offers."""
        out = self._run(["lsjson", "-R", "--files-only", "--hash", remote], f"lsjson {remote}").stdout
        entries: list[dict[str, Any]] = json.loads(out or "[]")
        return [RemoteFile(e["Path"], int(e.get("Size", -1)),
                           {k.lower(): v for k, v in (e.get("Hashes") or {}).items()}) for e in entries]

    def copy(self, source: str, target: str, every_file: bool = False) -> None:
        """Copy a folder's contents (``rclone copy``), comparing by checksum where both sides have one.

        ``every_file`` transfers even files that look the same: on a remote without hashes "the same"
        means only the same size, and a changed file of equal size would be skipped.
        """
        self._run(["copy", "--checksum", *(["--ignore-times"] if every_file else []), source, target],
                  f"copy {source} -> {target}")

    def copy_file(self, source: str, target: str) -> None:
        self._run(["copyto", "--checksum", source, target], f"copyto {source} -> {target}")

    def verify(self, source: str, target: str, files: list[str] | None = None) -> None:
        """Every file of folder ``source`` (or just ``files`` in it) is in ``target`` with the same content.

        Hashes are compared where both sides have one; otherwise the bytes are (``--download``).

        Raises:
            RemoteError: a file differs or is missing.
        """
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
            args = ["check", "--one-way"]
            if files is not None:  # a list, not --include: file names may hold glob characters
                listing.write("".join(f"{name}\n" for name in files))
                listing.flush()
                args += ["--files-from", listing.name]
            out = self._run([*args, source, target], f"check {source} -> {target}").stderr
            if "hashes could not be checked" in out or "No common hash" in out:
                self._run([*args, "--download", source, target], f"check --download {source} -> {target}")

    def delete_file(self, remote: str) -> None:
        self._run(["deletefile", remote], f"deletefile {remote}")

    def delete_files(self, remote: str, files: list[str]) -> None:
        """Delete exactly ``files`` (relative to ``remote``), then the folders they leave empty.

        Never a purge: a file added to the folder meanwhile has no other copy.
        """
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
            listing.write("".join(f"{name}\n" for name in files))
            listing.flush()
            self._run(["delete", "--files-from", listing.name, remote], f"delete in {remote}")
        for folder in sorted({f.split("/", 1)[0] for f in files if "/" in f}):
            try:  # only empty folders go: anything added meanwhile keeps its folder
                self._run(["rmdirs", f"{remote}/{folder}"], f"rmdirs {remote}/{folder}")
            except RemoteError as e:
                if "not found" not in str(e):
                    raise

    def stat(self, remote: str) -> RemoteFile | None:
        """One file's size and hashes; None when it is not there."""
        try:
            out = self._run(["lsjson", "--stat", "--hash", remote], f"lsjson --stat {remote}").stdout
        except RemoteError as e:
            if "not found" in str(e):
                return None
            raise
        entry = json.loads(out or "null")
        if not entry or entry.get("IsDir"):
            return None
        return RemoteFile(entry["Path"], int(entry.get("Size", -1)),
                          {k.lower(): v for k, v in (entry.get("Hashes") or {}).items()})

    def read_text(self, remote: str) -> str | None:
        """A small remote file's text (``rclone cat``); None when it is not there."""
        try:
            return self._run(["cat", remote], f"cat {remote}").stdout
        except RemoteError as e:
            if "not found" in str(e):
                return None
            raise

    def list_or_none(self, remote: str) -> list[RemoteFile] | None:
        """Every file under ``remote``; None when the folder does not exist."""
        try:
            return self.list_files(remote)
        except RemoteError as e:
            if "not found" in str(e):
                return None
            raise

    def empty_trash(self, remote: str) -> bool:
        """``rclone cleanup``; False when the backend has no trash to empty (webdav, sftp, local)."""
        try:
            self._run(["cleanup", remote], f"cleanup {remote}")
        except RemoteError as e:
            if "doesn't support cleanup" in str(e) or "not supported" in str(e).lower():
                return False
            raise
        return True
