"""A sweep killed with SIGKILL at several points, then the same command again: finished trials kept, a half-trained
trial resumed, no trial number run twice, the requested count reached. And two workers as Slurm jobs."""

import json
import os
import subprocess
import sys

import yaml

from lorakit import faults
from tests.integration.slurm import needs_slurm
from tests.unit.cli.test_train import make_config

TRAIN = {"max_steps": 4, "eval_every": 1, "micro_batch_size": 4, "grad_accum": 1, "log_every": 1,
         "resume_every": 1}


def sweep(tmp_path, config, space, *extra, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if kill_at:
        env.update(faults.arm(kill_at))
    return subprocess.run([sys.executable, "-m", "lorakit", "sweep", str(config), "--space", str(space),
                           "--name", "s", *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def runs_by_trial(tmp_path):
    found = {}
    for run in (tmp_path / "runs").iterdir():
        manifest = json.loads((run / "manifest.json").read_text())
        found.setdefault(manifest["sweep"]["trial"], []).append(manifest)
    return found


def test_killed_at_several_points_the_sweep_finishes_with_each_trial_once(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train=TRAIN)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": [0.01, 0.02, 0.03, 0.04], "sampler": "grid", "pruner": "none"}))
    for point in ("trial0:step2", "trial1:trained", "trial2:told", "trial3:step3"):
        done = sweep(tmp_path, config, space, kill_at=point)
        assert done.returncode == -9, (point, done.stderr[-2000:])
    done = sweep(tmp_path, config, space)
    assert done.returncode == 0, done.stderr[-3000:]
    by_trial = runs_by_trial(tmp_path)
    assert sorted(by_trial) == [0, 1, 2, 3]
    for number, manifests in by_trial.items():
        assert [m["status"] for m in manifests] == ["completed"], number  # one run per trial number
    resumed = by_trial[0][0]["status_history"]
    # killed at its step-2 evaluation, before that step's resume state (written after the evaluation)
    assert ("running", "resumed after step 1") in [(h["status"], h.get("reason")) for h in resumed]
    from lorakit.sweep.results import trial_rows
    from lorakit.sweep.study import load_sweep

    rows = trial_rows(load_sweep("s", tmp_path / "sweeps"))
    assert len(rows) == 4 and all(r.state == "COMPLETE" for r in rows)
    assert sorted(r.params["train.lr"] for r in rows) == [0.01, 0.02, 0.03, 0.04]


@needs_slurm
def test_two_workers_as_slurm_jobs_share_the_study(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25},
                         train=TRAIN, launch={"slurm": {"time": "00:10:00", "cpus_per_task": 1}})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"lora.r": [4, 8], "train.lr": [0.01, 0.03], "sampler": "grid",
                                     "pruner": "none"}))
    done = sweep(tmp_path, config, space, "--executor", "slurm", "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    workers = sorted((tmp_path / "sweeps" / "s" / "workers").iterdir())
    assert len(workers) == 2
    manifests = [json.loads((w / "manifest.json").read_text()) for w in workers]
    assert all(m["status"] == "completed" and m["slurm"]["job_id"] for m in manifests)
    by_trial = runs_by_trial(tmp_path)
    assert sorted(by_trial) == [0, 1, 2, 3] and all(len(v) == 1 for v in by_trial.values())
    jobs = {json.loads((tmp_path / "runs" / r / "manifest.json").read_text())["environment"].get("SLURM_JOB_ID")
            for r in os.listdir(tmp_path / "runs")}
    # Every trial trained inside one of the two jobs (how they split them depends on when each job started).
    assert jobs <= {m["slurm"]["job_id"] for m in manifests}
    status = subprocess.run([sys.executable, "-m", "lorakit", "status", str(workers[0])], cwd=tmp_path,
                            capture_output=True, text=True)
    assert status.returncode == 0 and "COMPLETED" in status.stdout
