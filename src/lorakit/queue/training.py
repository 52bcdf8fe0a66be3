"""The queue's training stage: one dataset trained by lorakit here, by an external command, or as a Slurm job.

Whatever trained it, the stage ends with a run folder that holds a model file, or the job fails
("produced no model file") and nothing of it is deleted.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import ConfigError, DataError
from lorakit.proc import Child, run_logged
from lorakit.queue.jobs import write_job_config
from lorakit.queue.keep import Keeper
from lorakit.queue.state import Job, QueueState
from lorakit.queue.workspace import Workspace
from lorakit.runs.catalog import RESUME_FILE, model_files, read_manifest, versions_of
from lorakit.runs.folder import RunFolder
from lorakit.runs.provenance import redact_text

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
        """The job's completed run folder, holding a model file.

        Raises:
            JobFailed: training failed or produced no model file. StillTraining: its Slurm job runs.
            QueueStopped: the trainer was stopped by a signal (it resumes on the next queue run).
        """
        job_dir = self.outputs / job.name
        assert job.output_name is not None
        existing = versions_of(job.output_name, job_dir)
        if self.ws.queue.executor == "slurm":
            run_dir = self.on_slurm(job, job_dir, existing)
        elif completed := _completed(existing):  # trained before a crash, not yet recorded
            run_dir = completed[-1]
        elif self.ws.trainer.kind == "command":
            run_dir = self.with_command(job, job_dir, existing)
        else:
            run_dir = self.with_lorakit(job, job_dir, existing)
        if not model_files(run_dir, self.keeper.model_patterns):
            reason = (f"the trainer produced no model file (looked for {', '.join(self.keeper.model_patterns)} in "
                      f"{run_dir}); nothing was uploaded or deleted")
            run = RunFolder.open(run_dir)
            if run.status == "completed":  # the trainer said so; without a model it did not
                run.end("failed", "produced no model file", card=False)
            raise JobFailed(reason)
        return run_dir

    def _discard_unfinished(self, runs: list[Path]) -> None:
        for stale in runs:  # never uploaded; kept when it holds anything worth a look
            self.keeper.discard_unfinished_run(stale)

    def with_command(self, job: Job, job_dir: Path, existing: list[Path]) -> Path:
        """The external trainer, run by exactly the code of ``lorakit run``."""
        from lorakit.external.run import TrainerJob, run_trainer

        self._discard_unfinished(existing)
        outcome = run_trainer(TrainerJob(self.ws.trainer, job_dir, self.work / job.name,
                                         tuple(Path(o) for o in self.overlays), name=job.output_name,
                                         command_line=("lorakit", "queue", job.name)), self.child)
        if outcome.status == "interrupted":
            raise QueueStopped(f"{job.name}: training {outcome.reason}; run the queue again to train it again")
        if outcome.status != "completed":
            raise JobFailed(outcome.reason or outcome.status)
        return outcome.run_dir

    def with_lorakit(self, job: Job, job_dir: Path, existing: list[Path]) -> Path:
        resumable = [d for d in existing if (d / RESUME_FILE).is_file()]
        self._discard_unfinished([d for d in existing if d not in resumable[-1:]])
        if resumable:
            cmd = ["train", "--resume", str(resumable[-1])]
        else:
            try:
                config = write_job_config(self.ws, self.work / job.name, job_dir / "job-config.yaml")
            except (DataError, ConfigError) as e:
                raise JobFailed(str(e)) from None
            cmd = ["train", str(config), *[a for o in self.overlays for a in ("--add", o)],
                   "--name", f"{job.name}-{self.ws.suffix}", "--set", f"output.dir={job_dir}",
                   "--set", "train.resumable=true"]
        done = run_logged([sys.executable, "-m", "lorakit.cli.main", *cmd], job_dir / "queue-train.log",
                          child=self.child)
        if done.returncode == 130:
            raise QueueStopped(f"{job.name}: training stopped; run the queue again to resume it")
        if done.returncode != 0:
            raise JobFailed(done.error_line())
        finished = _completed(versions_of(job.output_name or job.name, job_dir))
        if not finished:
            raise JobFailed(f"lorakit train finished but left no completed run in {job_dir}")
        for name in JOB_FILES:  # credentials stay out of the copy that is uploaded (the original is kept then)
            if (job_dir / name).is_file():  # bytes as they are (progress bars end in \r), only secrets replaced
                text = (job_dir / name).read_bytes().decode("utf-8", "replace")
                (finished[-1] / name).write_bytes(redact_text(text).encode("utf-8"))
        return finished[-1]

    def on_slurm(self, job: Job, job_dir: Path, existing: list[Path]) -> Path:
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
        self._discard_unfinished(existing)  # failed, cancelled or never submitted; nothing of it was uploaded
        try:
            config = write_job_config(self.ws, self.work / job.name, job_dir / "job-config.yaml")
            loaded = load_config(str(config), self.overlays,
                                 (f"output.dir={job_dir}", "train.resumable=true"), f"{job.name}-{self.ws.suffix}")
        except (DataError, ConfigError) as e:
            raise JobFailed(str(e)) from None
        submission = submit_run(loaded, ["lorakit", "queue", "(slurm executor)", job.name])
        job.run_dir = str(submission.run_dir)
        self.state.save()
        log.info("%s: submitted as Slurm job %s (%s)", job.name, submission.job_id, submission.run_dir.name)
        raise StillTraining
