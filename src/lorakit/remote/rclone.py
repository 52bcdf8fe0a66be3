"""rclone, the real one, driven through its CLI: list, copy, verify, delete.

Every call names the config file explicitly and never logs it: rclone configs hold tokens and
passwords. Failures become one-line errors with the tail of rclone's stderr, classified so the
queue can tell "stop, the remote is full" from "this remote does not exist".

The user's own flags (``remote.flags``) reach the transfers only. Everything that decides whether a
copy is good, and every deletion, runs with lorakit's own arguments plus the connection-level flags
of ``CONNECTION_FLAGS`` (timeouts, retries, bandwidth, TLS, the config password), and without the
``RCLONE_*`` environment variables that act as flags: a ``--exclude *.safetensors`` (or
``RCLONE_EXCLUDE``) must not make a check agree that an adapter is there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.disk import FULL_WORDS, free_bytes, size_text
from lorakit.errors import DiskFullError, RemoteError, RemoteFullError
from lorakit.remote.paths import is_local, split_remote

log = logging.getLogger(__name__)

# rclone's words for a write the remote will not take; a read-only WebDAV answers 403, or 409 on mkdir.
FULL_MARKERS = ("quota", "storage full", "insufficient storage", "507", "no space left", "storagequotaexceeded",
                "read-only", "read only", "403 forbidden", "409 conflict")
# rclone's words for a local disk it cannot write to: preallocating a file, or the write itself (strerror).
LOCAL_FULL_MARKERS = ("too big for remaining disk space", *(words.lower() for words in FULL_WORDS))
# Fail fast on a dead server when only probing (rclone's defaults retry for minutes).
PROBE_FLAGS = ("--retries", "1", "--low-level-retries", "1", "--contimeout", "5s", "--timeout", "15s")
# The user's flags that also reach checks, listings and deletions: how to connect, never what to compare.
# name -> whether it takes a value.
CONNECTION_FLAGS = {
    "--timeout": True, "--contimeout": True, "--expect-continue-timeout": True, "--retries": True,
    "--retries-sleep": True, "--low-level-retries": True, "--bwlimit": True, "--bwlimit-file": True,
    "--tpslimit": True, "--tpslimit-burst": True, "--user-agent": True, "--ca-cert": True, "--client-cert": True,
    "--client-key": True, "--no-check-certificate": False, "--bind": True, "--header": True,
    "--disable-http2": False, "--password-command": True, "--ask-password": False, "--checkers": True,
    "--transfers": True, "--fast-list": False, "--use-mmap": False,
}
# Hashes asked of every listing: the ones rclone backends commonly keep (a remote offering none is
# compared by downloading).
HASH_TYPES = ("md5", "sha1", "sha256", "crc32", "quickxor", "dropbox")
# Flags that make a deletion permanent on backends that trash deleted files by default.
HARD_DELETE = {"drive": "--drive-use-trash=false", "b2": "--b2-hard-delete", "onedrive": "--onedrive-hard-delete",
               "jottacloud": "--jottacloud-hard-delete", "mega": "--mega-hard-delete"}


def connection_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """The connection-level flags among ``flags`` (``CONNECTION_FLAGS``), with their values."""
    kept: list[str] = []
    i = 0
    while i < len(flags):
        name = flags[i].split("=", 1)[0]
        takes_value = CONNECTION_FLAGS.get(name)
        if takes_value and "=" not in flags[i] and i + 1 < len(flags):
            kept += flags[i:i + 2]
            i += 2
            continue
        if takes_value is not None:
            kept.append(flags[i])
        i += 1
    return tuple(kept)


def _env_name(flag: str) -> str:
    return "RCLONE_" + flag.removeprefix("--").replace("-", "_").upper()


def checks_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for checks and deletions: every ``RCLONE_*`` variable that acts as a flag removed,
    except the config (``RCLONE_CONFIG*``: the file, its password, remotes defined by variables) and the
    connection-level ones."""
    env = dict(os.environ) if env is None else env
    allowed = {_env_name(f) for f in CONNECTION_FLAGS}
    return {k: v for k, v in env.items()
            if not k.startswith("RCLONE_") or k.startswith("RCLONE_CONFIG") or k in allowed}


def _tail(stderr: str, lines: int = 2) -> str:
    kept = [line.split(" ", 2)[-1] if line[:4].isdigit() else line for line in stderr.strip().splitlines()]
    return " | ".join(kept[-lines:])[:400]


def classify(stderr: str, action: str, target: str | None = None) -> RemoteError | DiskFullError:
    """The error a failed rclone call means, as one line; ``target``: where a copy writes (a full local disk
    there is this machine's to free, not the remote's)."""
    text = stderr.lower()
    tail = _tail(stderr)
    if target is not None and is_local(target) and any(m in text for m in LOCAL_FULL_MARKERS):
        return DiskFullError(f"rclone {action}: no space left on the disk of {target} ({tail}; "
                             f"{size_text(free_bytes(target))} free now); free space there")
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
    modtime: str | None = None


def _remote_file(entry: dict[str, Any]) -> RemoteFile:
    return RemoteFile(entry["Path"], int(entry.get("Size", -1)),
                      {k.lower(): v for k, v in (entry.get("Hashes") or {}).items()}, entry.get("ModTime"))


@dataclass(frozen=True)
class Rclone:
    """One rclone binary and config file; ``flags`` (the user's) reach the transfers, and only their
    connection-level part reaches anything else."""

    config: Path | None = None
    flags: tuple[str, ...] = ()
    binary: str = "rclone"

    def _run(self, args: list[str], action: str, extra: tuple[str, ...] = (),
             transfer: bool = False, target: str | None = None) -> subprocess.CompletedProcess:
        exe = shutil.which(self.binary)
        if exe is None:
            raise RemoteError(f"rclone is not installed (looked for {self.binary!r}); install the rclone package")
        flags = self.flags if transfer else connection_flags(self.flags)
        cmd = [exe, *(["--config", str(self.config)] if self.config else []), *flags, *extra, *args]
        log.debug("rclone %s", " ".join(args))  # arguments only: never the config's contents
        done = subprocess.run(cmd, capture_output=True, text=True, env=None if transfer else checks_environment())
        if done.returncode != 0:
            raise classify(done.stderr, action, target)
        return done

    def probe(self, remote: str) -> None:
        """Fail fast with a clear message when the remote is unreachable or refuses us."""
        self._run(["lsjson", "--max-depth", "1", remote], f"lsjson {remote}", PROBE_FLAGS)

    def list_files(self, remote: str) -> list[RemoteFile]:
        """Every file under ``remote``, with size, modification time and the hashes the remote offers."""
        hashes = [a for h in HASH_TYPES for a in ("--hash-type", h)]
        out = self._run(["lsjson", "-R", "--files-only", *hashes, remote], f"lsjson {remote}").stdout
        return [_remote_file(e) for e in json.loads(out or "[]")]

    def copy(self, source: str, target: str, every_file: bool = False) -> None:
        """Copy a folder's contents (``rclone copy``), comparing by checksum where both sides have one.

        ``every_file`` transfers even files that look the same: on a remote without hashes "the same"
        means only the same size, and a changed file of equal size would be skipped.
        """
        self._run(["copy", "--checksum", *(["--ignore-times"] if every_file else []), source, target],
                  f"copy {source} -> {target}", transfer=True, target=target)

    def copy_file(self, source: str, target: str) -> None:
        self._run(["copyto", "--checksum", source, target], f"copyto {source} -> {target}", transfer=True,
                  target=target)

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

    def sha256_by_download(self, remote: str, files: list[str]) -> dict[str, str]:
        """The sha256 of each of ``files`` (relative to the folder ``remote``) as its bytes are now, computed
        here while they are downloaded (``rclone hashsum --download``); a file not there is left out."""
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
            listing.write("".join(f"{name}\n" for name in files))
            listing.flush()
            try:
                out = self._run(["hashsum", "sha256", "--download", "--files-from", listing.name, remote],
                                f"hashsum --download {remote}").stdout
            except RemoteError as e:
                if "not found" in str(e):
                    return {}
                raise
        found = {}
        for line in out.splitlines():
            digest, _, name = line.partition("  ")
            if name:
                found[name] = digest.strip()
        return found

    def remote_type(self, remote: str) -> str | None:
        """The backend type of ``remote`` (drive, webdav, local...) from ``rclone listremotes --long``."""
        prefix, _ = split_remote(remote)
        if not prefix:
            return "local"
        name = prefix[:-1].split(",", 1)[0]  # "drive,shared_with_me=true:" names the remote drive
        if name.startswith(":"):  # an on-the-fly remote: ":webdav,url=...:path"
            return name[1:]
        out = self._run(["listremotes", "--long"], "listremotes").stdout
        for line in out.splitlines():
            listed, _, kind = line.partition(":")
            if listed.strip() == name:
                return kind.strip() or None
        return None

    def delete_file(self, remote: str, extra: tuple[str, ...] = ()) -> None:
        self._run(["deletefile", *extra, remote], f"deletefile {remote}")

    def delete_files(self, remote: str, files: list[str], extra: tuple[str, ...] = ()) -> None:
        """Delete exactly ``files`` (relative to ``remote``), then the folders they leave empty.

        Never a purge: a file added to the folder meanwhile has no other copy. ``extra``: lorakit's own
        backend flags (``HARD_DELETE``).
        """
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
            listing.write("".join(f"{name}\n" for name in files))
            listing.flush()
            self._run(["delete", *extra, "--files-from", listing.name, remote], f"delete in {remote}")
        for folder in sorted({f.split("/", 1)[0] for f in files if "/" in f}):
            try:  # only empty folders go: anything added meanwhile keeps its folder
                self._run(["rmdirs", f"{remote}/{folder}"], f"rmdirs {remote}/{folder}")
            except RemoteError as e:
                if "not found" not in str(e):
                    raise

    def stat(self, remote: str) -> RemoteFile | None:
        """One file's size and hashes; None when it is not there."""
        hashes = [a for h in HASH_TYPES for a in ("--hash-type", h)]
        try:
            out = self._run(["lsjson", "--stat", *hashes, remote], f"lsjson --stat {remote}").stdout
        except RemoteError as e:
            if "not found" in str(e):
                return None
            raise
        entry = json.loads(out or "null")
        if not entry or entry.get("IsDir"):
            return None
        return _remote_file(entry)

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
