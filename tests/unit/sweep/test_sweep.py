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


@pytest.fixture
def scripted_eval(monkeypatch):
    """Validation losses chosen per learning rate and step, so a trial's fate is the test's, not a trajectory's."""
    from lorakit.recipe.evaluation import TrainingEvaluator

    by_lr = {}

    def evaluate(self, step):
        return {"eval_loss": by_lr[self.session.cfg.train.lr](step)}

    monkeypatch.setattr(TrainingEvaluator, "__call__", evaluate)
    return by_lr


def proposals(tmp_path, config, space_file, count):
    """The learning rates the sampler proposes first, as the sweep's own dry run shows them."""
    shown = invoke("sweep", config, "--space", space_file, "--trials", count, "--dry-run", "--name", "probe")
    assert shown.exit_code == 0, shown.output
    return [line.split()[1] for line in shown.output.splitlines()[1:]]


def test_a_median_pruner_stops_a_worse_trial_at_a_step_boundary(tmp_path, tiny_model_dir, scripted_eval):
    scripted_eval.update({0.03: lambda step: 3.0 - 0.1 * step, 1e-6: lambda step: 3.0})  # one learns, one does not
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train={**SHORT, "max_steps": 6})
    # A seed whose first proposals are good, good, bad (the pruner has a median of two finished trials when the
    # bad one reports), found by asking the installed Optuna itself rather than assuming its random draws.
    for seed in range(200):
        tpe = space(tmp_path, **{"train.lr": [0.03, 1e-6], "sampler": "tpe", "pruner": "median", "seed": seed})
        if proposals(tmp_path, config, tpe, 3) == ["tiny-lr0.03", "tiny-lr0.03", "tiny-lr1e-6"]:
            break
    else:
        pytest.fail("no seed under 200 proposes good, good, bad first")
    result = invoke("sweep", config, "--space", tpe, "--trials", "3", "--name", "p")
    assert result.exit_code == 0, result.output
    rows = {r.number: r for r in trials_of(tmp_path, "p")}
    assert [rows[n].state for n in range(3)] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = rows[2]
    assert pruned.params["train.lr"] == 1e-6 and pruned.reason.startswith("pruned at step ")
    step = int(pruned.reason.rsplit(" ", 1)[1])
    manifest = json.loads((tmp_path / "runs" / pruned.run_dir.rsplit("/", 1)[1] / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["train_steps"] == step < 6


def test_a_trial_where_no_step_beats_the_untrained_adapter_keeps_its_last_one_and_the_table_says_so(
        tmp_path, tiny_model_dir, scripted_eval):
    scripted_eval.update({0.01: lambda step: 1.0 if step == 0 else 1.5, 0.03: lambda step: 1.0 - 0.1 * step})
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train=SHORT)
    grid = space(tmp_path, **{"train.lr": [0.01, 0.03], "sampler": "grid", "pruner": "none"})
    result = invoke("sweep", config, "--space", grid, "--name", "b")
    assert result.exit_code == 0, result.output
    rows = {r.params["train.lr"]: r for r in trials_of(tmp_path, "b")}
    assert rows[0.01].value == 1.5 and rows[0.03].value == pytest.approx(0.6)  # each kept adapter's own loss
    assert rows[0.01].reason.startswith("no trained step beat the untrained adapter (loss 1 at step 0)")
    manifest = json.loads((tmp_path / "runs" / rows[0.01].run_dir.rsplit("/", 1)[1] / "manifest.json").read_text())
    assert manifest["adapter"]["top"] == "last" and manifest["adapter"]["step"] == 4
    assert "no trained step beat the untrained adapter" in invoke("sweep", "show", "b").output
    assert invoke("sweep", "best", "b").output.strip() == rows[0.03].run_dir


def test_a_sweep_ranked_by_one_metric_and_stopped_early_by_another_is_refused(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25},
                         train={**SHORT, "eval_metrics": ["loss", "exact"], "early_stopping": {"metric": "exact"}})
    result = invoke("sweep", config, "--space", space(tmp_path, **{"train.lr": [0.01, 0.02], "metric": "loss"}))
    assert result.exit_code in (1, 2)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "the sweep ranks trials by loss but the config stops them early by exact" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweeps").exists()


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


def test_a_full_disk_stops_the_sweep_and_the_same_command_finishes_it(tmp_path, tiny_model_dir, monkeypatch):
    from lorakit.recipe import disk_room

    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train=SHORT)
    grid = space(tmp_path, **{"train.lr": [0.01, 0.03], "sampler": "grid", "pruner": "none"})
    free_bytes = disk_room.free_bytes
    monkeypatch.setattr(disk_room, "free_bytes", lambda path: 0)
    full = invoke("sweep", config, "--space", grid, "--name", "d")
    assert full.exit_code == 28 and "Traceback" not in full.output
    assert full.output.strip().splitlines()[-1].startswith("error: not enough disk space for this run")
    assert [r.state for r in trials_of(tmp_path, "d")] == ["RUNNING"]  # not failed: every later trial would be
    monkeypatch.setattr(disk_room, "free_bytes", free_bytes)  # room again

    again = invoke("sweep", config, "--space", grid, "--name", "d")
    assert again.exit_code == 0, again.output
    rows = trials_of(tmp_path, "d")
    assert [r.state for r in rows] == ["COMPLETE", "COMPLETE"]
    assert sorted(r.params["train.lr"] for r in rows) == [0.01, 0.03]  # the stopped trial taken over, once
