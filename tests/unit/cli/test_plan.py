"""lorakit plan on a tiny model, and train.oom.auto_plan through lorakit train."""

import json

import pytest

from lorakit.config.load import load_config
from lorakit.plan.estimate import GiB, estimate_memory
from lorakit.plan.lengths import read_lengths
from lorakit.plan.report import PlanInputs, build_plan, setup_for
from tests.unit.cli.test_train import invoke, make_config


def test_plan_prints_the_breakdown_and_what_fits(tmp_path, tiny_model_dir):
    result = invoke("plan", make_config(tmp_path, tiny_model_dir), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "peak (estimate)" in result.output and "base weights" in result.output
    assert "what fits common budgets" in result.output and "24 GiB" in result.output
    result = invoke("plan", make_config(tmp_path, tiny_model_dir), "--memory", "4GiB", "--device", "cuda")
    assert result.exit_code == 0, result.output
    assert "# budget 4.00 GiB: the config as written fits" in result.output
    assert "checkpointing + nf4" in result.output  # the 4-bit options are priced on a GPU


def test_plan_reads_the_budget_from_the_config(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"memory_budget": "3GiB"})
    result = invoke("plan", config, "--device", "cpu")
    assert "# budget 3.00 GiB" in result.output


@pytest.mark.parametrize("command", ["plan", "train"])
def test_a_budget_that_cannot_hold_the_model_says_so_with_the_numbers(tmp_path, tiny_model_dir, command):
    train = {"memory_budget": "200MiB", "oom": {"auto_plan": True}}
    result = invoke(command, make_config(tmp_path, tiny_model_dir, train=train))
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: a memory budget of 0.20 GiB cannot hold this run: framework 0.")
    assert "+ base weights 0.00 + adapter + grads + AdamW 0.00 + loss chunk 0.00 = 0." in line
    assert "before any activations" in line and "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--memory", "lots"], "error: --memory: not a memory size (got 'lots')"),
    (["--set", "train.memory_budget=lots"], "train.memory_budget"),
    (["--set", "train.oom.auto_plan=true"], "train.oom.auto_plan needs train.memory_budget"),
])
def test_bad_budgets_are_config_errors(tmp_path, tiny_model_dir, args, message):
    result = invoke("plan", make_config(tmp_path, tiny_model_dir), *args)
    assert result.exit_code == 2 and message in result.output


def test_auto_plan_starts_from_the_micro_batch_that_fits(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"micro_batch_size": 4, "grad_accum": 1},
                         output={"name": "planned"})
    cfg = load_config(config).config
    # A budget in which the 2 longest examples fit and the 3 longest do not (the run plans from the data's lengths).
    inputs = PlanInputs.of(cfg, read_lengths(cfg))
    facts = build_plan(inputs, "cpu").facts
    setup = setup_for(inputs, "cpu")
    fits, fails = (estimate_memory(facts, setup.changed(micro_batch_size=n)).total for n in (2, 3))
    budget = f"{(fits + fails) / 2 / GiB:.6f}GiB"
    result = invoke("train", config, "--set", f"train.memory_budget={budget}", "--set", "train.oom.auto_plan=true")
    assert result.exit_code == 0, result.output
    assert "train.oom.auto_plan: planned for train.memory_budget" in result.output
    manifest = json.loads((tmp_path / "runs" / "planned-v001" / "manifest.json").read_text())
    first = manifest["attempts"][0]
    assert first["change"].startswith("planned for train.memory_budget")
    assert "micro_batch_size 4 -> 2, grad_accum 1 -> 2" in first["change"]
    assert "micro_batch_size=2 grad_accum=2 gradient_checkpointing=false" in first["settings"]
    assert manifest["memory_plan"]["micro_batch_size"] == 2
    assert manifest["memory_plan"]["planned_estimate_gib"] <= manifest["memory_plan"]["budget_gib"]
    assert manifest["status"] == "completed"


def test_plan_prices_the_real_lengths_of_the_data(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data={"max_length": 512})
    from_data = invoke("plan", config, "--device", "cpu")
    assert from_data.exit_code == 0, from_data.output
    assert "# priced from the training data: 18 examples, longest" in from_data.output
    worst = invoke("plan", config, "--device", "cpu", "--no-data")
    assert "every row priced at max_length" in worst.output

    def priced_tokens(output):  # "activations  0.00 GiB   1024 tokens x 97 KiB (...)"
        line = next(line for line in output.splitlines() if line.strip().startswith("activations"))
        return int(line.split("GiB")[1].split()[0])

    assert priced_tokens(worst.output) == 2 * 512
    # The tiny rows are far shorter than 512 tokens; two of the longest are the most a micro-batch can hold.
    assert 0 < priced_tokens(from_data.output) < 2 * 512 / 4


def test_plan_without_readable_data_prices_full_rows_and_says_why(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir)
    (tmp_path / "train.jsonl").write_text("{not json\n")
    result = invoke("plan", config, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# not reading the training data (")
    assert "train.jsonl" in result.output.splitlines()[0]
    assert "every row priced at max_length" in result.output
