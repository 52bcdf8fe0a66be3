import pytest

from lorakit.data.packing import collate, evaluation_groups, pack_rows, plan_micro_batches
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



def asked(instruction: list[int], question: list[int], answer: list[int]) -> Example:
    return Example([*instruction, *question, *answer], [IGNORE] * (len(instruction) + len(question)) + answer)


def test_a_prompt_every_example_of_a_row_begins_with_is_laid_once_and_each_example_attends_to_it():
    from lorakit.data.packing import shared_prompt

    instruction = [2, 5, 6, 7, 8]
    row = [asked(instruction, [20], [30, 31]), asked(instruction, [21, 22], [32])]
    # the five common tokens less the last: each example keeps token 8 to predict its first answer token itself
    assert shared_prompt(row) == 4
    whole = collate([row], pad_id=0)
    shared = collate([row], pad_id=0, share_prompts=True)
    assert shared.input_ids == [[2, 5, 6, 7, 8, 20, 30, 31, 8, 21, 22, 32]]
    assert shared.position_ids == [[0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]]
    assert shared.segments == [[(0, 4), (4, 8, 0, 4), (8, 12, 0, 4)]]
    # the same targets in the same order; the tokens trained count every example's own tokens
    assert [t for t in shared.targets[0] if t != IGNORE] == [t for t in whole.targets[0] if t != IGNORE] == [30, 31, 32]
    assert (shared.num_tokens, shared.num_targets, shared.num_computed) == (16, 3, 12)
    assert collate([row], pad_id=0, share_prompts=False).input_ids == whole.input_ids


def test_a_prompt_is_shared_only_where_it_saves_enough_and_nothing_trained_is_in_it():
    from lorakit.data.packing import MIN_SHARED_SAVING, shared_prompt

    instruction = [2, 5, 6, 7, 8]
    assert shared_prompt([asked(instruction, [20], [30])]) == 0  # one example: nothing to share
    # a trained token ends what is shared, however long the common start
    row = [Example([2, 5, 6, 7, 8, 30, 31], [IGNORE] * 3 + [7, 8, 30, 31]), asked(instruction, [21], [32])]
    assert shared_prompt(row) == 2  # 5 common tokens, the 4th trained in the first example: 3, less the last
    shared = collate([row], pad_id=0, share_prompts=True)
    assert [t for t in shared.targets[0] if t != IGNORE] == [7, 8, 30, 31, 32]
    long_answers = [asked(instruction, [20], list(range(40, 40 + n))) for n in (90, 95)]
    saved = 4 / sum(len(e) for e in long_answers)
    assert saved < MIN_SHARED_SAVING and shared_prompt(long_answers) == 0
    assert collate([long_answers], pad_id=0, share_prompts=True).input_ids == collate([long_answers], 0).input_ids


def test_an_evaluation_lays_as_many_rows_to_a_forward_as_a_training_micro_batchs_tokens_allow_in_order():
    lengths = [30, 10, 50, 64, 5, 5, 20, 64, 64, 7]
    examples = [Example(list(range(n)), list(range(n))) for n in lengths]
    groups = evaluation_groups(examples, micro_batch_size=2, max_length=64)  # 128 tokens a forward
    assert [e for group in groups for e in group] == examples
    assert [[len(e.input_ids) for e in group] for group in groups] == [[30, 10, 50], [64, 5, 5, 20], [64, 64], [7]]
