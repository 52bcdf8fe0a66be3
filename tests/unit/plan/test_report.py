"""Where auto_plan starts, and how a plan reads."""


import pytest

from lorakit.errors import MemoryBudgetError
from lorakit.plan.estimate import GiB, estimate_memory, fit_budget, options
from lorakit.plan.report import MemoryPlan, render_plan, starting_point
from tests.unit.plan.test_estimate import CPU, FACTS


def plan_for(budget, setup=CPU, grad_accum=2):
    fits = tuple(fit_budget(FACTS, s, budget) for s in options(setup)) if budget else ()
    return MemoryPlan(FACTS, estimate_memory(FACTS, setup), grad_accum, budget, fits)


def between(mb_fits, mb_fails, checkpointing=False):
    """A budget in which micro-batch ``mb_fits`` fits and ``mb_fails`` does not."""
    setup = CPU.changed(gradient_checkpointing=checkpointing)
    low = estimate_memory(FACTS, setup.changed(micro_batch_size=mb_fits)).total
    high = estimate_memory(FACTS, setup.changed(micro_batch_size=mb_fails)).total
    return (low + high) / 2


def test_the_start_keeps_the_effective_batch():
    # Effective batch 4 x 2 = 8; 3 fits but does not divide 8, so 2 (grad_accum 4).
    start = starting_point(plan_for(between(3, 4)))
    assert (start.micro_batch_size, start.grad_accum, start.gradient_checkpointing) == (2, 4, False)
    assert start.estimate.total <= between(3, 4)


def test_the_start_may_grow_the_micro_batch_when_memory_allows():
    start = starting_point(plan_for(between(8, 9)))
    assert (start.micro_batch_size, start.grad_accum) == (8, 1)


def test_checkpointing_only_when_micro_batch_1_does_not_fit_without_it():
    budget = between(0, 1) + 0.5 * (estimate_memory(FACTS, CPU.changed(micro_batch_size=1)).total - between(0, 1))
    start = starting_point(plan_for(budget))
    assert start.gradient_checkpointing and start.micro_batch_size >= 1


def test_nothing_fits_is_a_clear_error():
    tiny_budget = estimate_memory(FACTS, CPU).fixed + 1000
    with pytest.raises(MemoryBudgetError, match=r"cannot hold even one example of data\.max_length 512"):
        starting_point(plan_for(tiny_budget))


def test_the_rendered_plan_lists_the_parts_and_the_start():
    text = render_plan(plan_for(8 * GiB))
    for name in ("framework", "base weights", "adapter + grads + AdamW", "loss chunk", "activations",
                 "allocator retention", "peak (estimate)"):
        assert name in text
    assert "--set train.micro_batch_size=" in text
    presets = render_plan(plan_for(None))
    assert "8 GiB" in presets and "checkpointing" in presets
