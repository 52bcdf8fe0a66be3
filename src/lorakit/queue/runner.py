"""run_queue: download each dataset, unpack it, train it, upload the result, clean up, and survive kill -9.

Each job goes through the stages of ``lorakit.queue.state`` one at a time; the state file is
written after each stage completes and before the next begins, and each stage is safe to repeat,
so a re-run picks up where the last one stopped. Every deletion and every choice of where a result
goes is made by ``lorakit.queue.keep``, which verifies the other copy at that moment.
"""

from __future__ import annotations

import fcntl
import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from lorakit import faults
from lorakit.disk import is_disk_full
from lorakit.errors import DataError, DiskFullError, LorakitError, QueueError, RemoteError
from lorakit.external.trainer import TrainerKind
from lorakit.launch.executor import Executor
from lorakit.proc import Child
from lorakit.queue.archives import unpack
from lorakit.queue.jobs import discover, output_name, plan_lines
from lorakit.queue.keep import CLAIM_FILE, Keeper, NotVerified, run_identity
from lorakit.queue.notices import recording_notices
from lorakit.queue.state import FAILED, Job, QueueState, Source
from lorakit.queue.training import JOB_FILES, JobFailed, QueueStopped, StillTraining, TrainingStage
from lorakit.queue.workspace import Workspace, check_workspace_files
from lorakit.remote.paths import parent
from lorakit.remote.rclone import Rclone
from lorakit.runs.catalog import model_files, read_manifest
from lorakit.runs.fingerprint import content_sha256, file_sha256
from lorakit.train.stop import StopRequest

log = logging.getLogger(__name__)

DOWNLOADS = ".downloads"
LOCK_FILE = ".lorakit-queue.lock"


@dataclass(frozen=True)
class QueueOptions:
    test: bool = False  # train and upload, delete nothing
    overlays: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass
class QueueResult:
    jobs: list[Job]
    stopped: str | None = None  # why the queue stopped before the end
    plan: list[str] = field(default_factory=list)  # --dry-run

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.state == FAILED]


@contextmanager
def _locked(work: Path) -> Iterator[None]:
    with (work / LOCK_FILE).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QueueError(f"another queue is running in {work}") from None
        yield


class StopOnSignal(StopRequest):
    """SIGINT/SIGTERM: finish the current stage, pass the signal on to a running trainer, then stop."""

    def __init__(self, child: Child) -> None:
        super().__init__()
        self.child = child

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.reason = signal.Signals(signum).name
        log.warning("%s: stopping the queue at the next safe point", self.reason)
        self.child.send(signum)  # the trainer saves its resume state and exits


class QueueRun:
    def __init__(self, ws: Workspace, options: QueueOptions, state: QueueState, rclone: Rclone) -> None:
        self.ws, self.options, self.state, self.rclone = ws, options, state, rclone
        self.work = Path(ws.work_dir)
        self.outputs = Path(ws.output_dir)
        self.child = Child()
        self.keeper = Keeper(rclone, ws.model_patterns, ws.remote.skip_trash)
        self.training = TrainingStage(ws, options.overlays, state, self.keeper, self.child, self.work, self.outputs)

    # -- stages ------------------------------------------------------------------------------
    def archive_path(self, job: Job) -> Path:
        """Where an archive job's archive is downloaded: its own folder, under the archive's own name."""
        return self.work / DOWNLOADS / job.key / job.remote_files[0]

    def download(self, job: Job) -> None:
        """Fetch the dataset, check it against the remote, and record the sha256 of every file as downloaded
        (what a remote file must still be, byte for byte, before it is ever deleted)."""
        remote = self.ws.remote.training
        if job.source == Source.LOCAL or remote is None:
            return
        there = (self.rclone.list_or_none(f"{remote}/{job.name}") if job.source == Source.FOLDER else
                 self.rclone.stat(f"{remote}/{job.remote_files[0]}"))
        if not there:  # removed since it was listed: this dataset fails alone, the queue goes on
            raise JobFailed(f"{remote}/{job.name} is gone from the remote; nothing of it was downloaded")
        if job.source == Source.FOLDER:
            self.rclone.copy(f"{remote}/{job.name}", str(self.work / job.folder))
            self.rclone.verify(f"{remote}/{job.name}", str(self.work / job.folder))
            local = {f: self.work / job.folder / f.split("/", 1)[1] for f in job.remote_files}
        else:
            archive = self.archive_path(job)
            self.rclone.copy_file(f"{remote}/{job.remote_files[0]}", str(archive))
            self.rclone.verify(remote, str(archive.parent), files=[archive.name])
            local = {job.remote_files[0]: archive}
        for name, path in local.items():
            job.remote_fingerprints.setdefault(name, {})["sha256"] = file_sha256(path)

    def unpack(self, job: Job) -> dict[str, object]:
        """Unpack an archive job; the files the queue put into the dataset folder (relative to it), each with its
        sha256, and the folder's content (``lorakit.runs.fingerprint``): the state to record as unpacked."""
        target = self.work / job.folder
        if job.source == Source.ARCHIVE:
            archive = self.archive_path(job)
            if not target.is_dir():  # else unpacked before a crash (staging is renamed into place whole)
                if not archive.is_file():  # lost before it was unpacked: fetch it again (the remote copy is kept)
                    self.download(job)
                try:
                    unpack(archive, target)
                except DataError as e:
                    raise JobFailed(str(e)) from None
            if self.ws.remote.training:
                self.keeper.delete_download(archive, self.ws.remote.training)
        if not target.is_dir():
            raise JobFailed(f"dataset folder {target} is missing")
        # A folder job's local files are exactly its remote files; an archive's, what it unpacked to.
        placed = ([f.split("/", 1)[1] for f in job.remote_files] if job.source == Source.FOLDER else
                  sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()))
        return {"local_files": placed, "local_sha256": {f: file_sha256(target / f) for f in placed
                                                        if (target / f).is_file()},
                "content": content_sha256(target)}

    def upload(self, job: Job, every_file: bool = False) -> str | None:
        """Upload the run to a remote folder no other run owns, recorded before the first byte goes; verify it.

        ``every_file``: send every file again (a check found the remote copy differs).
        """
        output = self.ws.remote.output
        if output is None:
            return None
        assert job.run_dir is not None and job.output_name is not None
        run_dir = Path(job.run_dir)
        target = self.keeper.result_target(output, job.output_name, run_identity(read_manifest(run_dir)),
                                           job.upload_to, job.claim)
        if target != job.upload_to:
            if target != f"{output}/{job.output_name}":
                job.note = f"{output}/{job.output_name} holds another run: uploaded as {target.rsplit('/', 1)[-1]}"
                log.warning("%s: %s", job.key, job.note)
            job.upload_to = target
            self.state.save()
        faults.reached("before-upload")
        if job.claim is not None:  # first, so that a retry on another node knows a half-uploaded folder as its own
            (run_dir / CLAIM_FILE).write_text(job.claim + "\n", encoding="utf-8")
            self.rclone.copy_file(str(run_dir / CLAIM_FILE), f"{target}/{CLAIM_FILE}")
        self.rclone.copy(str(run_dir), target, every_file)
        try:
            self.keeper.verify_result(run_dir, target)
        except NotVerified as e:
            raise RemoteError(f"the upload of {run_dir.name} did not verify: {e}") from None
        return target

    def clean(self, job: Job) -> None:
        """Delete what the clean-up settings ask for, each deletion after verifying the result on the remote.

        A result that is not there (or not whole) any more is uploaded again first, from the local run.

        Raises:
            JobFailed: the result can be neither verified nor uploaded again; everything is kept.
        """
        cleanup, remote = self.ws.cleanup, self.ws.remote.training
        downloaded = Source(job.source).downloaded  # never a folder put into work_dir by hand
        remote_data = (cleanup.remote_training and downloaded and remote is not None and bool(job.remote_files)
                       and not job.remote_deleted and not job.remote_changed)
        if job.result_files is not None:  # trained and uploaded on another node, which deleted its own copies
            if remote_data:
                assert remote is not None
                self._delete_remote_data(job, remote, lambda: self.keeper.verify_recorded(
                    job.result_files or {}, job.remote_output, job.content))
            return
        run_dir = Path(job.run_dir) if job.run_dir else self.outputs / job.key
        data = self.work / job.folder
        archive = self.archive_path(job) if job.source == Source.ARCHIVE else None
        local_copies = data.exists() or (archive is not None and archive.exists())
        todo = {"remote data": remote_data,
                "local data": cleanup.local_data and downloaded and local_copies,
                "local run": cleanup.local_output and run_dir.is_dir()}
        if not any(todo.values()):
            return
        self._ensure_result(job, run_dir)
        if todo["remote data"]:
            assert remote is not None

            def verify_copy() -> None:
                self.keeper.verify_result(run_dir, job.remote_output)
                self.keeper.verify_trained_on(run_dir, job.content, "the data as downloaded")

            self._delete_remote_data(job, remote, verify_copy)
        if todo["local data"]:
            files: dict[Path, str | None] = {data / f: job.local_sha256.get(f) for f in job.local_files}
            if archive is not None:
                files[archive] = job.remote_fingerprints.get(job.remote_files[0], {}).get("sha256")
            self._keeping(job, f"its local data {data}", lambda: self.keeper.delete_local_data(
                data, files, run_dir, job.remote_output, job.content))
        if todo["local run"]:
            self.keeper.delete_local_run(run_dir, job.remote_output, [run_dir.parent / f for f in JOB_FILES])

    def _delete_remote_data(self, job: Job, remote: str, verify_copy: Callable[[], None]) -> None:
        def intent(files: list[str]) -> list[str]:  # written before the first file goes
            if files:
                job.deleting = files
                self.state.save()
            return job.deleting

        try:
            change = self.keeper.delete_remote_data(remote, job.remote_files, job.remote_fingerprints, verify_copy,
                                                    intent)
        except NotVerified as e:  # no verified result of exactly this data: it is kept, and trained again
            change = str(e)
            log.warning("%s: kept the remote dataset: %s", job.key, change)
        if change is not None:  # kept whole: the next queue run trains what it holds now as a new result
            job.remote_changed = change
            job.note = f"kept the remote dataset: {change}"
        else:
            job.remote_deleted = True
        self.state.save()

    def _keeping(self, job: Job, what: str, delete: Callable[[], object]) -> None:
        """Run one deletion; when its check fails, keep ``what`` and say so (the job still completes)."""
        try:
            delete()
        except NotVerified as e:
            job.note = f"kept {what}: {e}"
            log.warning("%s: %s", job.key, job.note)
            self.state.save()

    def _ensure_result(self, job: Job, run_dir: Path) -> None:
        try:
            self.keeper.verify_result(run_dir, job.remote_output)
        except NotVerified as e:
            if not model_files(run_dir, self.keeper.model_patterns):
                raise JobFailed(f"cannot clean up: {e}, and the local run holds no model file to upload again; "
                                "nothing was deleted") from None
            log.warning("%s: %s; uploading it again before anything is deleted", job.key, e)
            job.remote_output = self.upload(job, every_file=True)
            self.state.save()

    # -- one job ---------------------------------------------------------------------------
    def process(self, job: Job, stop: StopOnSignal) -> None:
        """Take ``job`` through its remaining stages; a failure of this dataset alone marks it failed.

        Raises:
            QueueStopped, RemoteError, DiskFullError: the queue as a whole must stop (the job keeps its stage).
        """
        began, before = time.monotonic(), job.seconds  # time of earlier, interrupted runs counts too

        def elapsed() -> float:
            return round(before + time.monotonic() - began, 1)

        try:
            self._advance(job, stop, elapsed)
        except (QueueStopped, RemoteError, DiskFullError):
            raise
        except (JobFailed, LorakitError) as e:  # bad data, a failed training: this dataset only
            log.error("%s: failed: %s", job.key, e)
            self.state.move(job, FAILED, error=str(e), seconds=elapsed())
        except Exception as e:  # a bug of ours must not stop an unattended queue; nothing more is deleted
            if is_disk_full(e, self.work):  # every later dataset needs the disk too
                raise DiskFullError(f"{job.key}: no space left on the disk of {self.work.absolute()} "
                                    f"({type(e).__name__}: {e})") from e
            log.debug("%s: unexpected error", job.key, exc_info=True)
            log.error("%s: failed: %s: %s", job.key, type(e).__name__, e)
            self.state.move(job, FAILED, error=f"{type(e).__name__}: {e}", seconds=elapsed())

    def _advance(self, job: Job, stop: StopOnSignal, elapsed: Callable[[], float]) -> None:
        """The stages not yet reached, in order, each recorded before the next begins."""
        move = self.state.move

        def checkpoint() -> None:
            if stop.reason:
                raise QueueStopped(f"stopped by {stop.reason}; run the queue again to continue")

        if not job.reached("downloaded"):
            self.download(job)
            move(job, "downloaded")
            checkpoint()
        if not job.reached("unpacked"):
            move(job, "unpacked", **self.unpack(job))
            checkpoint()
        if not job.reached("trained"):
            if job.state != "training":
                move(job, "training", output_name=output_name(self.ws, job, list(self.options.overlays)))
            try:
                run_dir = self.training.run(job)
            except StillTraining:
                return  # its Slurm job is queued or running: the queue looks again later
            move(job, "trained", run_dir=str(run_dir), seconds=elapsed())
            checkpoint()
        if not job.reached("uploaded"):
            move(job, "uploaded", remote_output=self.upload(job), seconds=elapsed())
            checkpoint()
        if not job.reached("cleaned") and not self.options.test:
            self.clean(job)
            move(job, "cleaned", seconds=elapsed())


def run_queue(ws: Workspace, options: QueueOptions = QueueOptions()) -> QueueResult:
    """Work through every dataset of the workspace; see the module docstring.

    Raises:
        RemoteError: a remote cannot be reached or read before anything started.
        QueueError: another queue holds the work folder, or --only names an unknown dataset.
    """
    check_workspace_files(ws, options.overlays)
    # the command and its config work at all: checked before anything is touched
    if ws.trainer.kind == TrainerKind.COMMAND:
        from lorakit.external.run import TrainerJob, plan_run

        overlays = tuple(Path(o) for o in (*ws.overlays, *options.overlays))
        plan_run(TrainerJob(ws.trainer, Path(ws.output_dir), None, overlays))
    work = Path(ws.work_dir)
    if ws.remote.output is None:
        log.warning("queue: no remote.output: results stay in %s and nothing is deleted (clean-up is off)",
                    ws.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    options = replace(options, overlays=(*ws.overlays, *options.overlays))  # the workspace's first, then --add
    rclone = Rclone(Path(ws.remote.config) if ws.remote.config else None, tuple(ws.remote.flags))
    with _locked(work), recording_notices(work):
        remote_files = []
        if ws.remote.training:
            rclone.probe(ws.remote.training)
            remote_files = rclone.list_files(ws.remote.training)
        if ws.remote.output:
            rclone.probe(parent(ws.remote.output))
        state = QueueState.load(work)
        jobs = discover(ws, state, remote_files)
        unknown = sorted(set(options.only) - {j.key for j in jobs} - {j.name for j in jobs})
        if unknown:
            raise QueueError(f"--only {', '.join(unknown)}: no such dataset (have: "
                             f"{', '.join(j.key for j in jobs) or 'none'})")
        selected = [j for j in jobs if not options.only or j.key in options.only or j.name in options.only]
        if options.dry_run:
            return QueueResult(selected, plan=plan_lines(ws, options.overlays, options.test, selected))
        run = QueueRun(ws, options, state, rclone)
        stopped = None
        with StopOnSignal(run.child) as stop:
            if ws.queue.executor == Executor.RAY:
                from lorakit.queue.ray_driver import run_on_ray

                return QueueResult(selected, run_on_ray(run, selected, stop))
            stopped = _work_through(run, selected, stop)
            # With Slurm the first pass submits; later passes finish each job as its Slurm job ends.
            while stopped is None and any(j.state == "training" for j in selected):
                stop.wait(ws.queue.poll_seconds)
                stopped = _work_through(run, [j for j in selected if j.state == "training"], stop)
        return QueueResult(selected, stopped)


def _work_through(run: QueueRun, jobs: list[Job], stop: StopOnSignal) -> str | None:
    """Take each job as far as it can go now; why the queue must stop, if it must."""
    for job in jobs:
        if job.done or job.source == Source.CLASH or (run.options.test and job.state == "uploaded"):
            continue
        try:
            run.process(job, stop)
        except QueueStopped as e:
            return str(e)
        except (RemoteError, DiskFullError) as e:
            return f"{e}; the queue stopped and deleted nothing; run it again once that is fixed"
        if stop.reason:
            return f"stopped by {stop.reason}; run the queue again to continue"
    return None
