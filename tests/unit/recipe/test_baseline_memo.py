"""A fresh adapter's step-0 evaluation is its base model's: computed by the first run, read by the next ones on the
same base, validation set and settings, and equal to what they would compute."""

import json

import pytest
from peft import LoraConfig, get_peft_model

from lorakit.recipe import baseline_memo
from lorakit.recipe.evaluation import TrainingEvaluator
from tests.conftest import build_model
from tests.unit.cli.test_train import invoke, make_config


def step_zero(run):
    evaluation = next(json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()
                      if '"eval_loss"' in line and json.loads(line).get("current_steps") == 0)
    answers = (run / "val_answers" / "step-000000.jsonl").read_text()
    return {k: v for k, v in evaluation.items() if k.startswith("eval_")}, answers


@pytest.fixture
def evaluations(monkeypatch):
    """The steps at which an evaluation was computed (not read from the memo)."""
    computed, real = [], TrainingEvaluator._evaluate

    def counting(self):
        computed.append(self)
        return real(self)

    monkeypatch.setattr(TrainingEvaluator, "_evaluate", counting)
    return computed


def test_the_next_run_reads_the_step_zero_evaluation_and_it_equals_a_computed_one(tmp_path, tiny_model_dir,
                                                                                  evaluations, monkeypatch):
    train = {"max_steps": 2, "eval_every": 1, "eval_metrics": ["loss", "exact"]}
    config = make_config(tmp_path, tiny_model_dir, train=train)
    assert invoke("train", config).exit_code == 0
    assert len(evaluations) == 3  # steps 0, 1 and 2
    evaluations.clear()
    assert invoke("train", config, "--set", "train.lr=0.001", "--set", "lora.r=4").exit_code == 0
    assert len(evaluations) == 2  # steps 1 and 2: step 0 was read
    runs = tmp_path / "runs"
    assert step_zero(runs / "tiny-v002") == step_zero(runs / "tiny-v001")

    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "another-cache"))  # the same run, nothing remembered
    evaluations.clear()
    assert invoke("train", config, "--set", "train.lr=0.001").exit_code == 0
    assert len(evaluations) == 3
    assert step_zero(runs / "tiny-v003") == step_zero(runs / "tiny-v001")  # to the last bit

    evaluations.clear()  # other evaluation settings: another key
    assert invoke("train", config, "--set", "train.eval_metrics=[loss]").exit_code == 0
    assert len(evaluations) == 3


def test_only_an_adapter_that_adds_nothing_is_taken_for_its_base():
    model = get_peft_model(build_model("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert baseline_memo.adds_nothing(model)
    next(p for n, p in model.named_parameters() if "lora_B" in n).data[0, 0] = 1e-3  # init_from, PiSSA: B != 0
    assert not baseline_memo.adds_nothing(model)
    dora = get_peft_model(build_model("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                          use_dora=True))
    assert not baseline_memo.adds_nothing(dora)  # its magnitudes rescale the base weights, not an exact sum
