"""Choosing the adapter: task metrics during training, early stopping, the best adapter kept (and kept across a
stop and resume), samples during training."""

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from lorakit.config import load_config
from lorakit.recipe.evaluation import TrainingEvaluator
from lorakit.recipe.run import resume_training, run_training
from tests.unit.cli.test_train import make_config
from tests.unit.train.test_resume import SignalAt

EVAL = {"val_size": 0.25}  # 6 of the 24 rows


@pytest.fixture
def scripted_eval(monkeypatch):
    """Validation losses chosen per step, so which step is best, and when patience runs out, is decided by the
    test, not by where a training trajectory happens to go on the installed packages."""
    values: dict[int, float] = {}

    def evaluate(self, step):
        return {"eval_loss": values[step]}

    monkeypatch.setattr(TrainingEvaluator, "__call__", evaluate)
    return values


def log_of(run):
    return [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]


def test_task_metrics_are_computed_at_every_evaluation_as_lorakit_eval_computes_them(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data=EVAL, tracking={"report_to": ["tensorboard"]},
                         train={"max_steps": 4, "eval_every": 2, "eval_metrics": ["loss", "exact", "chrf"],
                                "eval_generate_rows": 3})
    outcome = run_training(load_config(config))
    evals = [r for r in log_of(outcome.run_dir) if "eval_loss" in r]
    assert [r["current_steps"] for r in evals] == [0, 2, 4]
    assert all(0 <= r["eval_exact"] <= 1 and 0 <= r["eval_chrf"] <= 100 for r in evals)
    results = json.loads((outcome.run_dir / "all_results.json").read_text())
    assert {"eval_loss", "eval_exact", "eval_chrf", "eval_exact_before_training", "best_step"} <= set(results)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(outcome.run_dir / "tensorboard"))
    events.Reload()
    assert {"eval/loss", "eval/exact", "eval/chrf"} <= set(events.Tags()["scalars"])
    # The answers the metrics were computed from are kept by step, for people (the dashboard's run page).
    answers = {p.name: [json.loads(x) for x in p.read_text().splitlines()]
               for p in (outcome.run_dir / "val_answers").iterdir()}
    assert sorted(answers) == ["step-000000.jsonl", "step-000002.jsonl", "step-000004.jsonl"]
    assert all(len(rows) == 3 and set(rows[0]) == {"prompt", "reference", "output"} for rows in answers.values())
    from lorakit.infer.metrics import exact_match

    last = answers["step-000004.jsonl"]
    assert round(exact_match([r["output"] for r in last], [r["reference"] for r in last]), 4) == evals[-1]["eval_exact"]


def test_early_stopping_ends_the_run_with_its_reason_and_keeps_the_best_adapter_on_top(tmp_path, tiny_model_dir,
                                                                                    scripted_eval):
    scripted_eval.update({0: 5.0, 2: 4.0, 4: 3.0, 6: 3.5, 8: 3.2, 10: 2.0})  # best at 4; patience 2 ends it at 8
    config = make_config(tmp_path, tiny_model_dir, data=EVAL,
                         train={"epochs": 2, "eval_every": 2, "save_every": 2, "keep": "both",
                                "early_stopping": {"metric": "loss", "patience": 2}})
    outcome = run_training(load_config(config))
    run = outcome.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert outcome.status == "completed" and manifest["status_history"][-1]["reason"] == (
        "stopped early at step 8: loss did not improve for 2 evaluations; best step 4 (loss 3)")
    assert manifest["metrics"]["train_steps"] == 8 and manifest["metrics"]["best_step"] == 4
    assert manifest["adapter"] == {"top": "best", "step": 4, "last": "last/", "last_step": 8}
    top, last = load_file(run / "adapter_model.safetensors"), load_file(run / "last" / "adapter_model.safetensors")
    at_step = load_file(run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert top.keys() == at_step.keys() and all(torch.equal(top[k], at_step[k]) for k in top)  # bitwise step 4's
    assert not all(torch.equal(top[k], last[k]) for k in top)
    assert not (run / "best").exists()  # on top now
    assert "The adapter here is the **best** one, from step 4" in (run / "README.md").read_text()


def test_evaluations_and_checkpoints_per_epoch_fall_where_axolotl_puts_them(tmp_path, tiny_model_dir, scripted_eval):
    scripted_eval.update(dict.fromkeys(range(20), 1.0))
    config = make_config(tmp_path, tiny_model_dir, data={**EVAL, "packing": False},
                         train={"epochs": 2, "evals_per_epoch": 2, "saves_per_epoch": 2})
    outcome = run_training(load_config(config))
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["total_steps"] == 10  # 18 rows, 4 a step: 5 steps an epoch, which 2 do not divide
    evals = [r["current_steps"] for r in log_of(outcome.run_dir) if "eval_loss" in r]
    assert evals == [0, 3, 6, 9, 10]  # every ceil(5 / 2) = 3 steps, and the end
    assert sorted(p.name for p in (outcome.run_dir / "checkpoints").iterdir()) == [
        "checkpoint-3", "checkpoint-6", "checkpoint-9"]
    assert manifest["config"]["train"]["evals_per_epoch"] == 2  # the run records what was asked


def test_when_no_trained_step_beats_the_untrained_adapter_the_last_one_is_kept_and_said(tmp_path, tiny_model_dir,
                                                                                      scripted_eval):
    scripted_eval.update({0: 1.0, 2: 1.5, 4: 1.2, 6: 1.1})  # the untrained adapter (step 0) is the baseline
    config = make_config(tmp_path, tiny_model_dir, data=EVAL,
                         train={"epochs": 2, "eval_every": 2, "early_stopping": {"metric": "loss", "patience": 3}})
    outcome = run_training(load_config(config))
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    note = "no trained step beat the untrained adapter (loss 1 at step 0); the last adapter is kept"
    assert manifest["status_history"][-1]["reason"] == (
        f"stopped early at step 6: loss did not improve for 3 evaluations; {note}")
    assert manifest["adapter"] == {"top": "last", "step": 6, "note": note}
    assert "best_step" not in manifest["metrics"]
    last = load_file(outcome.run_dir / "adapter_model.safetensors")
    assert any(v.any() for k, v in last.items() if "lora_B" in k)  # trained, not the untrained step-0 adapter
    assert f"The adapter here is the **last** one, from step 6: {note}." in (outcome.run_dir / "README.md").read_text()


def test_a_run_continued_from_an_adapter_keeps_that_adapter_when_no_step_beats_it(tmp_path, tiny_model_dir,
                                                                                 scripted_eval):
    scripted_eval.update({0: 1.0, 2: 1.1, 4: 1.0})  # step 0, the adapter started from, stays best
    first = run_training(load_config(make_config(tmp_path, tiny_model_dir, train={"max_steps": 2})))
    config = make_config(tmp_path, tiny_model_dir, data=EVAL, lora={"init_from": str(first.run_dir)},
                         train={"max_steps": 4, "eval_every": 2, "keep": "both"})
    outcome = run_training(load_config(config))
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    note = "no trained step beat the adapter the run started from (loss 1 at step 0); that adapter is kept"
    assert manifest["adapter"] == {"top": "best", "step": 0, "last": "last/", "last_step": 4, "note": note}
    assert manifest["metrics"]["best_step"] == 0
    top, started = (load_file(run / "adapter_model.safetensors") for run in (outcome.run_dir, first.run_dir))
    assert top.keys() == started.keys() and all(torch.equal(top[k], started[k]) for k in top)  # bitwise
    last = load_file(outcome.run_dir / "last" / "adapter_model.safetensors")
    assert not all(torch.equal(last[k], started[k]) for k in last)  # the steps did train
    assert note in (outcome.run_dir / "README.md").read_text()


def test_a_stopped_run_resumes_with_its_best_adapter_and_stops_early_where_it_would_have(tmp_path, tiny_model_dir,
                                                                                        scripted_eval):
    scripted_eval.update({0: 9.0, 1: 8.0, 2: 7.0, 3: 6.5, 4: 7.5, 5: 7.2, 6: 7.0, 7: 6.0})  # best 3, stop at 6
    train = {"epochs": 2, "eval_every": 1, "keep": "both", "early_stopping": {"metric": "loss", "patience": 3}}
    config = make_config(tmp_path, tiny_model_dir, data=EVAL, train=train)
    whole = run_training(load_config(config))
    stopped = run_training(load_config(config), callbacks=[SignalAt(2, signal.SIGINT)])
    assert stopped.status == "interrupted"
    state = torch.load(stopped.run_dir / "resume_state.pt", weights_only=True)
    assert state["selection"]["best_step"] == 2 and state["best_adapter"] is not None
    resumed = resume_training(stopped.run_dir)
    a, b = (json.loads((r.run_dir / "manifest.json").read_text()) for r in (whole, resumed))
    assert a["status_history"][-1]["reason"] == b["status_history"][-1]["reason"] == (
        "stopped early at step 6: loss did not improve for 3 evaluations; best step 3 (loss 6.5)")
    assert a["metrics"]["best_step"] == b["metrics"]["best_step"] == 3
    for name in ("adapter_model.safetensors", "last/adapter_model.safetensors"):
        wa, wb = load_file(whole.run_dir / name), load_file(resumed.run_dir / name)
        # the same ops in the same order on the CPU, continued from the saved state: equal to float32 rounding
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-6, atol=1e-6) for k in wa)


class Killed(BaseException):
    """The process dying (kill -9) right after the resume state reached the disk."""


def test_killed_right_after_the_resume_state_at_an_evaluation_step_resumes_with_that_evaluation(
        tmp_path, tiny_model_dir, scripted_eval, monkeypatch):
    import lorakit.train.resume as resume

    scripted_eval.update({0: 5.0, 2: 4.0, 4: 3.0, 6: 3.5, 8: 3.6, 10: 3.7})  # best at 4, the step of the kill
    config = make_config(tmp_path, tiny_model_dir, data=EVAL,
                         train={"epochs": 2, "eval_every": 2, "resumable": True, "resume_every": 2, "keep": "best"})
    whole = run_training(load_config(config))
    real_save = resume.save_resume_state

    def save_then_die(run_dir, model, optimizer, scheduler, result, *args, **kwargs):
        path = real_save(run_dir, model, optimizer, scheduler, result, *args, **kwargs)
        if result.steps_done == 4:
            raise Killed
        return path

    monkeypatch.setattr(resume, "save_resume_state", save_then_die)
    with pytest.raises(Killed):
        run_training(load_config(config))
    monkeypatch.setattr(resume, "save_resume_state", real_save)
    resumed = resume_training(tmp_path / "runs" / "tiny-v002")
    evaluated = [[r["current_steps"] for r in log_of(o.run_dir) if "eval_loss" in r] for o in (whole, resumed)]
    assert evaluated[0] == evaluated[1] == [0, 2, 4, 6, 8, 10]
    a, b = (json.loads((o.run_dir / "manifest.json").read_text()) for o in (whole, resumed))
    assert a["metrics"]["best_step"] == b["metrics"]["best_step"] == 4  # not 6: the step-4 evaluation was kept
    wa, wb = (load_file(o.run_dir / "adapter_model.safetensors") for o in (whole, resumed))
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-6, atol=1e-6) for k in wa)


def test_a_small_validation_share_of_few_rows_still_evaluates(tmp_path, tiny_model_dir, scripted_eval):
    from tests.conftest import ALPACA_ROWS, write_jsonl

    scripted_eval.update({0: 3.0, 2: 2.0, 4: 1.0})
    config = make_config(tmp_path, tiny_model_dir, data={"val_size": 0.04},
                         train={"max_steps": 4, "eval_every": 2, "early_stopping": {"metric": "loss", "patience": 1}})
    write_jsonl(tmp_path / "train.jsonl", ALPACA_ROWS[:10])  # 0.04 x 10 rounds to 0 rows: one is held out
    outcome = run_training(load_config(config))
    assert [r["current_steps"] for r in log_of(outcome.run_dir) if "eval_loss" in r] == [0, 2, 4]
    assert json.loads((outcome.run_dir / "manifest.json").read_text())["metrics"]["best_step"] == 4


def test_samples_are_written_at_each_evaluation_and_shown_first_best_last(tmp_path, tiny_model_dir):
    (tmp_path / "prompts.txt").write_text("what is the capital of france ?\nsay hello\n")
    config = make_config(tmp_path, tiny_model_dir, data=EVAL,
                         train={"max_steps": 4, "eval_every": 2, "sample_prompts": "prompts.txt", "keep": "best"})
    outcome = run_training(load_config(config))
    files = sorted(p.name for p in (outcome.run_dir / "samples").iterdir())
    assert files == ["step-000000.jsonl", "step-000002.jsonl", "step-000004.jsonl"]
    rows = [json.loads(line) for line in (outcome.run_dir / "samples" / "step-000004.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["what is the capital of france ?", "say hello"]
    card = (outcome.run_dir / "README.md").read_text()
    assert "## Samples" in card and "first (step 0)" in card and "last (step 4)" in card
    copied = json.loads((outcome.run_dir / "manifest.json").read_text())["copied_files"]
    assert any(c["copy"] == "files/prompts.txt" and len(c["sha256"]) == 64 for c in copied.values())


def test_a_sample_prompt_longer_than_the_models_context_stops_the_run_before_its_first_step(tmp_path,
                                                                                           tiny_model_dir):
    from lorakit.errors import DataError

    (tmp_path / "prompts.txt").write_text("say hello\n" + "x + y " * 300 + "\n")  # the tiny model's context: 256
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "sample_prompts": "prompts.txt"})
    with pytest.raises(DataError, match=r"prompts.txt: prompt 2 of 2 is [0-9,]+ tokens with its prompt, longer than "
                                        r"the model's context \(256 tokens\); shorten it$"):
        run_training(load_config(config))
    run = tmp_path / "runs" / "tiny-v001"
    assert not (run / "trainer_log.jsonl").exists() or "current_steps" not in (run / "trainer_log.jsonl").read_text()


def test_a_generated_metric_without_its_package_is_one_line_with_the_install(tmp_path, tiny_model_dir, monkeypatch):
    import importlib.util

    from lorakit.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "typst" else real(name, *a))
    config = make_config(tmp_path, tiny_model_dir, data=EVAL, train={"eval_metrics": ["loss", "typst"]})
    with pytest.raises(ConfigError, match=r"train.eval_metrics: typst needs the typst package: pip install "
                                          r"'lorakit\[eval\]'"):
        run_training(load_config(config))
    assert not (tmp_path / "runs").exists()


def test_an_evaluation_decodes_past_the_starts_its_loss_pass_proved(tmp_path, tiny_model_dir, monkeypatch):
    """The validation loss and the answers' proven starts come from one pass; the decoder is handed those starts,
    the references and the last evaluation's answers to draft from, and the answers kept are the ones
    ``lorakit eval`` writes for the same adapter and cases."""
    import lorakit.infer.drafts as drafts
    import lorakit.infer.generate as generate
    import lorakit.recipe.evaluation as evaluation
    from lorakit.infer.evaluate import score
    from lorakit.infer.load import load_adapter

    passes, handed, scored = [], [], []
    real_pass, real_decode = drafts.loss_and_greedy_starts, generate._generate_torch

    def loss_pass(*args, **kwargs):
        passes.append(real_pass(*args, **kwargs))
        return passes[-1]

    def scoring(adapter, cases, *args, **kwargs):
        scored.append(cases)
        return score(adapter, cases, *args, **kwargs)

    monkeypatch.setattr(drafts, "loss_and_greedy_starts", loss_pass)
    monkeypatch.setattr(evaluation, "score", scoring)
    monkeypatch.setattr(generate, "_generate_torch",
                        lambda a, r, o: handed.append(r) or real_decode(a, r, o))
    config = make_config(tmp_path, tiny_model_dir, data=EVAL,
                         train={"max_steps": 2, "eval_every": 2, "eval_metrics": ["loss", "exact"]})
    outcome = run_training(load_config(config))

    evals = [r for r in log_of(outcome.run_dir) if "eval_loss" in r]
    assert len(passes) == len(evals) == len(handed) == 2  # steps 0 and 2: one pass each, its starts used
    first = [json.loads(x) for x in (outcome.run_dir / "val_answers" / "step-000000.jsonl").read_text().splitlines()]
    adapter = load_adapter(outcome.run_dir.name, outcome.run_dir.parent)
    earlier = [[], [adapter.tokenizer.encode(r["output"], add_special_tokens=False) for r in first]]
    for (_, starts), requests, answers in zip(passes, handed, earlier, strict=True):
        # the proven starts; the references, then (from the second evaluation on) the last answers as drafts
        assert [(r.known, r.hint) for r in requests] == [
            (starts.after(r.prompt), starts.reference(r.prompt) + (answers[i] if answers else []))
            for i, r in enumerate(requests)]
        assert all(r.hint for r in requests)
    assert any(earlier[1])
    last = [json.loads(x) for x in (outcome.run_dir / "val_answers" / "step-000002.jsonl").read_text().splitlines()]
    _, alone = score(adapter, scored[-1], ["exact"], max_new_tokens=256, cap_at_reference=True)
    assert [r["output"] for r in last] == alone
