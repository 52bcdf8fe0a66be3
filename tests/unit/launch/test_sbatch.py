"""The sbatch script: exact text, and every user string reaching its program as one intact argument."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lorakit.config.schema import SlurmSection
from lorakit.errors import LaunchError
from lorakit.launch.sbatch import JobPlan, render

NASTY = "it's \"q\" $(touch pwned) `touch pwned2`; x"  # quotes, command substitutions, a separator


def stub(folder: Path, name: str, body: str) -> None:
    """A program on PATH that records its arguments as JSON lines."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_script(script: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[list[str]]:
    """Run the script's body with stubs standing in for apptainer, srun, scontrol and python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = "open(sys.argv[0] + '.calls', 'a').write(json.dumps(sys.argv[1:]) + '\\n')"
    for name in ("apptainer", "srun", "fakepython"):
        stub(bin_dir, name, record)
    stub(bin_dir, "scontrol", "print('node-a'); print('node-b')")
    subprocess.run(["bash", "-c", script], check=True, cwd=tmp_path,
                   env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **(env or {})})
    calls = []
    for name in ("apptainer", "srun", "fakepython"):
        path = bin_dir / f"{name}.calls"
        if path.is_file():
            calls += [[name, *json.loads(line)] for line in path.read_text().splitlines()]
    return calls


def plan(tmp_path: Path, nproc: int = 1, **slurm) -> JobPlan:
    run_dir = tmp_path / "runs" / f"{NASTY.replace(chr(34), '')}-v001"  # '"' is refused (see below)
    work = tmp_path / "work dir; $(x)"
    work.mkdir(parents=True, exist_ok=True)
    return JobPlan(run_dir, work, SlurmSection(**slurm), nproc)


def test_a_container_job_renders_exactly_this_and_passes_each_string_intact(tmp_path):
    p = plan(tmp_path, partition="gpu a", time="04:00:00", mem="32G", gpus_per_node=1,
             container="/images/it's $(x).sif", binds=["/data set:/data", "/repo;rm:/mnt"])
    run, work = str(p.run_dir), str(p.working_dir)
    q = "'\"'\"'"  # how shlex.quote writes a single quote inside single quotes
    assert render(p, "9.9") == f"""#!/bin/bash
#SBATCH --job-name="it's q $(touch pwned) `touch pwned2`; x-v001"
#SBATCH --output="{run}/slurm-%j.out"
#SBATCH --error="{run}/slurm-%j.err"
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --partition="gpu a"
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --gpus-per-node=1
# Written by lorakit 9.9 (lorakit submit) for the run folder below; trains it with its recorded config.
set -euo pipefail
mkdir -p '{run.replace("'", q)}'
cd '{work.replace("'", q)}'
apptainer exec --nv --bind '/data set:/data' --bind '/repo;rm:/mnt' '/images/it{q}s $(x).sif' python3 \
-m lorakit train --run-dir '{run.replace("'", q)}'
"""
    calls = run_script(render(p, "9.9"), tmp_path)
    assert calls == [["apptainer", "exec", "--nv", "--bind", "/data set:/data", "--bind", "/repo;rm:/mnt",
                      "/images/it's $(x).sif", "python3", "-m", "lorakit", "train", "--run-dir", run]]
    assert p.run_dir.is_dir()  # the script makes its own log folder
    assert not list(tmp_path.rglob("pwned*"))  # nothing the user typed was executed


def test_several_nodes_meet_at_the_first_node_through_srun_and_torchrun(tmp_path):
    p = plan(tmp_path, nproc=4, nodes=2, python="fakepython")
    calls = run_script(render(p, "9.9"), tmp_path, env={"SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "77",
                                                        "SLURM_JOB_NODELIST": "node-[a-b]"})
    assert calls == [["srun", "--nodes=2", "--ntasks-per-node=1", "fakepython", "-m", "torch.distributed.run",
                      "--nnodes=2", "--rdzv-id=77", "--rdzv-backend=c10d", "--rdzv-endpoint=node-a:29500",
                      "--nproc-per-node=4", "-m", "lorakit", "train", "--run-dir", str(p.run_dir)]]


def test_one_node_with_several_processes_uses_a_standalone_torchrun(tmp_path):
    p = plan(tmp_path, nproc=2, python="fakepython")
    assert run_script(render(p, "9.9"), tmp_path) == [
        ["fakepython", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "lorakit", "train",
         "--run-dir", str(p.run_dir)]]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("partition", 'a"b', "double quote"),
    ("time", "1:00\n#SBATCH --mem=1T", "line break"),
])
def test_a_value_an_sbatch_line_cannot_carry_is_refused(tmp_path, field, value, message):
    with pytest.raises(LaunchError, match=message):
        render(plan(tmp_path, **{field: value}), "9.9")


def test_a_percent_in_the_run_folder_is_refused(tmp_path):
    p = plan(tmp_path)
    with pytest.raises(LaunchError, match="file name pattern"):
        render(JobPlan(tmp_path / "100%-v001", p.working_dir, p.slurm, 1), "9.9")
