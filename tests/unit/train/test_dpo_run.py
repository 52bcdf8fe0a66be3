"""DPO runs end to end on a tiny model: what the run folder says, resume after a stop or a kill, the
out-of-memory ladder keeping the pairs of each step."""

import json
import signal

import pytest
import yaml

from lorakit.config import load_config
from lorakit.faults import ENV as FAULTS
from lorakit.recipe.run import resume_training, run_training
from tests.conftest import write_jsonl
from tests.unit.cli.test_train import invoke, make_config
from tests.unit.train.test_resume import SignalAt, assert_same_run, kill_after_step_4

SUMS = [("two", "two", "four", "five"), ("one", "two", "three", "six"), ("two", "one", "three", "seven"),
        ("one", "one", "two", "nine"), ("three", "one", "four", "ten"), ("five", "one", "six", "red"),
        ("two", "three", "five", "cat"), ("one", "three", "four", "dog")]
PAIRS = [{"prompt": [{"role": "user", "content": f"what is {a} plus {b} ?"}],
          "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": bad}]}
         for a, b, good, bad in SUMS] * 2


def dpo_config(tmp_path, model_dir, **train):
    config = make_config(tmp_path, model_dir, train={"method": "dpo", "lr": 0.01, **train}, dpo={"beta": 0.2})
    write_jsonl(tmp_path / "train.jsonl", PAIRS)  # make_config wrote alpaca rows; these are the pairs
    data = yaml.safe_load(config.read_text())
    data["data"]["val_size"] = 4
    config.write_text(yaml.safe_dump(data))
    return config


def log_lines(run_dir):
    return [json.loads(x) for x in (run_dir / "trainer_log.jsonl").read_text().splitlines()]


def test_a_dpo_run_logs_trls_names_keeps_the_best_by_accuracy_and_says_it_is_dpo(tmp_path, tiny_model_dir):
    config = dpo_config(tmp_path, tiny_model_dir, max_steps=6, log_every=1, eval_every=2, keep="best",
                        best_metric="rewards/accuracies")
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    assert "step 1/6 | loss 0.6931 | acc 0.00 | margin 0.000 | lr" in result.output  # the adapter is its reference
    run = tmp_path / "runs" / "tiny-v001"
    lines = log_lines(run)
    steps = [x for x in lines if "loss" in x]
    evals = [x for x in lines if "eval_loss" in x]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected"} <= set(steps[0])
    assert steps[0]["loss"] == pytest.approx(0.693147, abs=1e-5)  # log 2: the adapter starts as its reference
    # at step 0 the adapter is its reference: no reward either way
    assert evals[0]["current_steps"] == 0 and evals[0]["eval_rewards/margins"] == 0
    assert evals[-1]["eval_rewards/accuracies"] > 0.5 and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["train"]["method"] == "dpo"
    assert manifest["metrics"]["best_metric"] == "eval_rewards/accuracies"
    assert "by preference pairs (**DPO**, sigmoid loss, beta 0.2)" in (run / "README.md").read_text()
    assert json.loads((run / "reference_logps.json").read_text())["train"]["pairs_sha256"]


def test_sft_rows_under_dpo_are_one_line_and_no_run_folder(tmp_path, tiny_model_dir):
    config = dpo_config(tmp_path, tiny_model_dir, max_steps=2)
    write_jsonl(tmp_path / "train.jsonl", [{"instruction": "q", "output": "a"}] * 8)
    result = invoke("train", config)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "rows are not preference pairs" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "runs").exists()


SETTINGS = {"max_steps": 8, "log_every": 1, "eval_every": 3, "resumable": True, "resume_every": 2}


def test_a_stopped_dpo_run_resumes_to_the_uninterrupted_weights(tmp_path, tiny_model_dir):
    config = dpo_config(tmp_path, tiny_model_dir, **SETTINGS)
    whole = run_training(load_config(config))
    stopped = run_training(load_config(config), callbacks=[SignalAt(3, signal.SIGINT)])
    assert stopped.status == "interrupted"
    resumed = resume_training(stopped.run_dir)
    assert resumed.status == "completed"
    assert_same_run(whole.run_dir, resumed.run_dir)  # weights, and every step's loss and eval loss


def test_a_killed_dpo_run_resumes_from_its_rolling_state_and_its_reference(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from lorakit.cli.main import cli

    config = dpo_config(tmp_path, tiny_model_dir, **SETTINGS)
    assert invoke("train", config).exit_code == 0  # tiny-v001: uninterrupted
    run = tmp_path / "runs" / "tiny-v002"
    kill_after_step_4(config, tmp_path, run)  # the rolling state and the reference file survive
    result = CliRunner().invoke(cli, ["train", "--resume", "tiny-v002"])
    assert result.exit_code == 0, result.output
    assert "reference log-probabilities read from reference_logps.json" in result.output
    assert_same_run(tmp_path / "runs" / "tiny-v001", run)


def test_the_out_of_memory_ladder_keeps_the_pairs_of_each_step(tmp_path, tiny_model_dir, monkeypatch):
    small = dpo_config(tmp_path, tiny_model_dir, micro_batch_size=1, grad_accum=4, epochs=2, log_every=1)
    assert invoke("train", small).exit_code == 0
    expected = [x for x in log_lines(tmp_path / "runs" / "tiny-v001") if "loss" in x]
    monkeypatch.setenv(FAULTS, "oom-tokens:40")  # a micro-batch of 4 pairs does not fit, one of 2 may
    squeezed = dpo_config(tmp_path, tiny_model_dir, micro_batch_size=4, grad_accum=1, epochs=2, log_every=1)
    result = invoke("train", squeezed)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "runs" / "tiny-v002" / "manifest.json").read_text())
    assert manifest["attempts"][1]["change"] == "micro_batch_size 4 -> 2, grad_accum 1 -> 2"
    steps = [x for x in log_lines(tmp_path / "runs" / "tiny-v002") if "loss" in x]
    assert [x["current_steps"] for x in steps] == [x["current_steps"] for x in expected]
    for got, want in zip(steps, expected, strict=True):
        # the same pairs per step, summed in another order; AdamW carries the rounding into later steps
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-6)
        assert got["rewards/accuracies"] == want["rewards/accuracies"]


def test_a_sweep_over_beta_ranks_dpo_trials_by_held_out_preference_accuracy(tmp_path, tiny_model_dir):
    from tests.unit.sweep.test_sweep import invoke as sweep_invoke
    from tests.unit.sweep.test_sweep import space, trials_of

    config = dpo_config(tmp_path, tiny_model_dir, max_steps=3, eval_every=1, log_every=1)
    grid = space(tmp_path, **{"dpo.beta": [0.1, 0.5], "metric": "rewards/accuracies", "sampler": "grid",
                              "pruner": "none"})
    result = sweep_invoke("sweep", config, "--space", grid, "--name", "b")
    assert result.exit_code == 0, result.output
    rows = trials_of(tmp_path, "b")
    assert sorted(r.params["dpo.beta"] for r in rows) == [0.1, 0.5] and all(r.state == "COMPLETE" for r in rows)
    for row in rows:
        manifest = json.loads((tmp_path / row.run_dir / "manifest.json").read_text())
        assert manifest["config"]["dpo"]["beta"] == row.params["dpo.beta"]
        assert manifest["config"]["train"]["method"] == "dpo"
        evals = [x for x in log_lines(tmp_path / row.run_dir) if "eval_rewards/accuracies" in x]
        assert row.value == max(x["eval_rewards/accuracies"] for x in evals[1:])  # the best trained evaluation


def test_the_planner_prices_both_sides_of_each_pair(tmp_path, tiny_model_dir):
    from lorakit.data.dataset import build_datasets
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model
    from lorakit.plan.lengths import read_lengths

    cfg = load_config(dpo_config(tmp_path, tiny_model_dir, micro_batch_size=2, grad_accum=1)).config
    lengths = read_lengths(cfg)
    pairs = build_datasets(cfg.data, load_tokenizer(resolve_model(str(tiny_model_dir))), "dpo").train
    assert lengths.lengths == tuple(sorted((len(p.chosen) + len(p.rejected) for p in pairs), reverse=True))
    assert lengths.sequences == 2 and "pairs (both sides)" in lengths.describe()
    # another micro-batch size: its four longest pairs, both sides each
    assert lengths.tokens(4, cfg.data.max_length) == sum(lengths.lengths[:4])


def test_tensorboard_and_mlflow_get_the_rewards_under_trls_names(tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = dpo_config(tmp_path, tiny_model_dir, max_steps=3, log_every=1)
    data = yaml.safe_load(config.read_text())
    data["tracking"] = {"report_to": ["tensorboard", "mlflow"]}
    config.write_text(yaml.safe_dump(data))
    assert invoke("train", config).exit_code == 0
    run = tmp_path / "runs" / "tiny-v001"
    logged = {x["current_steps"]: x for x in log_lines(run) if "loss" in x}
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    record = json.loads((run / "manifest.json").read_text())["trackers"]["mlflow"]
    client = MlflowClient(record["uri"])
    for name in ("rewards/accuracies", "rewards/margins", "logps/chosen"):
        board = {e.step: e.value for e in events.Scalars(f"train/{name}")}
        flow = {m.step: m.value for m in client.get_metric_history(record["run_id"], name)}
        assert board.keys() == flow.keys() == logged.keys()
        # float32 in both trackers, six decimals in the log
        assert all(board[s] == pytest.approx(logged[s][name], abs=1e-5) for s in logged)
        assert all(flow[s] == pytest.approx(logged[s][name], abs=1e-5) for s in logged)
    assert {e.step for e in events.Scalars("eval/rewards/accuracies")}  # held-out pairs too


def test_only_the_pairs_the_steps_train_on_are_measured_and_a_stopped_run_resumes_with_them(tmp_path,
                                                                                             tiny_model_dir):
    # 12 training pairs, 4 a step (2 x 2): 2 steps train on 8 of them, the other 4 are in no step
    settings = {**SETTINGS, "max_steps": 2, "eval_every": 0, "resume_every": 1}
    config = dpo_config(tmp_path, tiny_model_dir, **settings)
    whole = run_training(load_config(config))
    saved = json.loads((whole.run_dir / "reference_logps.json").read_text())
    assert [v is None for v in saved["train"]["logps"]].count(True) == 4 and len(saved["train"]["logps"]) == 12
    assert all(v is not None for v in saved["eval"]["logps"])
    first = next(x for x in log_lines(whole.run_dir) if "loss" in x)
    assert first["loss"] == pytest.approx(0.693147, abs=1e-5)  # each trained pair's reference is the model's
    stopped = run_training(load_config(config), callbacks=[SignalAt(1, signal.SIGINT)])
    assert stopped.status == "interrupted"
    resumed = resume_training(stopped.run_dir)  # reads the reference back, the nulls included
    assert resumed.status == "completed"
    assert_same_run(whole.run_dir, resumed.run_dir, steps=2)
