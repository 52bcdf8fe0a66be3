"""The estimate's arithmetic and what-fits solving, on made-up model facts."""

from dataclasses import replace

import pytest

from lorakit.plan.estimate import (
    LENGTH_STEP,
    GiB,
    MemorySetup,
    estimate_memory,
    fit_budget,
    largest_divisor,
    options,
)
from lorakit.plan.facts import ActivationCost, ModelFacts

FACTS = ModelFacts(name="made-up", num_layers=20, hidden_size=1024, vocab_size=32000, logit_softcap=False,
                   base_params=500_000_000, linear_params=400_000_000, adapter_params=8_000_000,
                   max_position=8192, activations=ActivationCost(per_layer=60_000, outside=4_000),
                   checkpointed=ActivationCost(per_layer=4_096, outside=6_000))
CPU = MemorySetup(device="cpu", micro_batch_size=4, max_length=512, gradient_checkpointing=False,
                  loss_chunk_tokens=256, weight_bytes=4)


def part(estimate, name):
    return next(p.bytes for p in estimate.parts if p.name == name)


def test_the_parts_add_up_and_grow_linearly_with_tokens():
    small = estimate_memory(FACTS, CPU)
    large = estimate_memory(FACTS, replace(CPU, micro_batch_size=8))
    assert small.total == pytest.approx(small.fixed + small.per_token * CPU.tokens)  # float sums: default 1e-6
    assert part(small, "base weights") == 500_000_000 * 4
    assert part(small, "adapter + grads + AdamW") == 8_000_000 * 4 * 4
    assert part(small, "loss chunk") == 256 * 32000 * 4 * 2
    assert part(small, "activations") == CPU.tokens * (20 * 60_000 + 4_000)
    assert large.total - small.total == pytest.approx(small.per_token * CPU.tokens)


def test_checkpointing_and_4bit_cost_less():
    plain = estimate_memory(FACTS, CPU)
    checkpointed = estimate_memory(FACTS, replace(CPU, gradient_checkpointing=True))
    assert part(checkpointed, "activations") < part(plain, "activations") / 5
    assert checkpointed.total < plain.total
    gpu = replace(CPU, device="cuda", weight_bytes=2)
    nf4 = estimate_memory(FACTS, replace(gpu, quantization="nf4"))
    assert part(nf4, "base weights") < part(estimate_memory(FACTS, gpu), "base weights")
    assert [(s.gradient_checkpointing, s.quantization) for s in options(gpu)] == [
        (False, "none"), (True, "none"), (False, "nf4"), (True, "nf4")]
    assert len(options(CPU)) == 2  # no 4-bit on the CPU


@pytest.mark.parametrize("budget_gib", [4, 8, 20])
def test_the_fit_is_the_largest_that_fits(budget_gib):
    budget = budget_gib * GiB
    for setup in options(CPU):
        fit = fit_budget(FACTS, setup, budget)
        mb = fit.micro_batch_size
        assert mb >= 1
        assert estimate_memory(FACTS, replace(setup, micro_batch_size=mb)).total <= budget
        assert estimate_memory(FACTS, replace(setup, micro_batch_size=mb + 1)).total > budget
        at_one = replace(setup, micro_batch_size=1)
        assert fit.max_length % LENGTH_STEP == 0
        assert estimate_memory(FACTS, replace(at_one, max_length=fit.max_length)).total <= budget
        if fit.max_length < FACTS.max_position:
            assert estimate_memory(FACTS, replace(at_one, max_length=fit.max_length + LENGTH_STEP)).total > budget


def test_a_budget_below_the_fixed_parts_fits_nothing():
    fit = fit_budget(FACTS, CPU, 1 * GiB)
    assert (fit.micro_batch_size, fit.max_length) == (0, 0)


def test_largest_divisor():
    assert [largest_divisor(16, limit) for limit in (0, 1, 3, 7, 100)] == [0, 1, 2, 4, 16]
    assert largest_divisor(12, 5) == 4
