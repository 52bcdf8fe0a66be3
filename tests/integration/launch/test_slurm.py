"""Runs as jobs of a real Slurm (single node on 127.0.0.1, started by scripts/local-slurm.sh)."""

import json
import stat
import sys
from pathlib import Path

from lorakit.launch.jobs import wait_for
from tests.integration.slurm import needs_slurm
from tests.unit.cli.test_train import invoke, make_config

NAME = "it's a $(touch pwned) `touch pwned2`; x"


pytestmark = needs_slurm


def submitted_run(output: str, runs: Path) -> Path:
    assert "submitted: Slurm job" in output, output
    (run,) = [d for d in runs.iterdir() if d.is_dir()]
    return run


def submit_fake(tmp_path: Path, model_dir: Path, body: str) -> Path:
    """Submit a run whose job's python is this bash script (a job that sleeps, or one that fails)."""
    fake = tmp_path / "fake python"
    fake.write_text(f"#!/bin/bash\n{body}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    config = make_config(tmp_path, model_dir)
    return submitted_run(invoke("submit", config, "--set", f"launch.slurm.python={fake}").output, tmp_path / "runs")


def test_a_submitted_run_trains_in_its_job_and_records_it(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 3, "log_every": 1})
    result = invoke("submit", config, "--name", NAME, "--time", "00:10:00",
                    "--set", f"launch.slurm.python={sys.executable}")
    run = submitted_run(result.output, tmp_path / "runs")
    followed = invoke("logs", run.name, "-f")  # returns once the job has ended, with all it wrote
    assert followed.exit_code == 0 and "step 3/3" in followed.output and "\ncompleted: " in followed.output
    manifest, state = wait_for(run, timeout=240)
    assert state is not None and state.state == "COMPLETED", (state, (run / f"slurm-{state.job_id}.err").read_text())
    job_id = manifest.data["slurm"]["job_id"]
    assert [s["status"] for s in manifest.data["status_history"]] == ["created", "submitted", "running", "completed"]
    assert (run / "adapter_model.safetensors").is_file() and (run / "sbatch.sh").is_file()
    assert (run / f"slurm-{job_id}.out").is_file()
    assert not list(tmp_path.rglob("pwned*"))  # the name reached Slurm and the shell as data only

    status = invoke("status", run.name)
    assert status.exit_code == 0, status.output
    assert job_id in status.output and "COMPLETED" in status.output and "3/3" in status.output
    rows = json.loads(invoke("status", "--json").output)
    assert [(r["run"], r["status"], r["slurm_state"]) for r in rows] == [(run.name, "completed", "COMPLETED")]
    plain = invoke("logs", run.name).output  # .out then .err; -f interleaves them as they grew
    assert sorted(plain.splitlines()) == sorted(followed.output.splitlines())


def test_cancel_stops_a_sleeping_job_and_marks_the_run_cancelled(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = submit_fake(tmp_path, tiny_model_dir, "echo sleeping; exec sleep 300")
    manifest, state = wait_for(run, timeout=1)
    job_id = manifest.data["slurm"]["job_id"]
    result = invoke("cancel", run.name)
    assert result.exit_code == 0, result.output
    assert f"cancelled: {run.name}" in result.output
    manifest, state = wait_for(run, timeout=1)
    assert state is not None and state.state == "CANCELLED"
    assert manifest.status == "cancelled"
    assert manifest.data["status_history"][-1]["reason"] == f"scancel of Slurm job {job_id}"
    again = invoke("cancel", run.name)
    assert again.exit_code == 1 and "already ended (CANCELLED" in again.output


def test_a_job_that_fails_is_reported_failed_with_its_log_tail(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = submit_fake(tmp_path, tiny_model_dir,
                      "echo 'loading the model' >&2; echo 'CUDA driver too old: 11.2' >&2; exit 3")
    manifest, state = wait_for(run, timeout=120)
    assert state is not None and state.state == "FAILED" and state.exit_code == "3:0"
    assert manifest.status == "failed"
    assert manifest.data["status_history"][-1]["reason"].endswith("log: CUDA driver too old: 11.2")
    status = invoke("status", run.name)
    assert "FAILED (exit code 3:0)" in status.output and "failed" in status.output
    assert "  loading the model\n  CUDA driver too old: 11.2" in status.output


def test_a_failing_lorakit_run_says_why_in_its_manifest(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})
    result = invoke("submit", config, "--set", f"launch.slurm.python={sys.executable}", "--set",
                    "launch.nproc=2", "--set", "launch.strategy=fsdp")
    run = submitted_run(result.output, tmp_path / "runs")
    manifest, state = wait_for(run, timeout=180)
    assert state is not None and state.state == "FAILED"
    assert "fsdp needs GPUs" in manifest.data["status_history"][-1]["reason"]


def test_sbatch_refusing_a_job_is_one_line_and_the_run_is_marked_failed(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, tiny_model_dir)
    result = invoke("submit", config, "--cpus-per-task", "512")  # more than the node has
    assert result.exit_code == 1
    assert result.output.startswith("error: sbatch refused") and result.output.count("\n") == 1
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


def test_a_dpo_run_trains_as_a_slurm_job(tmp_path, tiny_model_dir, monkeypatch):
    from tests.unit.train.test_dpo_run import dpo_config

    monkeypatch.chdir(tmp_path)
    config = dpo_config(tmp_path, tiny_model_dir, max_steps=3, log_every=1)
    run = submitted_run(invoke("submit", config, "--set", f"launch.slurm.python={sys.executable}").output,
                        tmp_path / "runs")
    manifest, state = wait_for(run, timeout=240)
    assert state is not None and state.state == "COMPLETED", (state, (run / f"slurm-{state.job_id}.err").read_text())
    assert manifest.data["config"]["train"]["method"] == "dpo" and (run / "reference_logps.json").is_file()
    steps = [json.loads(x) for x in (run / "trainer_log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [s["current_steps"] for s in steps] == [1, 2, 3] and all("rewards/margins" in s for s in steps)
