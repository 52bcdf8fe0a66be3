"""lorakit sweep with the tiny model: a grid runs exactly the grid, a median pruner prunes the worse trials, a
trial that cannot fit the memory budget never starts, and the results name the winner."""

import json

import pytest
import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.unit.cli.test_train import make_config

SHORT = {"max_steps": 4, "eval_every": 1, "micro_batch_size": 4, "grad_accum": 1, "log_every": 1}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def space(tmp_path, **keys):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def trials_of(tmp_path, name):
    from lorakit.sweep.results import trial_rows
    from lorakit.sweep.study import load_sweep

    return trial_rows(load_sweep(name, tmp_path / "sweeps"))


def test_a_grid_runs_exactly_the_grid_each_trial_a_tracked_run(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train=SHORT)
    grid = space(tmp_path, **{"lora.r": [4, 8], "train.lr": [0.01, 0.03], "sampler": "grid", "pruner": "none"})
    dry = invoke("sweep", config, "--space", grid, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert sum("tiny-r" in line and "GiB" in line for line in dry.output.splitlines()) == 4
    assert not (tmp_path / "runs").exists()

    result = invoke("sweep", config, "--space", grid, "--name", "g")
    assert result.exit_code == 0, result.output
    rows = trials_of(tmp_path, "g")
    assert sorted((r.params["lora.r"], r.params["train.lr"]) for r in rows) == [(4, 0.01), (4, 0.03), (8, 0.01),
                                                                                 (8, 0.03)]
    assert all(r.state == "COMPLETE" for r in rows)
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["tiny-r4-lr0.01-v001", "tiny-r4-lr0.03-v001", "tiny-r8-lr0.01-v001", "tiny-r8-lr0.03-v001"]
    manifest = json.loads((tmp_path / "runs" / "tiny-r8-lr0.03-v001" / "manifest.json").read_text())
    assert manifest["sweep"]["name"] == "g" and manifest["sweep"]["params"] == {"lora.r": 8, "train.lr": 0.03}
    assert manifest["config"]["lora"]["r"] == 8 and manifest["config"]["train"]["keep"] == "best"
    listed = json.loads(invoke("runs", "list", "--sweep", "g", "--json").output)
    assert len(listed) == 4
    best = invoke("sweep", "best", "g")
    winner = min(rows, key=lambda r: r.value)
    assert best.exit_code == 0 and best.output.strip() == winner.run_dir
    shown = invoke("sweep", "show", "g")
    assert shown.exit_code == 0 and shown.output.splitlines()[2].startswith(f"| {winner.number} |")
    summary = (tmp_path / "sweeps" / "g" / "summary.md").read_text()
    assert winner.run_dir in summary and (tmp_path / "sweeps" / "g" / "train_lr.png").is_file()
    again = invoke("sweep", config, "--space", grid, "--name", "g")  # the count is reached: nothing more runs
    assert again.exit_code == 0 and len(trials_of(tmp_path, "g")) == 4


def test_a_median_pruner_stops_a_worse_trial_at_a_step_boundary(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train={**SHORT, "max_steps": 6})
    # One learning rate learns, the other barely moves: once two trials finished, the slow ones fall below the median.
    # Seed 6 makes TPE's random start propose the good rate twice first, so the pruner has a median to judge by.
    tpe = space(tmp_path, **{"train.lr": [0.03, 1e-6], "sampler": "tpe", "pruner": "median", "seed": 6})
    result = invoke("sweep", config, "--space", tpe, "--trials", "6", "--name", "p")
    assert result.exit_code == 0, result.output
    rows = trials_of(tmp_path, "p")
    pruned = [r for r in rows if r.state == "PRUNED"]
    assert len(rows) == 6 and pruned, [(r.params, r.state) for r in rows]
    for row in pruned:
        assert row.params["train.lr"] == 1e-6 and row.reason.startswith("pruned at step ")
        step = int(row.reason.rsplit(" ", 1)[1])
        manifest = json.loads((tmp_path / "runs" / row.run_dir.rsplit("/", 1)[1] / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["metrics"]["train_steps"] == step < 6
    assert sum(r.steps or 0 for r in rows) < 6 * 6  # fewer steps than six full runs


def test_a_trial_that_cannot_fit_the_budget_is_pruned_before_it_starts(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25},
                         train={**SHORT, "memory_budget": "1.2GiB"})
    # rank 60000: ~1.4 GiB of adapter, gradients and AdamW state before any activation
    ranks = space(tmp_path, **{"lora.r": [4, 60000], "sampler": "grid", "pruner": "none"})
    result = invoke("sweep", config, "--space", ranks, "--name", "m")
    assert result.exit_code == 0, result.output
    rows = {r.params["lora.r"]: r for r in trials_of(tmp_path, "m")}
    assert rows[4].state == "COMPLETE"
    assert rows[60000].state == "PRUNED" and "does not fit the memory budget" in rows[60000].reason
    assert "1.20 GiB" in rows[60000].reason and rows[60000].run_dir is None
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny-r4-v001"]


@pytest.mark.parametrize(("keys", "args", "says"), [
    ({"lora.rank": [4, 8]}, (), "lora.rank: not a config key, did you mean 'lora.r'?"),
    ({"lora.r": []}, (), "lora.r: the list of values is empty"),
    ({"train.lr": {"low": 0.1, "high": 0.01}}, (), "train.lr: low (0.1) is above high (0.01)"),
    ({"lora.r": [4, 8], "metric": "exact"}, (), "metric: no run logs 'exact'"),
    ({"lora.r": [4, 8, 16], "sampler": "grid"}, ("--trials", "2"), "the grid has 3 trials, more than --trials 2"),
    ({"train.lr": {"low": 0.01, "high": 0.1}, "sampler": "grid"}, (), "sampler grid needs a list of values"),
    ({"lora.r": [4]}, ("--executor", "slurm"), "--executor slurm: sbatch is not on PATH"),
])
def test_bad_sweep_input_is_one_line(tmp_path, tiny_model_dir, keys, args, says, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin/nowhere")  # no sbatch, whatever this machine has
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train=SHORT)
    result = invoke("sweep", config, "--space", space(tmp_path, **keys), *args)
    assert result.exit_code in (1, 2), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweeps").exists()
