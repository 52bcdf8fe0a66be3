"""lorakit sweep --executor ray: trials as tasks over two real worker nodes, one Optuna study served by the driver."""

import json
import signal
import sys
import time

import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.integration.ray.conftest import JOB_RESOURCE, free_port, needs_ray
from tests.unit.cli.test_train import make_config

pytestmark = needs_ray
FINISHED = ("COMPLETE", "PRUNED")
TRAIN = {"max_steps": 6, "eval_every": 2, "micro_batch_size": 4, "grad_accum": 1, "log_every": 1,
         "resume_every": 1}
LRS = [0.01, 0.02, 0.03, 0.04]


def sweep_files(tmp_path, tiny_model_dir, address, max_steps=6):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train={**TRAIN, "max_steps": max_steps},
                         launch={"ray": {"address": address, "resources": {JOB_RESOURCE: 1}}})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": LRS, "sampler": "grid", "pruner": "median"}))
    return config, space


def sweep_command(config, space):
    return [sys.executable, "-m", "lorakit", "sweep", str(config), "--space", str(space), "--name", "s",
            "--executor", "ray", "--workers", "2"]


def study_trials(tmp_path):
    from lorakit.sweep.study import load_sweep, open_study

    sweep = load_sweep("s", tmp_path / "sweeps")
    return open_study(sweep, sweep.space(sweep.base_config().config)).get_trials(deepcopy=False)


def finished_runs_by_trial(tmp_path):
    found = {}
    for run in (tmp_path / "runs").iterdir():
        if not (run / "manifest.json").is_file():
            # a trial's task, ended with its killed driver between its folder's mkdir and its first manifest: an
            # empty folder, no run (runs list does not show it); nothing in it to count or to lose
            assert not [f for f in run.iterdir() if not f.name.startswith(".")], run
            continue
        manifest = json.loads((run / "manifest.json").read_text())
        if manifest["status"] in ("completed", "pruned"):
            found.setdefault(manifest["sweep"]["trial"], []).append(run.name)
    return found


def test_four_trials_spread_over_both_workers_in_one_study(tmp_path, tiny_model_dir, ray_cluster):
    config, space = sweep_files(tmp_path, tiny_model_dir, ray_cluster.address)
    done = ray_cluster.run(sweep_command(config, space), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = study_trials(tmp_path)
    assert len(trials) == 4 and all(t.state.name in FINISHED for t in trials)
    assert sorted(t.params["train.lr"] for t in trials) == LRS
    nodes = {t.user_attrs["node"] for t in trials}
    assert any("lorakit_node_a" in n for n in nodes) and any("lorakit_node_b" in n for n in nodes), nodes
    for t in trials:  # each evaluation reached the study through the driver's proxy, where the pruner judges it
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == [2, 4, 6], t.number
        else:  # the median pruner stopped it (which trial depends on the losses): at an evaluation it was told
            assert t.user_attrs["reason"] == f"pruned at step {max(t.intermediate_values)}", t.number
    assert sorted(finished_runs_by_trial(tmp_path)) == [0, 1, 2, 3]
    assert "running on node" in done.stdout + done.stderr
    shown = ray_cluster.run([sys.executable, "-m", "lorakit", "sweep", "show", "s"], cwd=tmp_path, timeout=120)
    assert shown.returncode == 0 and "| node |" in shown.stdout and "lorakit_node_b" in shown.stdout, shown.stdout


def test_a_killed_driver_continues_with_each_trial_once(tmp_path, tiny_model_dir, ray_cluster):
    config, space = sweep_files(tmp_path, tiny_model_dir, ray_cluster.address, max_steps=30)
    first = ray_cluster.popen(sweep_command(config, space), cwd=tmp_path)
    deadline = time.monotonic() + 300
    journal = tmp_path / "sweeps" / "s" / "journal.log"
    while not (journal.is_file() and any(t.state.name in FINISHED for t in study_trials(tmp_path))):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)  # polling the study for its first finished trial
    first.send_signal(signal.SIGKILL)  # trials still running on the nodes: their tasks end with their driver
    first.wait()
    assert sum(t.state.name in FINISHED for t in study_trials(tmp_path)) < 4
    again = ray_cluster.run(sweep_command(config, space), cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = study_trials(tmp_path)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # no trial number twice, the count reached
    assert all(t.state.name in FINISHED for t in trials)
    assert all(len(runs) == 1 for runs in finished_runs_by_trial(tmp_path).values())
    assert sorted(finished_runs_by_trial(tmp_path)) == [0, 1, 2, 3]


def test_an_unreachable_cluster_is_one_line(tmp_path, tiny_model_dir):
    config, space = sweep_files(tmp_path, tiny_model_dir, f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(cli, ["sweep", str(config), "--space", str(space), "--executor", "ray"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:" in lines[0], result.output
