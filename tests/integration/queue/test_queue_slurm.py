"""queue.executor = slurm: each dataset its own job of a real local Slurm, uploaded as it completes."""

import json
import signal
import subprocess
import sys
import time

import yaml

from tests.integration.queue.test_queue import JOBS, queue, state
from tests.integration.slurm import needs_slurm

pytestmark = needs_slurm


def on_slurm(tmp_path, workspace):
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["launch"] = {"slurm": {"python": sys.executable, "time": "00:10:00"}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    workspace.write_text(workspace.read_text() + '\n[queue]\nexecutor = "slurm"\npoll_seconds = 0.5\n')


def jobs_submitted_from(folder) -> list[str]:
    shown = subprocess.run(["scontrol", "show", "jobs", "-o"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in shown.splitlines() if f"WorkDir={folder} " in line]


def test_each_dataset_is_a_slurm_job_uploaded_and_cleaned_as_it_completes(tmp_path, server, workspace,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    on_slurm(tmp_path, workspace)
    result = queue(workspace)
    assert result.exit_code == 0, result.output
    job_ids = set()
    for name in JOBS:
        manifest = json.loads((server.root / "output" / f"{name}-v1" / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["slurm"]["state"] == "COMPLETED"
        job_ids.add(manifest["slurm"]["job_id"])
        assert state(tmp_path)[name]["state"] == "cleaned"
    assert len(job_ids) == len(JOBS) == len(jobs_submitted_from(tmp_path))
    assert not any((server.root / "training").iterdir())


def test_a_queue_killed_while_its_jobs_run_adopts_them_on_the_next_run(tmp_path, server, workspace):
    on_slurm(tmp_path, workspace)
    first = subprocess.Popen([sys.executable, "-m", "lorakit", "queue", str(workspace)], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not all(state(tmp_path).get(n, {}).get("run_dir") for n in JOBS) if (
            tmp_path / "work" / ".lorakit-queue.json").is_file() else True:
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # every dataset submitted; most of their jobs still queued or running
    first.wait()
    again = subprocess.run([sys.executable, "-m", "lorakit", "queue", str(workspace)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(jobs_submitted_from(tmp_path)) == len(JOBS)  # none submitted twice
    for name in JOBS:
        assert state(tmp_path)[name]["state"] == "cleaned"
        assert (server.root / "output" / f"{name}-v1" / "adapter_model.safetensors").is_file()


def test_a_slurm_job_whose_disk_is_full_stops_the_queue_and_a_later_run_trains_it(tmp_path, server, workspace,
                                                                                    monkeypatch):
    from lorakit import faults

    monkeypatch.chdir(tmp_path)
    on_slurm(tmp_path, workspace)
    monkeypatch.setenv(faults.ENV, "free-bytes:0")  # inherited by the Slurm job: its disk as the check sees it
    result = queue(workspace, "--only", "alpha")
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("queue stopped: alpha: Slurm job ") and "not enough disk space for this run" in last
    assert "set the workspace's output_dir" in last and "set output.dir" not in last  # the queue sets output.dir
    assert "the queue stopped and deleted nothing" in last
    assert state(tmp_path)["alpha"]["state"] == "training"  # not failed: the next run submits it again
    assert (server.root / "training" / "alpha" / "train.jsonl").is_file()
    monkeypatch.delenv(faults.ENV)  # room again
    again = queue(workspace, "--only", "alpha")
    assert again.exit_code == 0, again.output
    assert json.loads((server.root / "output" / "alpha-v1" / "manifest.json").read_text())["status"] == "completed"
