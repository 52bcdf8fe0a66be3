"""The sbatch script of a run: Slurm directives, then the command that trains the run's folder.

Every string a user gave (run folder, working folder, python, container, binds, partition, ...)
reaches the shell through ``shlex.quote`` and nothing else; the only unquoted text is ours. The
``#SBATCH`` lines are read by sbatch, not by a shell, so ``$(...)`` there is inert; sbatch cannot
carry a double quote or a newline in them, so such values are refused rather than mangled.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from lorakit.config.schema import SlurmSection
from lorakit.errors import LaunchError
from lorakit.launch.local import worker_args

RENDEZVOUS_PORT = 29500
SCRIPT_NAME = "sbatch.sh"


@dataclass(frozen=True)
class JobPlan:
    """Where and how one run trains under Slurm."""

    run_dir: Path  # absolute
    working_dir: Path  # absolute; the config's relative paths start here
    slurm: SlurmSection
    nproc: int  # training processes per node
    command: tuple[str, ...] = ()  # what the job runs after python (default: train the run folder)
    purpose: str = "trains it with its recorded config"

    @property
    def python(self) -> str:
        return self.slurm.python or ("python3" if self.slurm.container else sys.executable)


def _directive(option: str, value: object) -> str:
    text = str(value)
    if '"' in text or "\n" in text:
        raise LaunchError(f"{option}: {text!r} holds a double quote or a line break, which an #SBATCH line "
                          "cannot carry; choose another name or path")
    return f'#SBATCH --{option}="{text}"' if any(c.isspace() for c in text) else f"#SBATCH --{option}={text}"


def directives(plan: JobPlan) -> list[str]:
    s = plan.slurm
    if "%" in str(plan.run_dir):
        raise LaunchError(f"run folder {plan.run_dir} holds a '%', which Slurm reads as a file name pattern; "
                          "choose another output.dir or name")
    wanted: list[tuple[str, object]] = [
        ("job-name", plan.run_dir.name),
        ("output", plan.run_dir / "slurm-%j.out"),
        ("error", plan.run_dir / "slurm-%j.err"),
        ("nodes", s.nodes),
        ("ntasks-per-node", 1),  # one launcher per node; torchrun starts the processes
    ]
    optional = [("partition", s.partition), ("account", s.account), ("cpus-per-task", s.cpus_per_task),
                ("mem", s.mem), ("time", s.time), ("gpus-per-node", s.gpus_per_node or None)]
    wanted += [(k, v) for k, v in optional if v is not None]
    return [_directive(k, v) for k, v in wanted]


def container_prefix(slurm: SlurmSection) -> list[str]:
    """``apptainer exec --nv --bind SRC:DST ... IMAGE``, or nothing without a container."""
    if not slurm.container:
        return []
    binds = [a for bind in slurm.binds for a in ("--bind", bind)]
    return ["apptainer", "exec", "--nv", *binds, slurm.container]


def train_command(plan: JobPlan) -> str:
    """The shell line that starts training on the job's node(s)."""
    python = [*container_prefix(plan.slurm), plan.python]
    worker = list(plan.command) or worker_args(plan.run_dir)
    if plan.slurm.nodes == 1 and plan.nproc == 1:
        return shlex.join([*python, *worker])
    if plan.slurm.nodes == 1:
        return shlex.join([*python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={plan.nproc}",
                           *worker])
    # One torchrun per node (srun), meeting at the first node of the allocation; the Slurm
    # variables are expanded by the job's shell, so these few words stay outside the quoting.
    rendezvous = ('--nnodes="$SLURM_JOB_NUM_NODES" --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d '
                  f'--rdzv-endpoint="$head_node:{RENDEZVOUS_PORT}"')
    return (f"srun --nodes=\"$SLURM_JOB_NUM_NODES\" --ntasks-per-node=1 {shlex.join(python)} -m torch.distributed.run "
            f"{rendezvous} --nproc-per-node={plan.nproc} {shlex.join(worker)}")


def render(plan: JobPlan, version: str) -> str:
    """The whole sbatch script."""
    lines = ["#!/bin/bash", *directives(plan),
             f"# Written by lorakit {version} (lorakit submit) for the run folder below; {plan.purpose}.",
             "set -euo pipefail",
             f"mkdir -p {shlex.quote(str(plan.run_dir))}",  # the log folder: the run's own
             f"cd {shlex.quote(str(plan.working_dir))}"]
    if plan.slurm.nodes > 1:
        # sed reads every line: `head -n 1` would close the pipe early, and under pipefail a scontrol
        # killed by SIGPIPE (a long node list) would end the job before it starts.
        lines.append('head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)')
    lines.append(train_command(plan))
    return "\n".join(lines) + "\n"
