"""The queue's one rule for destroying anything, enforced here and nowhere else.

A copy is deleted only if, *at that moment*, another verified copy of what matters exists:

- training data (the remote originals and the local copies the queue made) and the local run
  folder: the job's result on the remote output, checked now against the local run (hashes where
  the remote has them, the bytes where it does not) and holding at least one model file;
- a downloaded archive: its remote original, checked now against it;
- a run folder that never finished: nothing in it is worth a copy (no model file, no checkpoint,
  no resume state), or it is kept.

A stage recorded earlier ("uploaded") is never enough on its own: every method re-checks right
before it deletes, and deletes exactly the files the queue itself placed (never a purge), so a
file someone added or changed meanwhile survives. Overwriting is destruction too: a result is
uploaded only to a folder no other run owns (``result_target``).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import RemoteError
from lorakit.queue.state import armed, kill_point
from lorakit.remote.rclone import Rclone, RemoteFile
from lorakit.runs.catalog import MODEL_PATTERNS, has_checkpoint, model_files, read_manifest

log = logging.getLogger(__name__)

LORAKIT_MODEL = ("adapter_model.safetensors",)  # what a trained model is in lorakit's own runs


class NotVerified(Exception):
    """The other copy could not be verified just now; nothing was deleted."""


def run_identity(manifest: dict[str, Any]) -> str:
    """What tells one run from every other: its run id (older manifests: name and creation time)."""
    if manifest.get("run_id"):
        return str(manifest["run_id"])
    created = (manifest.get("status_history") or [{}])[0].get("at", "")
    return f"{manifest.get('name')}@{created}"


def fingerprint(f: RemoteFile) -> dict[str, Any]:
    return {"size": f.size, "hashes": dict(f.hashes)}


def same_content(recorded: dict[str, Any], now: RemoteFile) -> bool:
    """The remote file is the one recorded: same size, and the same value for every hash both have."""
    if recorded.get("size") != now.size:
        return False
    hashes = recorded.get("hashes") or {}
    return all(hashes[k] == v for k, v in now.hashes.items() if k in hashes)


def _remove_empty_folders(top: Path) -> None:
    """Remove the folders under ``top`` (and ``top``) that are empty, deepest first."""
    if not top.is_dir():
        return
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(top.iterdir()):
        top.rmdir()


@dataclass(frozen=True)
class Keeper:
    """Every deletion the queue makes, each after its own check."""

    rclone: Rclone
    model_patterns: tuple[str, ...]

    # -- checks -------------------------------------------------------------------------------
    def verify_result(self, run_dir: Path, remote: str | None) -> None:
        """``remote`` holds every file of ``run_dir`` with the same content, a model file among them.

        Raises:
            NotVerified: why not.
        """
        if remote is None:
            raise NotVerified("the result was never uploaded")
        if not run_dir.is_dir():
            raise NotVerified(f"the local run {run_dir} is gone, so {remote} cannot be checked against it")
        if not model_files(run_dir, self.model_patterns):
            raise NotVerified(f"{run_dir} holds no model file ({', '.join(self.model_patterns)})")
        try:
            self.rclone.verify(str(run_dir), remote)
        except RemoteError as e:
            raise NotVerified(f"{remote} does not hold {run_dir.name} whole ({e})") from None

    def owner(self, remote: str, run_id: str, recorded: bool) -> str:
        """Who holds the remote folder: "free" (nothing there), "ours" or "other".

        A folder without a manifest is ours only if this job recorded the name before uploading
        to it (its own partial upload); anything else there belongs to someone else.
        """
        files = self.rclone.list_or_none(remote)
        if not files:
            return "free"
        if not any(f.path == "manifest.json" for f in files):
            return "ours" if recorded else "other"
        try:
            there = json.loads(self.rclone.read_text(f"{remote}/manifest.json") or "null")
        except json.JSONDecodeError:
            return "other"
        return "ours" if isinstance(there, dict) and run_identity(there) == run_id else "other"

    def result_target(self, output: str, name: str, run_id: str, recorded: str | None) -> str:
        """Where a result may go: the recorded target while it is still ours, else ``output/name``,
        ``output/name-2``, ... the first that is free or already holds this very run."""
        if recorded is not None and self.owner(recorded, run_id, recorded=True) != "other":
            return recorded
        for n in range(1, 10_000):
            candidate = f"{output}/{name}" if n == 1 else f"{output}/{name}-{n}"
            if candidate != recorded and self.owner(candidate, run_id, recorded=False) != "other":
                return candidate
        raise RemoteError(f"no free result name for {name} under {output}")

    # -- deletions ----------------------------------------------------------------------------
    def delete_remote_data(self, root: str, files: list[str], recorded: dict[str, dict[str, Any]],
                           run_dir: Path, result: str | None) -> list[str]:
        """Delete the job's remote training files that are still as they were downloaded.

        Returns:
            The files kept because they changed since (or were never fingerprinted).
        """
        self.verify_result(run_dir, result)
        now = self._current(root, files)
        unchanged = [f for f in files if f in now and f in recorded and same_content(recorded[f], now[f])]
        kept = [f for f in files if f in now and f not in unchanged]
        if kept:
            log.warning("kept %d remote file(s) that changed since they were downloaded: %s", len(kept),
                        ", ".join(f"{root}/{f}" for f in kept[:5]))
        kill_point("before-delete:remote-data")
        if unchanged and armed("during-delete:remote-data") and len(unchanged) > 1:
            self.rclone.delete_file(f"{root}/{unchanged[0]}")
            kill_point("during-delete:remote-data")
        if unchanged:
            self.rclone.delete_files(root, unchanged)
        return kept

    def _current(self, root: str, files: list[str]) -> dict[str, RemoteFile]:
        """The listed files as they are on the remote now (one listing per top folder)."""
        now: dict[str, RemoteFile] = {}
        for top in sorted({f.split("/", 1)[0] for f in files if "/" in f}):
            for entry in self.rclone.list_or_none(f"{root}/{top}") or []:
                now[f"{top}/{entry.path}"] = entry
        for single in (f for f in files if "/" not in f):
            if (entry := self.rclone.stat(f"{root}/{single}")) is not None:
                now[single] = entry
        return now

    def delete_local_data(self, folder: Path, files: list[Path], run_dir: Path, result: str | None) -> int:
        """Delete exactly ``files`` (what the queue downloaded or unpacked), then the folders of ``folder``
        left empty.

        Returns:
            How many other files ``folder`` still holds (kept: the queue did not put them there).
        """
        self.verify_result(run_dir, result)
        kill_point("before-delete:local-data")
        if armed("during-delete:local-data") and len(files) > 1:
            files[0].unlink(missing_ok=True)
            kill_point("during-delete:local-data")
        for path in files:
            path.unlink(missing_ok=True)
        _remove_empty_folders(folder)
        left = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        if left:
            log.warning("kept %s: it holds %d file(s) the queue did not download", folder, len(left))
        return len(left)

    def delete_local_run(self, run_dir: Path, result: str | None, copies: list[Path] = ()) -> None:
        """Delete the local run folder, and each of ``copies`` (files beside it) that the run holds byte for byte."""
        self.verify_result(run_dir, result)
        kill_point("before-delete:local-run")
        for copy in copies:
            if copy.is_file() and (run_dir / copy.name).is_file() and \
                    (run_dir / copy.name).read_bytes() == copy.read_bytes():
                copy.unlink()
        shutil.rmtree(run_dir)
        _remove_empty_folders(run_dir.parent)

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
        kill_point("before-delete:download")
        archive.unlink()
        return True

    def discard_unfinished_run(self, run_dir: Path) -> bool:
        """Delete a run folder that never completed and holds nothing worth keeping.

        Returns:
            False when it was kept: it completed, or holds a model file, a checkpoint or a resume state.
        """
        try:
            status = read_manifest(run_dir).get("status")
        except Exception:  # an unreadable manifest: not ours to judge
            status = None
        if status in (None, "completed") or model_files(run_dir, MODEL_PATTERNS) or has_checkpoint(run_dir):
            log.warning("kept %s: it holds results (left for you to look at)", run_dir)
            return False
        shutil.rmtree(run_dir)
        return True
