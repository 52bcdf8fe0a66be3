"""Greedy starts from a loss pass: the decoder skips what the pass proved and still writes greedy's answers."""

from __future__ import annotations

import random

import pytest

from lorakit.data.tokenize import IGNORE, Example
from lorakit.infer.drafts import GreedyStarts, Scored, loss_and_greedy_starts
from lorakit.infer.lanes import LaneDecoder, Request
from lorakit.infer.picks import greedy
from tests.conftest import build_model

STOP = 1


@pytest.fixture(params=["llama", "gemma3"])
def model(request):
    # float64: the pass over prompt + answer and the token-by-token decoder then differ by ~1e-16, far below any
    # gap between two logits of a random model, so every comparison below is exact on any version.
    return build_model(request.param, softcap=30.0 if request.param == "gemma3" else None,
                       sliding_window=128).double().eval()


def fours(examples: list[Example]) -> list[list[Example]]:
    """Four examples a forward, in order."""
    return [examples[i : i + 4] for i in range(0, len(examples), 4)]


def prompts(vocab: int, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[2] + [rng.randrange(3, vocab) for _ in range(rng.randint(4, 12))] for _ in range(count)]


def decode(model, requests: list[Request], lanes: int = 4) -> tuple[list[list[int]], int]:
    """The answers, and how many decode steps it took."""
    import torch

    steps = []
    with torch.inference_mode():
        decoder = LaneDecoder(model, requests, [STOP], 0, lanes, greedy)
        original = decoder._step
        decoder._step = lambda: steps.append(1) or original()
        return decoder.run(), len(steps)


def example(prompt: list[int], answer: list[int]) -> Example:
    """A training example: the prompt unsupervised, the answer supervised."""
    return Example(prompt + answer, [IGNORE] * len(prompt) + answer)


def leaving_at_their_first_tokens(answers: list[list[int]], vocab: int) -> list[list[int]]:
    """References that leave greedy's answer at its 1st, 2nd, 3rd, 4th, 1st, ... token (another token there,
    not a stop): every answer is decoded on from there."""
    return [[*a[: i % 4], 3 + (a[i % 4] - 2) % (vocab - 3), *a[i % 4 + 1 :]] for i, a in enumerate(answers)]


def decode_counting_prefills(model, requests: list[Request]) -> tuple[list[list[int]], list[int]]:
    """The answers, and the requests the decoder prefilled (the others it filled from their kept states)."""
    import torch

    prefilled: list[int] = []
    with torch.inference_mode():
        decoder = LaneDecoder(model, requests, [STOP], 0, 4, greedy)
        original = decoder._prefill
        decoder._prefill = lambda slots, taken: prefilled.extend(taken) or original(slots, taken)
        return decoder.run(), prefilled


def test_known_starts_give_the_same_answers_in_fewer_steps(model):
    asked = prompts(model.config.vocab_size, 8, seed=1)
    plain, plain_steps = decode(model, [Request(p, 20) for p in asked])
    # known: none, a part, the whole answer without its end, the whole answer with the stop token
    known = [answer[: [0, 3, len(answer), len(answer)][i % 4]] + ([STOP] if i % 4 == 3 else [])
             for i, answer in enumerate(plain)]
    got, steps = decode(model, [Request(p, 20, k) for p, k in zip(asked, known, strict=True)])
    assert got == plain
    assert steps < plain_steps


def test_a_hint_drafts_past_the_known_start_and_changes_no_answer():
    """Past its proven start an answer often goes on as its reference does: drafted from the reference
    (``Request.hint``), such tokens are kept several a step; a hint that is wrong costs steps, never tokens.
    The tiny Llama, whose answers do not loop (the tiny Gemma-3's do, and its own text drafts them already)."""
    model = build_model("llama").double().eval()
    asked = prompts(model.config.vocab_size, 8, seed=4)
    plain, plain_steps = decode(model, [Request(p, 20) for p in asked])
    # the reference is the answer with its first token changed: nothing is proven, all of the rest is in it
    hints = [[(a[0] + 1) % model.config.vocab_size, *a[1:]] if a else [] for a in plain]
    got, steps = decode(model, [Request(p, 20, [], h) for p, h in zip(asked, hints, strict=True)])
    assert got == plain
    assert steps < plain_steps
    rng = random.Random(5)
    noise = [[rng.randrange(3, model.config.vocab_size) for _ in range(20)] for _ in asked]
    got, _ = decode(model, [Request(p, 20, [], h) for p, h in zip(asked, noise, strict=True)])
    assert got == plain


def test_known_tokens_past_the_budget_end_the_answer_there(model):
    asked = prompts(model.config.vocab_size, 3, seed=2)
    plain, _ = decode(model, [Request(p, 4) for p in asked])
    longer, _ = decode(model, [Request(p, 12) for p in asked])
    got, steps = decode(model, [Request(p, 4, a) for p, a in zip(asked, longer, strict=True)])
    assert got == plain
    assert steps == 0 or any(len(a) < 4 for a in longer)  # a known answer that reaches its budget is not decoded


def test_the_loss_pass_proves_greedy_up_to_the_first_other_token(model):
    import torch

    from lorakit.train.evaluate import evaluate_loss

    asked = prompts(model.config.vocab_size, 6, seed=3)
    answers, _ = decode(model, [Request(p, 10) for p in asked])
    assert all(len(a) >= 3 for a in answers[1:3])  # (the seed's answers: long enough to leave at their 3rd token)
    ended = [[*a, STOP] if len(a) < 10 else a for a in answers]
    # a reference equal to greedy's answer (its end included), one that leaves it at its 3rd token, one at its 1st
    other = [3 + (t - 2) % (model.config.vocab_size - 3) for t in (ended[1][2], ended[2][0])]  # not t, not a stop
    references = [ended[0], [*ended[1][:2], other[0]], [other[1], *ended[2][1:]], *ended[3:]]
    examples = [example(p, r) for p, r in zip(asked, references, strict=True)]
    loss, starts = loss_and_greedy_starts(model, fours(examples), 0, 7, torch.device("cpu"))

    assert starts.after(asked[0]) == ended[0]
    assert starts.after(asked[1]) == ended[1][:3]  # the proven start, then greedy's pick where the reference leaves
    assert starts.after(asked[2]) == ended[2][:1]
    assert starts.after([2, 3, 3, 3]) == []  # no sequence begins with it
    assert starts.reference(asked[1]) == references[1] and starts.reference([2, 3, 3, 3]) == []
    # the decoder given those starts writes the answers it writes alone
    got, _ = decode(model, [Request(p, 10, starts.after(p)) for p in asked])
    assert got == answers
    assert starts.states(asked[1]) is None  # not kept unless asked for
    # both sum float32 logits (the head's chunks are cast to float32) in another order: ~1e-7 apart
    assert loss == pytest.approx(evaluate_loss(model, fours(examples), 0, 7, torch.device("cpu")), rel=1e-6)


def test_the_longest_start_wins_among_sequences_with_the_same_prompt():
    starts = GreedyStarts([Scored([5, 6, 7, 8], [None, None, 7, 4]),
                           Scored([5, 6, 7, 9, 10], [None, None, 7, 9, 10]),
                           Scored([5, 7, 7, 9, 10], [None, 7, 7, 9, 10])])
    assert starts.after([5, 6]) == [7, 9, 10]
    assert starts.reference([5, 6]) == [7, 9, 10]
    assert starts.after([5, 6, 7]) == [9, 10]
    assert starts.after([5, 6, 7, 9, 10]) == []
    # a start that leaves its sequence ends with greedy's pick there
    assert GreedyStarts([Scored([5, 6, 7, 8], [None, None, 7, 4])]).after([5, 6]) == [7, 4]


def test_lanes_filled_with_the_loss_pass_keys_and_values_decode_the_same_answers_without_a_prefill(model):
    """The pass's keys and values of each answer's proven start (``keep_states``) fill the lanes: no prompt is
    prefilled, and every answer is greedy's own."""
    import torch

    asked = prompts(model.config.vocab_size, 6, seed=6)
    answers, _ = decode(model, [Request(p, 10) for p in asked])
    assert all(len(a) >= 4 for a in answers)  # (the seed's answers: long enough to be left at their 4th token)
    references = leaving_at_their_first_tokens(answers, model.config.vocab_size)
    examples = [example(p, r) for p, r in zip(asked, references, strict=True)]
    _, starts = loss_and_greedy_starts(model, fours(examples), 0, 7, torch.device("cpu"), keep_states=5)
    requests = [Request(p, 10, starts.after(p), starts.reference(p), starts.states(p)) for p in asked]
    assert [r.states is not None for r in requests] == [True] * 5 + [False]  # the first five kept
    assert all(r.states[0][0].shape[-2] == len(r.start) - 1 for r in requests[:5])
    got, prefilled = decode_counting_prefills(model, requests)
    assert got == answers
    assert prefilled == [5]  # only the one without kept states


def test_a_prompt_the_examples_share_is_computed_once_and_kept_with_each_answers_keys_and_values(model, monkeypatch):
    """With segmented attention the loss pass lays the instruction every prompt begins with once per group
    (``collate``'s ``share_prompts``); each answer's kept keys and values still begin with it, so the lanes
    decode greedy's answers with no prefill, and the loss is the one of the whole sequences."""
    import torch

    import lorakit.data.packing as packing
    from lorakit.model.attention import pick_attention

    model.config._attn_implementation = pick_attention(model.config, "cpu", torch.float64)
    instruction = [2, 5, 6, 7, 8, 9, 10, 11]
    asked = [instruction + p[1:] for p in prompts(model.config.vocab_size, 6, seed=8)]
    answers, _ = decode(model, [Request(p, 10) for p in asked])
    assert all(len(a) >= 4 for a in answers)  # (the seed's answers: long enough to be left at their 4th token)
    references = leaving_at_their_first_tokens(answers, model.config.vocab_size)
    examples = [example(p, r) for p, r in zip(asked, references, strict=True)]
    assert packing.shared_prompt(examples[:4]) >= len(instruction) - 1  # computed once in the first group

    loss, starts = loss_and_greedy_starts(model, fours(examples), 0, 7, torch.device("cpu"), keep_states=6)
    requests = [Request(p, 10, starts.after(p), starts.reference(p), starts.states(p)) for p in asked]
    got, prefilled = decode_counting_prefills(model, requests)
    assert got == answers
    assert prefilled == []

    monkeypatch.setattr(packing, "MIN_SHARED_SAVING", 2.0)  # never shared: every sequence laid whole
    whole_loss, whole = loss_and_greedy_starts(model, fours(examples), 0, 7, torch.device("cpu"), keep_states=6)
    assert loss == pytest.approx(whole_loss, rel=1e-12)  # float64 sums in another order
    monkeypatch.undo()  # the validation loss of a training run shares the prompt too, and gives the same figure
    from lorakit.train.evaluate import evaluate_loss

    # both sum float32 logits (the head's chunks are cast to float32) in another order: ~1e-7 apart
    assert evaluate_loss(model, fours(examples), 0, 7, torch.device("cpu")) == pytest.approx(whole_loss, rel=1e-6)
    for p in asked:
        for (k, v), (whole_k, whole_v) in zip(starts.states(p), whole.states(p), strict=True):
            torch.testing.assert_close(k, whole_k, rtol=1e-12, atol=1e-12)  # float64, as above
            torch.testing.assert_close(v, whole_v, rtol=1e-12, atol=1e-12)
