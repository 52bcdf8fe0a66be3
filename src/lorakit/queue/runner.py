"""run_queue: download each dataset, unpack it, train it, upload the result, clean up, and survive kill -9.

Each job goes through the stages of ``lorakit.queue.state`` one at a time; the state file is
written after each stage completes and before the next begins, and each stage is safe to repeat,
so a re-run picks up where the last one stopped. Nothing is deleted before the copy it depends
on has been verified: remote training files and local data only after the result is uploaded and
checked, the archive only after it is unpacked.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from lorakit.errors import ConfigError, DataError, LorakitError, QueueError, RemoteError
from lorakit.queue.archives import unpack
from lorakit.queue.jobs import discover, output_name, write_job_config
from lorakit.queue.process import Child, run_logged
from lorakit.queue.state import FAILED, Job, QueueState
from lorakit.queue.workspace import Workspace
from lorakit.remote.rclone import Rclone
from lorakit.runs.catalog import RESUME_FILE, read_manifest, versions_of
from lorakit.train.stop import StopRequest

log = logging.getLogger(__name__)

DOWNLOADS = ".downloads"
LOCK_FILE = ".lorakit-queue.lock"


class JobFailed(Exception):
    """This job cannot go on (bad data, training failed); the queue moves to the next one."""


class StillTraining(Exception):
    """The job's Slurm job has not finished yet; look again later."""


class QueueStopped(Exception):
    """The queue must stop now (a signal, a full remote); everything is left resumable."""


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
        if self.child.process is not None and self.child.process.poll() is None:
            self.child.process.send_signal(signum)  # the trainer saves its resume state and exits


def _completed(runs: list[Path]) -> list[Path]:
    return [d for d in runs if read_manifest(d).get("status") == "completed"]


def _remote_root(path: str) -> str:
    return path.split(":", 1)[0] + ":"


def _parent(path: str) -> str:
    name, _, inner = path.partition(":")
    return f"{name}:{inner.rsplit('/', 1)[0] if '/' in inner.strip('/') else ''}"


class QueueRun:
    def __init__(self, ws: Workspace, options: QueueOptions, state: QueueState, rclone: Rclone) -> None:
        self.ws, self.options, self.state, self.rclone = ws, options, state, rclone
        self.work = Path(ws.work_dir)
        self.outputs = Path(ws.output_dir)
        self.child = Child()

    # -- stages ------------------------------------------------------------------------------
    def download(self, job: Job) -> None:
        remote = self.ws.remote.training
        if job.source == "local" or remote is None:
            return
        if job.source == "folder":
            self.rclone.copy(f"{remote}/{job.name}", str(self.work / job.name))
            self.rclone.verify(f"{remote}/{job.name}", str(self.work / job.name))
        else:
            (archive,) = job.remote_files
            downloads = self.work / DOWNLOADS
            self.rclone.copy_file(f"{remote}/{archive}", str(downloads / archive))
            self.rclone.verify(remote, str(downloads), files=[archive])

    def unpack(self, job: Job) -> None:
        target = self.work / job.name
        if job.source != "archive":
            if not target.is_dir():
                raise JobFailed(f"dataset folder {target} is missing")
            return
        archive = self.work / DOWNLOADS / job.remote_files[0]
        if target.is_dir():  # unpacked before a crash; the archive may still be there
            archive.unlink(missing_ok=True)
            return
        if not archive.is_file():  # lost before it was unpacked: fetch it again (the remote copy is kept)
            self.download(job)
        try:
            unpack(archive, target)
        except DataError as e:
            raise JobFailed(str(e)) from None

    def train(self, job: Job) -> Path:
        job_dir = self.outputs / job.name
        assert job.output_name is not None
        existing = versions_of(job.output_name, job_dir)
        if self.ws.queue.executor == "slurm":
            return self.train_on_slurm(job, job_dir, existing)
        completed = _completed(existing)
        if completed:  # trained before a crash, not yet recorded
            return completed[-1]
        resumable = [d for d in existing if (d / RESUME_FILE).is_file() and self.ws.trainer.kind == "lorakit"]
        for stale in existing:
            if stale not in resumable[-1:]:
                shutil.rmtree(stale)  # never uploaded; a fresh start is clean
        if self.ws.trainer.kind == "command":
            from lorakit.queue.external import run_external

            run_dir, reason = run_external(self.ws, self.work / job.name, job_dir, job.output_name,
                                           self.options.overlays, self.child)
            if reason is not None:
                raise JobFailed(reason)
            return run_dir
        if resumable:
            cmd = ["train", "--resume", str(resumable[-1])]
        else:
            try:
                config = write_job_config(self.ws, self.work / job.name, job_dir / "job-config.yaml")
            except (DataError, ConfigError) as e:
                raise JobFailed(str(e)) from None
            cmd = ["train", str(config), *[a for o in self.options.overlays for a in ("--add", o)],
                   "--name", f"{job.name}-{self.ws.suffix}", "--set", f"output.dir={job_dir}",
                   "--set", "train.resumable=true"]
        done = run_logged([sys.executable, "-m", "lorakit.cli.main", *cmd], job_dir / "queue-train.log",
                          child=self.child)
        if done.returncode == 130:
            raise QueueStopped(f"{job.name}: training stopped; run the queue again to resume it")
        if done.returncode != 0:
            raise JobFailed(done.error_line())
        finished = _completed(versions_of(job.output_name, job_dir))
        if not finished:
            raise JobFailed(f"lorakit train finished but left no completed run in {job_dir}")
        return finished[-1]

    def train_on_slurm(self, job: Job, job_dir: Path, existing: list[Path]) -> Path:
        """The job's completed run, once its Slurm job has ended; else submit it (or find it
        submitted) and raise StillTraining.

        The run folder is recorded in the job as soon as it is submitted; a queue killed between
        sbatch and that record finds the live job by its manifest and adopts it, never submitting twice.

        Raises:
            StillTraining: the Slurm job is queued or running.
            JobFailed: the run this queue submitted failed or was cancelled (the next queue run submits anew).
        """
        from lorakit.config.load import load_config
        from lorakit.launch.jobs import reconcile, submit_run
        from lorakit.runs.manifest import UNFINISHED

        for run in existing:
            recorded = read_manifest(run)
            if "slurm" not in recorded:  # trained here before the executor changed
                if recorded.get("status") == "completed":
                    return run
                continue
            manifest, state = reconcile(run)
            # A completed run's job may still be finishing its last writes: upload only once it has left.
            if manifest.status in (*UNFINISHED, "completed") and state is not None and state.active:
                if job.run_dir != str(run):
                    job.run_dir = str(run)
                    self.state.save()
                raise StillTraining
            if manifest.status == "completed":
                return run
            if job.run_dir == str(run):
                job.run_dir = None  # a re-run of the queue starts this dataset afresh
                reason = manifest.data["status_history"][-1].get("reason") or manifest.status
                raise JobFailed(f"Slurm job {manifest.data['slurm']['job_id']}: {manifest.status}: {reason}")
        for stale in existing:
            shutil.rmtree(stale)  # failed, cancelled or never submitted; nothing of it was uploaded
        try:
            config = write_job_config(self.ws, self.work / job.name, job_dir / "job-config.yaml")
            loaded = load_config(str(config), self.options.overlays,
                                 (f"output.dir={job_dir}", "train.resumable=true"), f"{job.name}-{self.ws.suffix}")
        except (DataError, ConfigError) as e:
            raise JobFailed(str(e)) from None
        submission = submit_run(loaded, ["lorakit", "queue", "(slurm executor)", job.name])
        job.run_dir = str(submission.run_dir)
        self.state.save()
        log.info("%s: submitted as Slurm job %s (%s)", job.name, submission.job_id, submission.run_dir.name)
        raise StillTraining

    def upload(self, job: Job) -> str | None:
        if self.ws.remote.output is None:
            return None
        assert job.run_dir is not None
        target = f"{self.ws.remote.output}/{job.output_name}"
        self.rclone.copy(job.run_dir, target)
        self.rclone.verify(job.run_dir, target)
        if self.ws.remote.empty_trash_after_upload and not self.rclone.empty_trash(_remote_root(target)):
            log.info("%s: the remote has no trash to empty", job.name)
        return target

    def clean(self, job: Job) -> None:
        cleanup = self.ws.cleanup
        if cleanup.remote_training and job.remote_files and self.ws.remote.training:
            self.rclone.delete_files(self.ws.remote.training, job.remote_files)
        if cleanup.local_data:
            shutil.rmtree(self.work / job.name, ignore_errors=True)
        if cleanup.local_output and job.remote_output:  # only what now has a verified copy elsewhere
            shutil.rmtree(self.outputs / job.name, ignore_errors=True)

    # -- one job ---------------------------------------------------------------------------
    def process(self, job: Job, stop: StopOnSignal) -> None:
        """Take ``job`` through its remaining stages; a failure of this dataset alone marks it failed.

        Raises:
            QueueStopped, RemoteError: the queue as a whole must stop (the job keeps its stage).
        """
        began, before = time.monotonic(), job.seconds  # time of earlier, interrupted runs counts too
        move = self.state.move

        def checkpoint() -> None:
            if stop.reason:
                raise QueueStopped(f"stopped by {stop.reason}; run the queue again to continue")

        def elapsed() -> float:
            return round(before + time.monotonic() - began, 1)

        try:
            if not job.reached("downloaded"):
                self.download(job)
                move(job, "downloaded")
                checkpoint()
            if not job.reached("unpacked"):
                self.unpack(job)
                move(job, "unpacked")
                checkpoint()
            if not job.reached("trained"):
                if job.state != "training":
                    move(job, "training", output_name=output_name(self.ws, job.name, list(self.options.overlays)))
                try:
                    run_dir = self.train(job)
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
        except (QueueStopped, RemoteError):
            raise
        except (JobFailed, LorakitError) as e:  # bad data, a failed training: this dataset only
            log.error("%s: failed: %s", job.name, e)
            move(job, FAILED, error=str(e), seconds=elapsed())


def run_queue(ws: Workspace, options: QueueOptions = QueueOptions()) -> QueueResult:
    """Work through every dataset of the workspace; see the module docstring.

    Raises:
        RemoteError: a remote cannot be reached or read before anything started.
        QueueError: another queue holds the work folder, or --only names an unknown dataset.
    """
    work = Path(ws.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    options = replace(options, overlays=(*ws.overlays, *options.overlays))  # the workspace's first, then --add
    rclone = Rclone(Path(ws.remote.config) if ws.remote.config else None, tuple(ws.remote.flags))
    with _locked(work):
        remote_files = []
        if ws.remote.training:
            rclone.probe(ws.remote.training)
            remote_files = rclone.list_files(ws.remote.training)
        if ws.remote.output:
            rclone.probe(_parent(ws.remote.output))
        state = QueueState.load(work)
        jobs = discover(ws, state, remote_files)
        unknown = sorted(set(options.only) - {j.name for j in jobs})
        if unknown:
            raise QueueError(f"--only {', '.join(unknown)}: no such dataset (have: "
                             f"{', '.join(j.name for j in jobs) or 'none'})")
        selected = [j for j in jobs if not options.only or j.name in options.only]
        if options.dry_run:
            return QueueResult(selected, plan=_plan(ws, options, selected))
        run = QueueRun(ws, options, state, rclone)
        stopped = None
        with StopOnSignal(run.child) as stop:
            stopped = _work_through(run, selected, stop)
            # With Slurm the first pass submits; later passes finish each job as its Slurm job ends.
            while stopped is None and any(j.state == "training" for j in selected):
                stop.wait(ws.queue.poll_seconds)
                stopped = _work_through(run, [j for j in selected if j.state == "training"], stop)
        return QueueResult(selected, stopped)


def _work_through(run: QueueRun, jobs: list[Job], stop: StopOnSignal) -> str | None:
    """Take each job as far as it can go now; why the queue must stop, if it must."""
    for job in jobs:
        if job.done or (run.options.test and job.state == "uploaded"):
            continue
        try:
            run.process(job, stop)
        except QueueStopped as e:
            return str(e)
        except RemoteError as e:
            return f"{e}; the queue stopped and deleted nothing; run it again once that is fixed"
        if stop.reason:
            return f"stopped by {stop.reason}; run the queue again to continue"
    return None


def _plan(ws: Workspace, options: QueueOptions, jobs: list[Job]) -> list[str]:
    lines = []
    for job in jobs:
        if job.done:
            lines.append(f"{job.name}: done (cleaned)")
            continue
        name = job.output_name or output_name(ws, job.name, list(options.overlays))
        steps = []
        if not job.reached("downloaded") and job.source != "local":
            steps.append(f"download {', '.join(f'{ws.remote.training}/{f}' for f in job.remote_files)}")
        if not job.reached("unpacked") and job.source == "archive":
            steps.append("unpack")
        if not job.reached("trained"):
            steps.append(f"train as {name}")
        if not job.reached("uploaded") and ws.remote.output:
            steps.append(f"upload to {ws.remote.output}/{name}")
        if not options.test:
            steps.append("clean up")
        lines.append(f"{job.name} [{job.state}]: " + "; ".join(steps))
    return lines
