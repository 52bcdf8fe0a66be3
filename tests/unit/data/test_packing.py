import pytest

from lorakit.data.packing import collate, pack_rows, plan_micro_batches
from lorakit.data.tokenize import IGNORE, Example


def ex(n: int, start: int = 10, trained_from: int = 0) -> Example:
    ids = list(range(start, start + n))
    return Example(ids, [IGNORE] * trained_from + ids[trained_from:])


def test_best_fit_decreasing_fills_rows_and_keeps_every_example():
    examples = [ex(n) for n in (7, 5, 4, 3, 3, 2, 1)]
    rows = pack_rows(examples, max_length=8)
    assert sorted(len(e) for row in rows for e in row) == sorted(len(e) for e in examples)
    assert all(sum(len(e) for e in row) <= 8 for row in rows)
    assert len(rows) == 4  # 25 tokens need at least 4 rows of 8; BFD finds exactly that


def test_collate_restarts_positions_and_shifts_targets_within_each_example():
    a = Example([1, 2, 3], [IGNORE, 2, 3])
    b = Example([4, 5], [4, 5])
    batch = collate([[a, b], [Example([6], [6])]], pad_id=0)
    assert batch.input_ids == [[1, 2, 3, 4, 5], [6, 0, 0, 0, 0]]
    assert batch.position_ids == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    # b's first token is trained, but nothing may predict it from a's last token.
    assert batch.targets == [[2, 3, IGNORE, 5, IGNORE], [IGNORE] * 5]
    assert (batch.num_tokens, batch.num_targets) == (6, 3)
    tensors = batch.to_tensors()
    assert tensors["target_index"].tolist() == [0, 1, 3]


@pytest.mark.parametrize("packing", [False, True])
def test_every_example_appears_once_per_epoch(packing):
    examples = [ex(n, start=100 * n) for n in range(1, 30)]
    micro = plan_micro_batches(examples, micro_batch_size=4, packing=packing, max_length=40, seed=3)
    seen = sorted(e.input_ids[0] for mb in micro for row in mb for e in row)
    assert seen == sorted(e.input_ids[0] for e in examples)
    again = plan_micro_batches(examples, micro_batch_size=4, packing=packing, max_length=40, seed=3)
    assert micro == again  # same seed, same order
