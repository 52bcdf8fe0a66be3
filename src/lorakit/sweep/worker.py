"""A sweep worker: take the next trial (a stale one first), train it as a normal tracked run, tell the study.

Several workers (processes here, or Slurm jobs) share one study; a file lock makes "which trial
next" one decision at a time. A trial whose worker died (kill -9, a lost node) is stale: its run
resumes from its resume state, or starts afresh, under the same trial number, so no number is run
twice and the requested count is reached.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit import faults
from lorakit.errors import DiskFullError, LorakitError
from lorakit.outcome import Kind, Outcome
from lorakit.redaction import redact_text
from lorakit.sweep.space import SweepSpace
from lorakit.sweep.study import LOCK_FILE, Sweep, memory_verdict, open_study, suggest, trial_config

log = logging.getLogger(__name__)

FINISHED = ("COMPLETE", "PRUNED", "FAIL")
# Test hook: die like kill -9 at "step:<trial>:<step>" (at that evaluation, before that step's resume state),
# "trained:<trial>" (its run completed, the study not told) or "told:<trial>" (told, the next not asked).
@contextmanager
def _locked(sweep: Sweep) -> Iterator[None]:
    with (sweep.path / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": os.environ.get("SLURM_JOB_ID")}


def worker_alive(worker: dict[str, Any] | None) -> bool:
    """Whether the worker that holds a trial is still there (this machine's processes, or its Slurm job)."""
    if not worker:
        return False  # asked, but died before it said who it was (both happen under the lock)
    if worker.get("job_id"):
        from lorakit.launch.slurm import job_state

        state = job_state(str(worker["job_id"]))
        return state is not None and state.active
    if worker.get("host") != socket.gethostname():
        return True  # another machine's worker without Slurm: we cannot tell, so we leave it
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Job:
    trial: Any  # optuna.trial.Trial
    params: dict[str, Any]
    recovered: bool


def next_trial(study: Any, sweep: Sweep, space: SweepSpace) -> Job | None:
    """Under the lock: a stale trial to take over, else a new one while the count is not reached, else None."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state.name == "RUNNING"]
    stale = [t for t in running if not worker_alive(t.user_attrs.get("worker"))]
    if stale:
        frozen = stale[0]
        study._storage.set_trial_user_attr(frozen._trial_id, "worker", _me())
        return Job(optuna.trial.Trial(study, frozen._trial_id), dict(frozen.params), True)
    done = sum(t.state.name in FINISHED for t in trials)
    if done + len(running) >= sweep.trials:
        return None
    trial = study.ask()
    trial.set_user_attr("worker", _me())
    return Job(trial, suggest(trial, space), False)


def work(sweep: Sweep) -> int:
    """Run trials until the sweep has its count; how many this worker finished."""
    base = sweep.base_config()
    space = sweep.space(base.config)
    study = open_study(sweep, space)
    finished = 0
    while True:
        with _locked(sweep):
            job = next_trial(study, sweep, space)
        if job is None:
            return finished
        if not run_trial(study, sweep, space, job):
            return finished  # stopped by a signal: the trial stays running, for the next worker to resume
        finished += 1


def _judge(trial: Any, metric: str) -> Callable[[int, dict[str, Any]], Outcome | None]:
    """Each evaluation reported to the study; the pruner's verdict as the outcome to stop at."""

    def judge(step: int, metrics: dict[str, Any]) -> Outcome | None:
        faults.reached(f"trial{trial.number}:step{step}")
        value = metrics.get(metric)
        if step == 0 or value is None:  # the untrained adapter is the same in every trial
            return None
        trial.report(float(value), step)
        return Outcome(Kind.PRUNED, f"pruned at step {step}", {"step": step}) if trial.should_prune() else None

    return judge


def run_trial(study: Any, sweep: Sweep, space: SweepSpace, job: Job) -> bool:
    """Train one trial (resuming its run when it has one) and tell the study how it ended.

    Returns:
        False when a signal stopped it (the trial is left running, to be resumed).
    """
    import optuna

    from lorakit.recipe.run import resume_training, run_training

    base = sweep.base_config()
    number = job.trial.number
    try:
        loaded = trial_config(sweep, base, job.params, space.metric)
    except LorakitError as e:
        study.tell(job.trial, state=optuna.trial.TrialState.FAIL)
        log.error("trial %d: %s", number, e)
        return True
    if (verdict := memory_verdict(loaded.config)) is not None:
        job.trial.set_user_attr("reason", verdict)
        study.tell(job.trial, state=optuna.trial.TrialState.PRUNED)
        log.warning("trial %d pruned before it started: %s", number, verdict)
        return True
    judge = _judge(job.trial, space.metric)
    previous, finished = (_left_behind(Path(loaded.config.output.dir), sweep.name, number) if job.recovered
                          else (None, None))
    if finished is not None:  # trained before its worker died, not yet told
        return _tell(study, job.trial, finished, space)
    record = {"sweep": {"name": sweep.name, "trial": number, "params": job.params}}
    log.info("trial %d: %s", number, ", ".join(f"{k}={v}" for k, v in job.params.items()))
    try:
        if previous is not None:
            outcome = resume_training(previous, ["lorakit", "sweep", sweep.name, f"trial {number}"], judge=judge)
        else:
            outcome = run_training(loaded, ["lorakit", "sweep", sweep.name, f"trial {number}"], judge=judge,
                                   record=record)
    except DiskFullError:  # every later trial needs the same disk: the sweep stops, the trial left to take over
        job.trial.set_user_attr("worker", None)
        raise
    except LorakitError as e:
        job.trial.set_user_attr("reason", redact_text(str(e)))  # the journal is a file: no credential in it
        study.tell(job.trial, state=optuna.trial.TrialState.FAIL)
        log.error("trial %d failed: %s", number, e)
        return True
    if outcome.outcome.kind is Kind.STOPPED:
        return False
    faults.reached(f"trial{number}:trained")
    told = _tell(study, job.trial, Path(outcome.run_dir), space)
    faults.reached(f"trial{number}:told")
    return told


def _tell(study: Any, trial: Any, run_dir: Path, space: SweepSpace) -> bool:
    import optuna

    from lorakit.runs.catalog import read_manifest
    from lorakit.runs.manifest import outcome_of

    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    manifest = read_manifest(run_dir)
    outcome = outcome_of(manifest)
    if outcome.kind is Kind.PRUNED:
        trial.set_user_attr("reason", outcome.reason)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return True
    value = kept_value(manifest, space.metric)
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return True
    if note := (manifest.get("adapter") or {}).get("note"):
        trial.set_user_attr("reason", note)
    study.tell(trial, float(value))
    return True


def kept_value(manifest: dict[str, Any], metric: str) -> float | None:
    """The sweep's metric for the adapter the run kept on top: the best step's value when the best adapter is on
    top and was chosen by this metric, else the last evaluation's (the last adapter's)."""
    metrics = manifest.get("metrics") or {}
    kept = manifest.get("adapter") or {}
    if kept.get("top") == "best" and metrics.get("best_metric") == metric:
        return metrics.get("best_value")
    return metrics.get(metric)


def _left_behind(runs_dir: Path, sweep: str, number: int) -> tuple[Path | None, Path | None]:
    """What a dead worker left for this trial: (a run to resume, or None; a completed run, or None). An
    unfinished run without a resume state is marked failed: a fresh run takes the trial over."""
    from lorakit.runs.catalog import RESUME_FILE, read_manifest, run_dirs
    from lorakit.runs.folder import RunFolder
    from lorakit.runs.manifest import UNFINISHED

    for run in reversed(run_dirs(runs_dir)):
        manifest = read_manifest(run)
        if (manifest.get("sweep") or {}).get("name") != sweep or manifest["sweep"].get("trial") != number:
            continue
        if manifest.get("status") == "completed":
            return None, run
        if (run / RESUME_FILE).is_file():
            return run, None
        if manifest.get("status") in UNFINISHED:
            RunFolder.open(run).fail("its sweep worker died before it saved a resume state")
    return None, None
