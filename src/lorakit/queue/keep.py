"""The queue's one rule for destroying anything, enforced here and nowhere else.

A copy is deleted only if, *at that moment*, another verified copy of what matters exists:

- training data (the remote originals and the local copies the queue made) and the local run
  folder: the job's result on the remote output, checked now against the local run (every file listed
  with its size, model files first; then hashes where the remote has them, the bytes where it does
  not), holding at least one model file, and trained on exactly the data being deleted: the run's
  manifest records the dataset's content, and it must equal what was downloaded (remote files) or what
  is in the folder now (local files);
- a remote training file is deleted only if it is provably unchanged since it was downloaded: the same
  size and hashes, or, on a remote without hashes, the same sha256 of its bytes downloaded again;
- a downloaded archive: its remote original, checked now against it;
- a run folder that never finished: nothing in it is worth a copy (no model file, no checkpoint,
  no resume state, no images), or it is kept.

A stage recorded earlier ("uploaded") is never enough on its own: every method re-checks right
before it deletes, and deletes exactly the files the queue itself placed (never a purge), so a
file someone added or changed meanwhile survives. Overwriting is destruction too: a result is
uploaded only to a folder no other run owns (``result_target``). The checks run rclone with
lorakit's own arguments (``lorakit.remote.rclone``): no user flag can make them pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lorakit import faults
from lorakit.errors import RemoteError
from lorakit.remote.rclone import HARD_DELETE, Rclone, RemoteFile
from lorakit.runs.catalog import model_files, read_manifest, worth_keeping
from lorakit.runs.fingerprint import file_sha256
from lorakit.runs.manifest import created_at
from lorakit.runs.process import process_alive

log = logging.getLogger(__name__)

LORAKIT_MODEL = ("adapter_model.safetensors",)  # what a trained model is in lorakit's own runs
# Uploaded first into a result folder by a job that runs on another machine (the ray executor): the job's claim,
# recorded in the state before it was sent, so a retry of the job (its node died mid-upload) knows the folder as
# its own and uploads there again instead of under a second name.
CLAIM_FILE = "queue-claim.txt"


class NotVerified(Exception):
    """The other copy could not be verified just now; nothing was deleted."""


def run_identity(manifest: dict[str, Any]) -> str:
    """What tells one run from every other: its run id (older manifests: name and creation time)."""
    if manifest.get("run_id"):
        return str(manifest["run_id"])
    return f"{manifest.get('name')}@{created_at(manifest)}"


def same_content(recorded: dict[str, Any], now: RemoteFile) -> bool:
    """The remote file is the one recorded: same size, and the same value for every hash both have."""
    if recorded.get("size") != now.size:
        return False
    hashes = recorded.get("hashes") or {}
    return all(hashes[k] == v for k, v in now.hashes.items() if k in hashes)


def _common_hash(recorded: dict[str, Any], now: RemoteFile) -> bool:
    return any(k in now.hashes for k in recorded.get("hashes") or {})


def remove_empty_folders(top: Path) -> None:
    """Remove the folders under ``top`` (and ``top``) that are empty, deepest first."""
    if not top.is_dir():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(top.iterdir()):
        top.rmdir()


def trained_on(run_dir: Path) -> str | None:
    """The dataset content the run's manifest says it was trained on."""
    try:
        return (read_manifest(run_dir).get("dataset") or {}).get("sha256")
    except Exception:  # an unreadable manifest proves nothing
        return None


def _check_trained_on(recorded: str | None, content: str | None, result: str, what: str) -> None:
    """``result``'s manifest records exactly ``content``, else NotVerified naming both."""
    if content is None or recorded != content:
        raise NotVerified(f"{result} was not trained on {what} (its manifest records "
                          f"{(recorded or 'no dataset')[:12]}, the data is {(content or 'unknown')[:12]})")


@dataclass
class Keeper:
    """Every deletion the queue makes, each after its own check."""

    rclone: Rclone
    model_patterns: tuple[str, ...]
    skip_trash: bool = False
    _delete_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # -- checks -------------------------------------------------------------------------------
    def verify_result(self, run_dir: Path, remote: str | None) -> None:
        """``remote`` holds every file of ``run_dir`` with the same content, a model file among them.

        Every file must be listed there with its size (model files are looked at first), then rclone compares
        them: by hash where the remote keeps one, else by downloading the remote's bytes.

        Raises:
            NotVerified: why not.
        """
        if remote is None:
            raise NotVerified("the result was never uploaded")
        if not run_dir.is_dir():
            raise NotVerified(f"the local run {run_dir} is gone, so {remote} cannot be checked against it")
        models = model_files(run_dir, self.model_patterns)
        if not models:
            raise NotVerified(f"{run_dir} holds no model file ({', '.join(self.model_patterns)})")
        local = sorted((p for p in run_dir.rglob("*") if p.is_file()), key=lambda p: (p not in models, str(p)))
        try:
            listed = {f.path: f for f in self.rclone.list_or_none(remote) or []}
            for path in local:
                name = path.relative_to(run_dir).as_posix()
                if name not in listed:
                    raise NotVerified(f"{remote} lacks {name}")
                if listed[name].size != path.stat().st_size:
                    raise NotVerified(f"{remote}/{name} has {listed[name].size} bytes, the local copy "
                                      f"{path.stat().st_size}")
            self.rclone.verify(str(run_dir), remote)
        except RemoteError as e:
            raise NotVerified(f"{remote} does not hold {run_dir.name} whole ({e})") from None

    def verify_recorded(self, files: dict[str, dict[str, Any]], remote: str | None, content: str | None) -> None:
        """``remote`` holds every file of a result made on another machine, each with the size and sha256 recorded
        there before its local copy went (sha256 of the bytes downloaded now), a model file among them, and its
        manifest says it was trained on exactly ``content``.

        Raises:
            NotVerified: why not.
        """
        if remote is None:
            raise NotVerified("the result was never uploaded")
        models = [f for f in files if any(PurePosixPath(f).match(p) for p in self.model_patterns)]
        if not models or "manifest.json" not in files:
            raise NotVerified(f"the record of {remote} holds no model file or no manifest")
        others = sorted(f for f in files if f != "manifest.json")
        try:
            listed = {f.path: f for f in self.rclone.list_or_none(remote) or []}
            for name in sorted(files, key=lambda f: (f not in models, f)):
                if name not in listed or listed[name].size != files[name]["size"]:
                    raise NotVerified(f"{remote} lacks {name} as it was uploaded")
            # The manifest is read once: its bytes are both compared and the record of what it was trained on.
            manifest = self.rclone.read_text(f"{remote}/manifest.json") or ""
            digests = {"manifest.json": hashlib.sha256(manifest.encode()).hexdigest(),
                       **self.rclone.sha256_by_download(remote, others)}
        except RemoteError as e:
            raise NotVerified(f"{remote} cannot be checked ({e})") from None
        if differs := sorted(f for f in files if digests.get(f) != files[f]["sha256"]):
            raise NotVerified(f"{remote}/{differs[0]} is not the file uploaded")
        _check_trained_on((json.loads(manifest).get("dataset") or {}).get("sha256"), content, remote,
                          "the data as downloaded")

    def verify_trained_on(self, run_dir: Path, content: str | None, what: str) -> None:
        """The run was trained on exactly ``content`` (a dataset as downloaded, or as it is now).

        Raises:
            NotVerified: it was not (or nothing says so): ``what`` has no trained copy.
        """
        _check_trained_on(trained_on(run_dir), content, run_dir.name, f"{what} as it is")

    def owner(self, remote: str, run_id: str, recorded: bool, claim: str | None = None) -> str:
        """Who holds the remote folder: "free" (nothing there), "ours" or "other".

        A folder without a manifest is ours only if this job recorded the name before uploading
        to it (its own partial upload); a folder whose claim file holds this job's ``claim`` is ours (an earlier
        attempt of this job, on a node that died); anything else there belongs to someone else.
        """
        files = self.rclone.list_or_none(remote)
        if not files:
            return "free"
        if claim is not None and any(f.path == CLAIM_FILE for f in files) and \
                (self.rclone.read_text(f"{remote}/{CLAIM_FILE}") or "").strip() == claim:
            return "ours"
        if not any(f.path == "manifest.json" for f in files):
            return "ours" if recorded else "other"
        try:
            there = json.loads(self.rclone.read_text(f"{remote}/manifest.json") or "null")
        except json.JSONDecodeError:
            return "other"
        return "ours" if isinstance(there, dict) and run_identity(there) == run_id else "other"

    def result_target(self, output: str, name: str, run_id: str, recorded: str | None,
                      claim: str | None = None) -> str:
        """Where a result may go: the recorded target while it is still ours, else ``output/name``,
        ``output/name-2``, ... the first that is free or already holds this very run (or this job's claim)."""
        if recorded is not None and self.owner(recorded, run_id, recorded=True, claim=claim) != "other":
            return recorded
        for n in range(1, 10_000):
            candidate = f"{output}/{name}" if n == 1 else f"{output}/{name}-{n}"
            if candidate != recorded and self.owner(candidate, run_id, recorded=False, claim=claim) != "other":
                return candidate
        raise RemoteError(f"no free result name for {name} under {output}")

    # -- deletions ----------------------------------------------------------------------------
    def delete_remote_data(self, root: str, files: list[str], recorded: dict[str, dict[str, Any]],
                           verify_copy: Callable[[], None], intent: Callable[[list[str]], list[str]]) -> str | None:
        """Delete the job's remote training files, all of them or none: only when the result is verified, was
        trained on exactly what was downloaded (``content``), and the remote dataset is provably as it was
        downloaded (the same files, each the same size and hashes, or on a remote without hashes the same sha256
        of its bytes downloaded again). A dataset that changed in any way is kept whole: its new content trains
        as a new result.

        ``verify_copy()`` checks now that the result is on the remote, whole, trained on exactly the data as
        downloaded (it raises NotVerified): ``verify_result`` + ``verify_trained_on`` against a local run, or
        ``verify_recorded`` for a result made on another machine. ``intent(files)`` records the files about to be
        deleted before the first goes and returns those recorded by an earlier, interrupted deletion: their absence
        is lorakit's doing, not a change.

        Returns:
            None when the files were deleted; else how the dataset changed (it was kept, and said so).
        """
        verify_copy()
        gone_before = set(intent([]))
        if (change := self._change(root, files, recorded, gone_before)) is not None:
            change += " since it was downloaded"
            log.warning("kept the remote dataset %s/%s: %s; it trains as a new result", root,
                        files[0].split("/", 1)[0], change)
            return change
        present = list(self._current(root, files))
        intent(present)
        faults.reached("before-delete:remote-data")
        extra = self._hard_delete(root)
        if present:
            self.rclone.delete_files(root, present, extra)
        return None

    def _change(self, root: str, files: list[str], recorded: dict[str, dict[str, Any]],
                gone_before: set[str]) -> str | None:
        """How the remote dataset differs from what was downloaded (None: it does not): a file added, removed
        (other than by an interrupted deletion of ours) or changed."""
        now = self._current(root, files, whole_folders=True)
        if added := sorted(set(now) - set(files)):
            return f"{added[0]} was added"
        if missing := sorted(f for f in files if f not in now and f not in gone_before):
            return f"{missing[0]} was removed"
        present = [f for f in files if f in now]
        if differs := [f for f in present if f not in recorded or not same_content(recorded[f], now[f])]:
            return f"{differs[0]} changed"
        by_bytes = [f for f in present if not _common_hash(recorded[f], now[f])]
        if by_bytes:
            if any(not recorded[f].get("sha256") for f in by_bytes):
                return "it cannot be compared byte for byte (no sha256 was recorded at its download)"
            digests = self.rclone.sha256_by_download(root, by_bytes)
            if edited := [f for f in by_bytes if digests.get(f) != recorded[f]["sha256"]]:
                return f"{edited[0]} was edited in place (same size, other bytes)"
        return None

    def _current(self, root: str, files: list[str], whole_folders: bool = False) -> dict[str, RemoteFile]:
        """The listed files as they are on the remote now (one listing per top folder; ``whole_folders``: every
        file in those folders, not only ``files``)."""
        now: dict[str, RemoteFile] = {}
        for top in sorted({f.split("/", 1)[0] for f in files if "/" in f}):
            for entry in self.rclone.list_or_none(f"{root}/{top}") or []:
                now[f"{top}/{entry.path}"] = entry
        for single in (f for f in files if "/" not in f):
            if (entry := self.rclone.stat(f"{root}/{single}")) is not None:
                now[single] = entry
        return now if whole_folders else {f: entry for f, entry in now.items() if f in files}

    def _hard_delete(self, root: str) -> tuple[str, ...]:
        """With remote.skip_trash: the backend's flag that makes lorakit's own deletions permanent (said once
        when the backend has none). The trash is never emptied."""
        if not self.skip_trash:
            return ()
        name = root.split(":", 1)[0]
        if name not in self._delete_flags:
            kind = self.rclone.remote_type(root)
            flag = HARD_DELETE.get(kind or "")
            if flag is None:
                log.info("remote.skip_trash: %s (%s) has no flag for it; deleted files go where it puts them",
                         name, kind or "unknown type")
            self._delete_flags[name] = (flag,) if flag else ()
        return self._delete_flags[name]

    def delete_local_data(self, folder: Path, files: dict[Path, str | None], run_dir: Path, result: str | None,
                          content: str | None) -> int:
        """Delete exactly ``files`` (what the queue downloaded or unpacked, with the sha256 each had then) that are
        still as they were, then the folders of ``folder`` left empty, once the result is verified and was
        trained on the data as downloaded (``content``).

        Returns:
            How many files ``folder`` still holds (kept: the queue did not put them there, or they changed).
        """
        self.verify_result(run_dir, result)
        self.verify_trained_on(run_dir, content, f"the data in {folder}")
        unchanged = [p for p, digest in files.items()
                     if p.is_file() and digest is not None and file_sha256(p) == digest]
        faults.reached("before-delete:local-data")
        for path in unchanged:
            faults.reached("delete:local-data")  # :2 dies with one file deleted
            path.unlink(missing_ok=True)
        remove_empty_folders(folder)
        left = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        if left:
            log.warning("kept %s: it holds %d file(s) the queue did not download, or that changed since", folder,
                        len(left))
        return len(left)

    def delete_local_run(self, run_dir: Path, result: str | None, copies: list[Path] = ()) -> None:
        """Delete the local run folder, and each of ``copies`` (files beside it) that the run holds byte for byte."""
        self.verify_result(run_dir, result)
        faults.reached("before-delete:local-run")
        for copy in copies:
            if copy.is_file() and (run_dir / copy.name).is_file() and \
                    (run_dir / copy.name).read_bytes() == copy.read_bytes():
                copy.unlink()
        shutil.rmtree(run_dir)
        remove_empty_folders(run_dir.parent)

    def delete_download(self, archive: Path, remote_root: str) -> bool:
        """Delete a downloaded (and unpacked) archive if its remote original is still there, identical.

        Returns:
            False when it was kept (the original is gone or differs: the archive may be the last copy).
        """
        if not archive.is_file():
            return True
        try:  # the local archive compared with the remote file of the same name (archives are top-level)
            self.rclone.verify(str(archive.parent), remote_root, files=[archive.name])
        except RemoteError as e:
            log.warning("kept %s: its remote original %s/%s could not be verified (%s)", archive, remote_root,
                        archive.name, e)
            return False
        faults.reached("before-delete:download")
        archive.unlink()
        return True

    def discard_unfinished_run(self, run_dir: Path) -> bool:
        """Delete a run folder that never completed and holds nothing worth keeping.

        Returns:
            False when it was kept: it completed, still trains (or this machine cannot tell that it stopped), or
            holds a model file, a checkpoint, a resume state or sample images (the rule of ``lorakit runs clean``).
        """
        try:
            manifest = read_manifest(run_dir)
            status = manifest.get("status")
        except Exception:  # an unreadable manifest: not ours to judge
            manifest, status = {}, None
        if status == "running" and process_alive(manifest.get("process") or {}) is not False:
            # a trainer a killed queue left behind finishes its step and saves before it exits
            log.warning("kept %s: its training process still runs, or runs where this machine cannot see", run_dir)
            return False
        if status in (None, "completed") or (held := worth_keeping(run_dir)):
            log.warning("kept %s: it holds %s (left for you to look at)", run_dir,
                        "a completed run" if status == "completed" else held or "an unreadable manifest")
            return False
        shutil.rmtree(run_dir)
        return True
