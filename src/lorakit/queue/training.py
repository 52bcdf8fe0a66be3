"""The queue's training stage: one dataset trained by lorakit here, by an external command, or as a Slurm job.

Whatever trained it, the stage ends with a run folder that was trained on exactly the dataset's content (its
manifest says so) and holds a model file, or the job fails ("produced no model file") and nothing of it is
deleted.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import ConfigError, DataError, DiskFullError
from lorakit.external.trainer import TrainerKind
from lorakit.launch.executor import Executor
from lorakit.outcome import Kind
from lorakit.proc import Child, run_logged
from lorakit.queue.jobs import write_job_config
from lorakit.queue.keep import Keeper, trained_on
from lorakit.queue.state import Job, QueueState
from lorakit.queue.trust import check_links
from lorakit.queue.workspace import Workspace
from lorakit.runs.catalog import RESUME_FILE, model_files, read_manifest, versions_of
from lorakit.runs.fingerprint import content_sha256
from lorakit.runs.folder import RunFolder
from lorakit.runs.naming import safe_name

log = logging.getLogger(__name__)

# What the queue writes beside a lorakit run (the dataset's merged config, the trainer's output); copied into
# the run so they travel with its upload.
JOB_FILES = ("job-config.yaml", "queue-train.log")


class JobFailed(Exception):
    """This job cannot go on (bad data, training failed); the queue moves to the next one."""


class StillTraining(Exception):
    """The job's Slurm job has not finished yet; look again later."""


class QueueStopped(Exception):
    """The queue must stop now (a signal, a full remote); everything is left resumable."""


def _completed(runs: list[Path]) -> list[Path]:
    return [d for d in runs if read_manifest(d).get("status") == "completed"]


@dataclass
class TrainingStage:
    ws: Workspace
    overlays: tuple[str, ...]
    state: QueueState
    keeper: Keeper
    child: Child
    work: Path
    outputs: Path

    def run(self, job: Job) -> Path:
        """The job's completed run folder, trained on exactly the dataset folder's content now, holding a model
        file. An earlier run is this job's result only when its manifest says it was trained on that content:
        never by its name.

        Raises:
            JobFailed: training failed or produced no model file. StillTraining: its Slurm job runs.
            QueueStopped: the trainer was stopped by a signal (it resumes on the next queue run).
        """
        job_dir, data = self.outputs / job.key, self.work / job.folder
        try:
            check_links(data)  # a link out of the folder would let the trainer read, and upload, any local file
        except DataError as e:
            raise JobFailed(str(e)) from None
        content = content_sha256(data)
        assert job.output_name is not None
        existing = versions_of(job.output_name, job_dir)
        ours = [d for d in existing if trained_on(d) == content]
        if self.ws.queue.executor == Executor.SLURM:
            run_dir = self.on_slurm(job, job_dir, ours)
        elif completed := _completed(ours):  # trained before a crash, not yet recorded
            run_dir = completed[-1]
        else:
            command = self.ws.trainer.kind == TrainerKind.COMMAND
            resumed = None if command else _resumable(ours)  # goes on, not a stale run to judge
            self._discard_unfinished([d for d in existing if trained_on(d) in (content, None) and d != resumed])
            run_dir = (self.with_command(job, job_dir) if command
                       else self.with_lorakit(job, job_dir, resumed, content))
        if trained_on(run_dir) != content:
            raise JobFailed(f"{data} changed while it trained ({run_dir.name} recorded other files); nothing was "
                            "uploaded or deleted, and the next queue run trains it again")
        if not model_files(run_dir, self.keeper.model_patterns):
            reason = (f"the trainer produced no model file (looked for {', '.join(self.keeper.model_patterns)} in "
                      f"{run_dir}); nothing was uploaded or deleted")
            run = RunFolder.open(run_dir)
            if run.status == "completed":  # the trainer said so; without a model it did not
                run.fail("produced no model file")
            raise JobFailed(reason)
        return run_dir

    def _discard_unfinished(self, runs: list[Path]) -> None:
        for stale in runs:  # never uploaded; kept when it holds anything worth a look
            if read_manifest(stale).get("status") != "completed":
                self.keeper.discard_unfinished_run(stale)

    def with_command(self, job: Job, job_dir: Path) -> Path:
        """The external trainer, run by exactly the code of ``lorakit run``."""
        from lorakit.external.run import TrainerJob, run_trainer

        outcome = run_trainer(TrainerJob(self.ws.trainer, job_dir, self.work / job.folder,
                                         tuple(Path(o) for o in self.overlays), name=job.output_name,
                                         dataset_name=job.name, command_line=("lorakit", "queue", job.key)),
                              self.child)
        if outcome.outcome.kind is Kind.STOPPED:
            raise QueueStopped(f"{job.key}: training {outcome.reason}; run the queue again to train it again")
        if outcome.outcome.kind is Kind.DISK_FULL:  # the next dataset would find the disk as full
            raise DiskFullError(f"{job.key}: {outcome.reason}")
        if not outcome.outcome.complete:
            raise JobFailed(outcome.reason or outcome.status)
        return outcome.run_dir

    def with_lorakit(self, job: Job, job_dir: Path, resumed: Path | None, content: str) -> Path:
        if resumed is not None:
            cmd = ["train", "--resume", str(resumed)]
        else:
            config, secrets = self._job_config(job, job_dir)
            cmd = ["train", str(config), *[a for o in self.overlays for a in ("--add", o)],
                   "--name", f"{safe_name(job.name)}-{self.ws.suffix}", "--set", f"output.dir={job_dir}",
                   "--set", "train.resumable=true", *[a for s in secrets for a in ("--set", s)],
                   "--record-dataset", str(self.work / job.folder), job.name]
        done = run_logged([sys.executable, "-m", "lorakit.cli.main", *cmd], job_dir / "queue-train.log",
                          child=self.child)
        if done.returncode == 130:
            raise QueueStopped(f"{job.key}: training stopped; run the queue again to resume it")
        if done.returncode == DiskFullError.exit_code:  # the next dataset would find the disk as full
            raise DiskFullError(f"{job.key}: {_in_queue_words(done.error_line())}")
        if done.returncode != 0:
            raise JobFailed(done.error_line())
        finished = [d for d in _completed(versions_of(job.output_name or job.key, job_dir))
                    if trained_on(d) == content]
        if not finished:
            raise JobFailed(f"lorakit train finished but left no completed run of this dataset in {job_dir}")
        for name in JOB_FILES:  # the merged config (its secrets redacted) and the trainer's output (redacted too)
            if (job_dir / name).is_file():
                shutil.copyfile(job_dir / name, finished[-1] / name)
        return finished[-1]

    def _job_config(self, job: Job, job_dir: Path) -> tuple[Path, list[str]]:
        try:
            return write_job_config(self.ws, self.work / job.folder, job_dir / "job-config.yaml", self.overlays)
        except (DataError, ConfigError) as e:
            raise JobFailed(str(e)) from None

    def on_slurm(self, job: Job, job_dir: Path, ours: list[Path]) -> Path:
        """The job's completed run, once its Slurm job has ended; else submit it (or find it
        submitted) and raise StillTraining.

        The run folder is recorded in the job as soon as it is submitted; a queue killed between
        sbatch and that record finds the live job by its manifest and adopts it, never submitting twice.

        Raises:
            StillTraining: the Slurm job is queued or running.
            JobFailed: the run this queue submitted failed or was cancelled (the next queue run submits anew).
        """
        from lorakit.config.load import load_config
        from lorakit.launch.jobs import reconcile
        from lorakit.recipe.launch import submit_run
        from lorakit.runs.fingerprint import fingerprint_dataset
        from lorakit.runs.manifest import UNFINISHED

        for run in ours:
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
                reason = f"Slurm job {manifest.data['slurm']['job_id']}: {manifest.status}: " + (
                    manifest.outcome.reason or manifest.status)
                if manifest.outcome.kind is Kind.DISK_FULL:  # the next dataset's job would find it as full
                    self.state.save()
                    raise DiskFullError(f"{job.key}: {_in_queue_words(reason)}")
                raise JobFailed(reason)
        self._discard_unfinished(ours)  # failed, cancelled or never submitted; nothing of it was uploaded
        config, secrets = self._job_config(job, job_dir)
        try:
            loaded = load_config(str(config), self.overlays, (f"output.dir={job_dir}", "train.resumable=true",
                                                              *secrets), f"{safe_name(job.name)}-{self.ws.suffix}")
        except (DataError, ConfigError) as e:
            raise JobFailed(str(e)) from None
        dataset = {**fingerprint_dataset(self.work / job.folder), "name": job.name}
        submission = submit_run(loaded, ["lorakit", "queue", "(slurm executor)", job.key], record={"dataset": dataset})
        job.run_dir = str(submission.run_dir)
        self.state.save()
        log.info("%s: submitted as Slurm job %s (%s)", job.key, submission.job_id, submission.run_dir.name)
        raise StillTraining


def _resumable(ours: list[Path]) -> Path | None:
    """The latest of this data's runs that a killed queue left with a resume state."""
    return next((d for d in reversed(ours) if d.is_dir() and (d / RESUME_FILE).is_file()), None)


def _in_queue_words(reason: str) -> str:
    """A training's own advice, for its queue: the queue sets each run's ``output.dir`` from the workspace."""
    return reason.replace("set output.dir", "set the workspace's output_dir")
