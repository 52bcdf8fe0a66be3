"""Choosing the adapter: task metrics during training, early stopping, the best adapter kept (and kept across a
stop and resume), samples during training."""

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from lorakit.config import load_config
from lorakit.recipe.run import resume_training, run_training
from tests.unit.cli.test_train import make_config
from tests.unit.train.test_resume import SignalAt

EVAL = {"val_size": 0.25}  # 6 of the 24 rows


def conflicting_eval(tmp_path):
    """Validation rows that ask the training questions but expect other answers: as the adapter learns the
    training answers, their loss first falls (the format) and then rises, so the best step is mid-run."""
    from tests.conftest import ALPACA_ROWS, write_jsonl

    answers = ["red green blue", "cat sat on mat", "one two three", "yes no"]
    rows = [{**row, "output": answers[i % 4]} for i, row in enumerate(ALPACA_ROWS[:4])]
    write_jsonl(tmp_path / "dev.jsonl", rows)
    return {"eval": "dev.jsonl", "val_size": 0.0}


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


def test_early_stopping_ends_the_run_with_its_reason_and_keeps_the_best_adapter_on_top(tmp_path, tiny_model_dir):
    # Nothing improves by 100: the baseline (step 0, the untrained adapter) stays best, and patience runs out.
    config = make_config(tmp_path, tiny_model_dir, data=EVAL,
                         train={"epochs": 3, "eval_every": 2, "keep": "both",
                                "early_stopping": {"metric": "loss", "patience": 2, "min_delta": 100}})
    outcome = run_training(load_config(config))
    run = outcome.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert outcome.status == "completed" and manifest["status_history"][-1]["reason"] == (
        "stopped early at step 4: loss did not improve for 2 evaluations; best step 0 "
        f"(loss {manifest['metrics']['best_value']:.4g})")
    assert manifest["metrics"]["train_steps"] == 4 and manifest["metrics"]["best_step"] == 0
    assert manifest["adapter"] == {"top": "best", "step": 0, "last": "last/", "last_step": 4}
    top, last = load_file(run / "adapter_model.safetensors"), load_file(run / "last" / "adapter_model.safetensors")
    assert all(not v.any() for k, v in top.items() if "lora_B" in k)  # the untrained adapter: B starts at zero
    assert any(v.any() for k, v in last.items() if "lora_B" in k)
    assert not (run / "best").exists()  # on top now
    assert "The adapter here is the **best** one, from step 0" in (run / "README.md").read_text()


def test_the_best_adapter_is_bitwise_the_adapter_of_its_step(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, data=conflicting_eval(tmp_path),
                         train={"max_steps": 12, "eval_every": 1, "save_every": 1, "keep": "best", "lr": 0.05})
    outcome = run_training(load_config(config))
    best = json.loads((outcome.run_dir / "all_results.json").read_text())["best_step"]
    evals = {r["current_steps"]: r["eval_loss"] for r in log_of(outcome.run_dir) if "eval_loss" in r}
    # mid-run, so checkpoints (every step but the last) hold its adapter too
    assert best == min(evals, key=evals.get) and 0 < best < 12, evals
    top = load_file(outcome.run_dir / "adapter_model.safetensors")
    at_step = load_file(outcome.run_dir / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert top.keys() == at_step.keys() and all(torch.equal(top[k], at_step[k]) for k in top)


def test_a_stopped_run_resumes_with_its_best_adapter_and_stops_early_where_it_would_have(tmp_path, tiny_model_dir):
    train = {"epochs": 4, "eval_every": 1, "lr": 0.05, "keep": "both",
             "early_stopping": {"metric": "loss", "patience": 3}}
    config = make_config(tmp_path, tiny_model_dir, data=conflicting_eval(tmp_path), train=train)
    whole = run_training(load_config(config))
    stopped = run_training(load_config(config), callbacks=[SignalAt(2, signal.SIGINT)])
    assert stopped.status == "interrupted"
    state = torch.load(stopped.run_dir / "resume_state.pt", weights_only=True)
    assert state["selection"]["best_step"] is not None and state["best_adapter"] is not None
    resumed = resume_training(stopped.run_dir)
    a, b = (json.loads((r.run_dir / "manifest.json").read_text()) for r in (whole, resumed))
    assert a["status_history"][-1]["reason"].startswith("stopped early at step")  # before its 48 planned steps
    assert a["status_history"][-1]["reason"] == b["status_history"][-1]["reason"]
    assert a["metrics"]["best_step"] == b["metrics"]["best_step"]
    for name in ("adapter_model.safetensors", "last/adapter_model.safetensors"):
        wa, wb = load_file(whole.run_dir / name), load_file(resumed.run_dir / name)
        # the same ops in the same order on the CPU, continued from the saved state: equal to float32 rounding
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-6, atol=1e-6) for k in wa)


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
