import json
from types import SimpleNamespace

import pytest
import torch

from lorakit.config.schema import DataSection, LoraSection, TrainSection
from lorakit.data.tokenize import IGNORE, Example
from lorakit.errors import TrainingError
from lorakit.model.adapters import attach_adapter
from lorakit.runs.trainer_log import JsonlMetrics
from lorakit.train.evaluate import evaluate_loss
from lorakit.train.loop import LoopSetup, run_loop
from lorakit.train.optim import build_optimizer, build_scheduler
from lorakit.train.plan import plan_steps, with_epoch_cadence
from tests.conftest import build_model

EXAMPLES = [Example([2, 10 + i, 20 + i, 30, 31, 1], [IGNORE, IGNORE, 20 + i, 30, 31, 1]) for i in range(12)]


def train_once(tmp_path=None, callbacks=(), examples=EXAMPLES, kind="llama", **train_kwargs):
    model, setup, steps = loop_setup(examples, kind, **train_kwargs)
    setup.callbacks = list(callbacks)
    return model, run_loop(setup, steps)


def loop_setup(examples=EXAMPLES, kind="llama", **train_kwargs):
    """A tiny model, its optimizer and the planned steps, evaluated on the first three examples."""
    from accelerate import Accelerator

    train = TrainSection(**{"lr": 1e-2, "warmup_ratio": 0.0, "epochs": 2, "micro_batch_size": 4, "grad_accum": 1,
                            **train_kwargs})
    data = DataSection(train=["unused"])
    torch.manual_seed(train.seed)
    model = attach_adapter(build_model(kind), LoraSection(r=4, alpha=8))
    optimizer = build_optimizer(model, train)
    steps = plan_steps(examples, train, data)
    scheduler = build_scheduler(optimizer, train, len(steps))
    accelerator = Accelerator(cpu=True)

    def evaluate(step):
        return {"eval_loss": evaluate_loss(model, [examples[:3]], 0, train.loss_chunk_tokens, accelerator.device)}

    return model, LoopSetup(model, optimizer, scheduler, accelerator, train, 0, evaluate=evaluate), steps


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_lora_training_learns_and_leaves_base_weights_alone(kind):
    from peft import get_peft_model_state_dict

    base = build_model(kind).state_dict()
    model, result = train_once(kind=kind, epochs=10)
    assert result.status == "completed"
    assert result.history[-1]["loss"] < 0.6 * result.history[0]["loss"]
    assert result.eval_history[-1]["eval_loss"] < result.eval_history[0]["eval_loss"]
    for name, value in model.get_base_model().state_dict().items():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            torch.testing.assert_close(value, base[key], rtol=0, atol=0, msg=name)  # frozen: not one bit moves
    assert any(v.abs().sum() > 0 for k, v in get_peft_model_state_dict(model).items() if "lora_B" in k)


def test_the_same_config_twice_gives_the_same_loss_curve():
    _, first = train_once()
    _, second = train_once()
    assert [m["loss"] for m in first.history] == [m["loss"] for m in second.history]


def test_splitting_a_step_into_smaller_micro_batches_changes_nothing():
    """Token-weighted steps: micro-batch 4 x accumulation 1 == micro-batch 1 x accumulation 4."""
    uneven = [Example([2, 5, *range(40, 40 + n), 1], [IGNORE, IGNORE, *range(40, 40 + n), 1]) for n in range(1, 9)]
    _, whole = train_once(examples=uneven, micro_batch_size=4, grad_accum=1, epochs=1)
    _, split = train_once(examples=uneven, micro_batch_size=1, grad_accum=4, epochs=1)
    assert len(whole.history) == len(split.history) == 2
    for a, b in zip(whole.history, split.history, strict=True):
        # the same token-weighted sum, accumulated over 4 micro-batches instead of 1: float32 rounding only
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_deferred_reporting_on_an_async_device_reports_every_step_the_same(monkeypatch):
    """On a GPU, losses are read at log steps only; every step still reaches the history in order."""
    import lorakit.train.loop as loop

    class Seen:
        steps: list[int] = []  # noqa: RUF012
        def on_train_begin(self, total_steps): pass
        def on_evaluate(self, metrics): pass
        def on_train_end(self, status): pass
        def on_step_end(self, metrics): Seen.steps.append(metrics["step"])

    _, eager = train_once(log_every=4)
    monkeypatch.setattr(loop, "REPORT_EVERY_STEP_ON", ())
    _, deferred = train_once(callbacks=[Seen()], log_every=4)
    assert Seen.steps == list(range(1, 7))
    assert [(m["step"], m["loss"], m["grad_norm"]) for m in deferred.history] == \
        [(m["step"], m["loss"], m["grad_norm"]) for m in eager.history]
    with pytest.raises(TrainingError) as deferred_error:
        train_once(lr=1e30, max_grad_norm=0.0, epochs=3, log_every=5)
    monkeypatch.undo()
    with pytest.raises(TrainingError) as eager_error:
        train_once(lr=1e30, max_grad_norm=0.0, epochs=3, log_every=5)
    assert str(deferred_error.value) == str(eager_error.value)


def test_steps_follow_epochs_and_max_steps():
    data = DataSection(train=["unused"])
    assert len(plan_steps(EXAMPLES, TrainSection(micro_batch_size=4, grad_accum=1, epochs=2), data)) == 6
    assert len(plan_steps(EXAMPLES, TrainSection(micro_batch_size=4, grad_accum=2, epochs=0.5), data)) == 1
    assert len(plan_steps(EXAMPLES, TrainSection(micro_batch_size=4, grad_accum=1, max_steps=7), data)) == 7


def test_a_non_finite_loss_stops_the_run_naming_the_step():
    # Whether a blown-up loss first reads inf or nan depends on the installed torch's kernels: both stop the run.
    with pytest.raises(TrainingError, match=r"loss diverged at step \d+ \(loss=(nan|-?inf)\)"):
        train_once(lr=1e30, max_grad_norm=0.0, epochs=3)


def test_ctrl_c_stops_cleanly_and_reports_interrupted(tmp_path):
    class StopAtTwo:
        def on_train_begin(self, total_steps): pass
        def on_evaluate(self, metrics): pass
        def on_train_end(self, status): self.status = status
        def on_step_end(self, metrics):
            if metrics["step"] == 2:
                raise KeyboardInterrupt

    stopper = StopAtTwo()
    _, result = train_once(callbacks=[stopper])
    assert (result.status, result.steps_done, stopper.status) == ("interrupted", 2, "interrupted")


def test_trainer_log_has_a_line_per_logged_step_and_eval(tmp_path):
    path = tmp_path / "trainer_log.jsonl"
    each_step = []
    recorder = SimpleNamespace(on_train_begin=lambda total: None, on_train_end=lambda status: None,
                               on_evaluate=lambda m: None, on_samples=lambda step, samples: None,
                               on_step_end=lambda m: each_step.append(m["loss"]))
    train_once(callbacks=[JsonlMetrics(path, log_every=2), recorder], eval_every=4)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [r["current_steps"] for r in records if "loss" in r]
    evals = [r["current_steps"] for r in records if "eval_loss" in r]
    assert steps == [2, 4, 6]
    # a line's loss is the mean of the steps since the line before, as the Hugging Face trainer logs it
    # (abs 1e-6: the log rounds to 6 decimals)
    assert len(set(each_step)) == 6
    assert [r["loss"] for r in records if "loss" in r] == pytest.approx(
        [(each_step[i] + each_step[i + 1]) / 2 for i in (0, 2, 4)], abs=1e-6)
    assert evals == [0, 4, 6]
    for r in records:
        assert {"current_steps", "total_steps", "epoch", "percentage", "elapsed_time", "remaining_time"} <= set(r)
    assert {"loss", "lr", "tokens_per_second"} <= set(records[1])


def test_the_time_left_counts_the_steps_at_their_own_pace_and_each_evaluation_still_due(monkeypatch):
    # a clock that only the optimizer steps (1 s each, as their schedule moves) and the evaluations (100 s each) move
    now = [0.0]
    monkeypatch.setattr("lorakit.train.loop.time", SimpleNamespace(perf_counter=lambda: now[0]))

    def taking(seconds, call):
        def timed(*args):
            now[0] += seconds
            return call(*args)
        return timed

    _, setup, steps = loop_setup(eval_every=4)  # 6 steps, evaluated at 0, 4 and 6
    setup.evaluate = taking(100, setup.evaluate)
    setup.scheduler.step = taking(1, setup.scheduler.step)  # once an optimizer step
    seen = []
    setup.callbacks = [SimpleNamespace(on_train_begin=lambda total: None, on_train_end=lambda status: None,
                                       on_step_end=lambda m: seen.append(("step", m["step"], m["remaining_s"])),
                                       on_evaluate=lambda m: seen.append(("eval", m["step"], m["remaining_s"])))]
    run_loop(setup, steps)
    # steps left x 1 s, and 100 s for each evaluation at or after the step (at step 1: those at 4 and 6)
    assert seen == [("eval", 0, 200), ("step", 1, 205), ("step", 2, 204), ("step", 3, 203), ("step", 4, 202),
                    ("eval", 4, 102), ("step", 5, 101), ("step", 6, 100), ("eval", 6, 0)]


@pytest.mark.parametrize(("examples", "settings", "eval_every", "save_every"), [
    (12, {"epochs": 2, "evals_per_epoch": 4, "saves_per_epoch": 1}, 3, 12),  # 12 steps an epoch
    (9, {"epochs": 1, "evals_per_epoch": 4}, 3, 0),  # 9 / 4 rounded up, as the Hugging Face trainer takes 1/4
    (12, {"max_steps": 5, "evals_per_epoch": 2, "saves_per_epoch": 12}, 6, 1),  # an epoch is 12 steps though 5 run
    (12, {"epochs": 1, "eval_every": 5}, 5, 0),  # nothing per epoch: as configured
])
def test_evaluations_and_saves_per_epoch_become_steps_of_the_planned_epoch(examples, settings, eval_every,
                                                                           save_every):
    train = TrainSection(micro_batch_size=1, grad_accum=1, **settings)
    steps = plan_steps(EXAMPLES[:examples], train, DataSection(train=["unused"]))
    resolved = with_epoch_cadence(train, steps)
    assert (resolved.eval_every, resolved.save_every) == (eval_every, save_every)
    assert (resolved.evals_per_epoch, resolved.saves_per_epoch) == (None, None)


@pytest.mark.parametrize(("warmup", "rates"), [
    ({"warmup_ratio": 0.25}, [0.5, 1.0, 1.0, 0.666667, 0.333333]),  # ceil(0.25 x 5) = 2 steps up, then 3 down
    ({"warmup_ratio": 0.25, "warmup_steps": 4}, [0.25, 0.5, 0.75, 1.0, 1.0]),  # steps win, as in the HF trainer
    ({"warmup_steps": 0}, [1.0, 0.8, 0.6, 0.4, 0.2]),  # none at all, the default ratio notwithstanding
])
def test_warmup_steps_win_over_the_ratio(warmup, rates):
    from lorakit.train.optim import build_scheduler

    train = TrainSection(lr=1.0, scheduler="linear", **warmup)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, train, total_steps=5)
    seen = []
    for _ in range(5):
        seen.append(round(optimizer.param_groups[0]["lr"], 6))
        optimizer.step()
        scheduler.step()
    assert seen == rates


def test_each_process_takes_its_share_of_a_step_and_every_example_is_seen_once_per_epoch():
    from lorakit.train.distributed import share_of

    data = DataSection(train=["unused"])
    examples = EXAMPLES[:11]  # 11 micro-batches of 1 for 2 processes x 2: the last step has 3
    steps = plan_steps(examples, TrainSection(micro_batch_size=1, grad_accum=2, epochs=1), data, processes=2)
    assert [len(s.micro_batches) for s in steps] == [4, 4, 3]
    seen = []
    for step in steps:
        shares = [share_of(step.micro_batches, SimpleNamespace(num_processes=2, process_index=rank))
                  for rank in range(2)]
        assert len(shares[0]) == len(shares[1])  # the same number of forward passes everywhere
        seen += [tuple(row[0].input_ids) for share in shares for rows, weight in share if weight for row in rows]
        assert sum(weight == 0.0 for share in shares for _, weight in share) == (1 if len(step.micro_batches) == 3
                                                                                  else 0)
    assert sorted(seen) == sorted(tuple(e.input_ids) for e in examples)
