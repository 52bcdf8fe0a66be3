"""Slurm's own commands: sbatch, scontrol (or sacct), scancel. Nothing here schedules anything."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LaunchError

# Job states in which the job may still run (Slurm's "pending or running" family).
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...
    exit_code: str = ""  # "code:signal"
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        extra = [f"exit code {self.exit_code}" if self.exit_code and self.exit_code != "0:0" else "",
                 self.reason if self.reason not in ("", "None") else ""]
        return " ".join([self.state, *(f"({e})" for e in extra if e)])


def _slurm(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LaunchError(f"{args[0]} not found: Slurm's client commands are not installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{args[0]} did not answer in {timeout:.0f} s: is slurmctld reachable?") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def sbatch(script: Path, hold: bool = False) -> str:
    """Submit ``script`` (held: it waits for ``scontrol release``); its job id.

    Raises:
        LaunchError: sbatch refused it (sbatch's own message, one line).
    """
    done = _slurm(["sbatch", "--parsable", *(["--hold"] if hold else []), str(script)], timeout=120)
    if done.returncode != 0:
        raise LaunchError(f"sbatch refused {script}: {_last_line(done.stderr)}")
    return done.stdout.strip().split(";")[0]


def _field(name: str, text: str) -> str:
    found = re.search(rf"\b{name}=(\S*)", text)
    return found.group(1) if found else ""


def job_state(job_id: str) -> JobState | None:
    """The job's state from scontrol (recent jobs) or sacct (accounting); None once Slurm forgot it."""
    done = _slurm(["scontrol", "show", "job", "-o", job_id])
    if done.returncode == 0 and "JobState=" in done.stdout:
        return JobState(job_id, _field("JobState", done.stdout), _field("ExitCode", done.stdout),
                        _field("Reason", done.stdout))
    try:
        done = _slurm(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"])
    except LaunchError:
        return None
    rows = [line.split("|") for line in done.stdout.splitlines() if "|" in line]
    if done.returncode != 0 or not rows:
        return None  # no accounting here ("accounting storage is disabled"), or too old
    state, exit_code = rows[0][0].split()[0], rows[0][1]  # "CANCELLED by 0" -> CANCELLED
    return JobState(job_id, state, exit_code)


def release(job_id: str) -> None:
    done = _slurm(["scontrol", "release", job_id])
    if done.returncode != 0:
        raise LaunchError(f"scontrol release {job_id}: {_last_line(done.stderr)}")


def scancel(job_id: str) -> None:
    """Cancel the job (Slurm sends SIGTERM, then SIGKILL after its KillWait)."""
    done = _slurm(["scancel", "--verbose", job_id])
    if done.returncode != 0:
        raise LaunchError(f"scancel {job_id}: {_last_line(done.stderr)}")
