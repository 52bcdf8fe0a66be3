"""The planner's view of real data: the largest micro-batch the run's own plan makes, and the worst case beyond it."""

import pytest

from lorakit.config.schema import DataSection, TrainSection
from lorakit.data.packing import collate
from lorakit.data.tokenize import Example
from lorakit.plan.lengths import DataLengths, measure_lengths
from lorakit.train.plan import plan_steps


def examples(*lengths):
    return [Example(list(range(n)), list(range(n)), f"row {i}") for i, n in enumerate(lengths)]


LENGTHS = (100, 7, 30, 12, 64, 9, 50, 3)


@pytest.mark.parametrize("packing", [False, True])
def test_the_largest_micro_batch_is_the_largest_the_run_plans(packing):
    data = DataSection(train=["x.jsonl"], max_length=128, packing=packing)
    train = TrainSection(micro_batch_size=3, grad_accum=1, epochs=2)
    measured = measure_lengths(examples(*LENGTHS), train, data)
    planned = [collate(rows, 0).num_computed for step in plan_steps(examples(*LENGTHS), train, data)
               for rows in step.micro_batches]
    assert measured.largest == max(planned) and measured.tokens(3, 128) == max(planned)
    assert measured.lengths == tuple(sorted(LENGTHS, reverse=True))


def test_other_sizes_are_priced_at_the_worst_a_shuffle_can_make():
    lengths = DataLengths(tuple(sorted(LENGTHS, reverse=True)), packing=False, micro_batch_size=3, max_length=128,
                          largest=90)
    assert lengths.tokens(2, 128) == 100 + 64
    assert lengths.tokens(4, 128) == 100 + 64 + 50 + 30
    assert lengths.tokens(2, 60) == 60 + 60  # a shorter max_length cuts the examples
    packed = DataLengths(lengths.lengths, packing=True, micro_batch_size=3, max_length=128, largest=300)
    assert packed.tokens(2, 128) == 256  # packed rows are full
    assert packed.tokens(100, 128) == sum(LENGTHS)


def test_the_largest_batch_within_a_token_budget():
    lengths = DataLengths(tuple(sorted(LENGTHS, reverse=True)), packing=False, micro_batch_size=4, max_length=128,
                          largest=150)
    assert lengths.largest_batch_within(163, 128) == 4  # the planned size is known to take 150
    assert lengths.largest_batch_within(149, 128) == 1  # 100 + 64 > 149, and the planned 150 does not fit
    assert lengths.largest_batch_within(214, 128) == 4  # 100 + 64 + 50
    assert lengths.largest_batch_within(10_000, 128) == len(LENGTHS)
    assert lengths.largest_batch_within(99, 128) == 0
