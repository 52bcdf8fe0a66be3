"""The continuous-batching decoder gives transformers' own greedy answers, token for token."""

from __future__ import annotations

import random

import pytest

from lorakit.infer.lanes import LaneDecoder, Request, fits_lanes
from lorakit.infer.picks import greedy, sampler
from tests.conftest import build_model


def requests_with_shared_start(vocab: int, count: int, seed: int) -> list[Request]:
    """Prompts of 3 to 20 tokens after a shared 5-token start (the decoder computes that start once), each
    with its own budget."""
    rng = random.Random(seed)
    start = [rng.randrange(3, vocab) for _ in range(5)]
    return [Request(start + [rng.randrange(3, vocab) for _ in range(rng.randint(3, 20))], rng.randint(1, 24))
            for _ in range(count)]


def alone(model, request: Request, stop_ids: list[int]) -> list[int]:
    """transformers' greedy answer to one prompt, no batch, no padding."""
    import torch

    ids = torch.tensor([request.prompt], device=model.device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=request.budget,
                         do_sample=False, eos_token_id=stop_ids, pad_token_id=0)[0, ids.shape[1]:].tolist()
    ends = [i for i, t in enumerate(out) if t in stop_ids]
    return out[: ends[0]] if ends else out


@pytest.fixture(params=["llama", "gemma3"])
def model(request):
    # float64: batched and lone forward passes then differ by ~1e-16, far below any gap between two logits of
    # a random model, so the comparison is exact on any version (in float32 a near tie could flip a token).
    return build_model(request.param, softcap=30.0 if request.param == "gemma3" else None,
                       sliding_window=64).double().eval()


@pytest.mark.parametrize("lanes", [1, 3, 8])
def test_every_token_equals_generate_alone(model, lanes):
    import torch

    requests = requests_with_shared_start(model.config.vocab_size, 14, seed=lanes)
    with torch.inference_mode():
        # a stop token the model does produce, so some answers end by it and others by their budget
        first = LaneDecoder(model, requests, [], 0, 8, greedy).run()
        stop = max({t for answer in first for t in answer}, key=lambda t: sum(answer.count(t) for answer in first))
        expected = [alone(model, r, [stop]) for r in requests]
        got = LaneDecoder(model, requests, [stop], 0, lanes, greedy).run()
    assert got == expected
    assert any(len(a) < r.budget for a, r in zip(got, requests, strict=True))  # some stopped early
    assert any(len(a) == r.budget for a, r in zip(got, requests, strict=True))  # some ran to their budget


def test_a_finished_lane_takes_the_next_prompt_at_once(model):
    """With 2 lanes and answers of 1 and 12 tokens, the short ones go through one lane while the long one
    runs: the whole takes the long answer's steps, not a batch per pair."""
    import torch

    vocab = model.config.vocab_size
    requests = [Request([5, 6, 7, 8, 9, 10 + i], 1) for i in range(8)] + [Request([5, 6, 7, 8, 9, 10, 11], 12)]
    steps = []
    with torch.inference_mode():
        decoder = LaneDecoder(model, requests, [], 0, 2, greedy)
        original = decoder._step
        decoder._step = lambda: steps.append(1) or original()
        answers = decoder.run()
    assert [len(a) for a in answers] == [1] * 8 + [12]
    assert len(steps) <= 12 + 1  # the long lane's 12 steps (and the last newcomer's); padded batches take 16
    assert vocab > 0


def test_a_request_without_budget_has_the_empty_answer(model):
    import torch

    requests = requests_with_shared_start(model.config.vocab_size, 3, seed=3)
    with torch.inference_mode():
        full = LaneDecoder(model, requests, [], 0, 2, greedy).run()
        none = LaneDecoder(model, [Request(r.prompt, 0) for r in requests], [], 0, 2, greedy).run()
        mixed = LaneDecoder(model, [requests[0], Request(requests[1].prompt, 0), requests[2]], [], 0, 2, greedy).run()
    assert none == [[], [], []]
    assert mixed == [full[0], [], full[2]]


def test_stop_check_ends_an_answer_early(model):
    import torch

    requests = requests_with_shared_start(model.config.vocab_size, 4, seed=1)
    with torch.inference_mode():
        full = LaneDecoder(model, requests, [], 0, 4, greedy).run()
        cut = LaneDecoder(model, requests, [], 0, 4, greedy, finished=lambda tokens: len(tokens) >= 2).run()
    assert cut == [a[:2] for a in full]


def test_sampling_is_reproducible_for_a_seed(model):
    import torch

    requests = requests_with_shared_start(model.config.vocab_size, 6, seed=2)
    with torch.inference_mode():
        one = LaneDecoder(model, requests, [], 0, 3, sampler(1.0, seed=7)).run()
        two = LaneDecoder(model, requests, [], 0, 3, sampler(1.0, seed=7)).run()
        greedy_answers = LaneDecoder(model, requests, [], 0, 3, greedy).run()
    assert one == two
    assert one != greedy_answers


def test_greedy_picks_the_first_largest_logit_like_argmax():
    import torch

    logits = torch.randn(5, 3 * 4096)
    logits[1, 100] = logits[1, 9000] = 1e9  # a tie: argmax takes the first
    logits[2, 4095] = logits[2, 4096] = 1e9
    assert torch.equal(greedy(logits), logits.argmax(dim=-1))
    # laid vocabulary-first (``model.head``'s view of its padded product): the same picks, ties included
    columns = torch.cat([logits.T, torch.randn(3 * 4096, 3)], dim=1)
    assert torch.equal(greedy(columns[:, :5].T), logits.argmax(dim=-1))
    odd = torch.randn(3, 1000)  # a vocabulary that is not a multiple of the chunk
    assert torch.equal(greedy(odd), odd.argmax(dim=-1))


def test_answers_beyond_the_sliding_window_go_to_generate():
    model = build_model("gemma3", sliding_window=16)
    assert not fits_lanes(model, [Request(list(range(3, 13)), 10)])  # 20 tokens > the 16-token window
    assert fits_lanes(model, [Request(list(range(3, 13)), 6)])
    model.config._attn_implementation = "eager"  # eager adds the mask as numbers: not the decoder's boolean one
    assert not fits_lanes(model, [Request(list(range(3, 13)), 6)])



def test_drafted_tokens_change_no_answer_and_save_steps(model, monkeypatch):
    """The last few lanes check tokens drafted from their own text (``lookup``) in the step they decode anyway:
    the answers are the plain decoder's, token for token, in fewer steps. A random model's greedy answers
    repeat themselves within a few tokens, which is what drafts from the text predict."""
    import torch

    import lorakit.infer.lanes as lanes

    # six short answers and two long ones: the long ones finish alone, as an evaluation's tail does
    requests = requests_with_shared_start(model.config.vocab_size, 8, seed=5)
    requests = [Request(r.prompt, 40 if i < 2 else 2) for i, r in enumerate(requests)]
    counted = {"steps": 0, "kept": 0}
    real_step, real_kept = LaneDecoder._step, lanes._kept

    def step(self):
        counted["steps"] += 1
        return real_step(self)

    def kept(draft, picked):
        tokens = real_kept(draft, picked)
        counted["kept"] += len(tokens) - 1
        return tokens

    monkeypatch.setattr(LaneDecoder, "_step", step)
    monkeypatch.setattr(lanes, "_kept", kept)
    with torch.inference_mode():
        monkeypatch.setattr(lanes, "DRAFT_ROWS", 0)
        plain = LaneDecoder(model, requests, [], 0, 8, greedy).run()
        plain_steps = counted["steps"]
        monkeypatch.setattr(lanes, "DRAFT_ROWS", 64)
        drafted = LaneDecoder(model, requests, [], 0, 8, greedy).run()
    assert drafted == plain == [alone(model, r, []) for r in requests]
    drafted_steps = counted["steps"] - plain_steps
    assert counted["kept"] > 0 and drafted_steps < plain_steps


def test_a_draft_is_what_followed_the_latest_match_of_the_last_tokens():
    from lorakit.infer.lookup import lookup_draft

    assert lookup_draft([1, 2, 3, 4, 1, 2], 3) == [3, 4, 1]
    assert lookup_draft([5, 1, 2, 9, 7, 1, 2, 8, 5, 1, 2], 2) == [9, 7]  # three tokens matched before two
    assert lookup_draft([1, 2, 8, 1, 2, 6, 1, 2], 2) == [6, 1]  # the latest of two matches
    assert lookup_draft([1, 2, 3], 3) == []  # nothing earlier to match
    assert lookup_draft([1, 2, 1], 0) == []


def test_one_prompt_alone_checks_drafts_too(model, monkeypatch):
    """One lane (``lorakit infer`` of one text): its steps have room for drafted tokens from the start."""
    import torch

    import lorakit.infer.lanes as lanes

    request = Request(requests_with_shared_start(model.config.vocab_size, 1, seed=6)[0].prompt, 40)
    steps = []
    real_step = LaneDecoder._step
    monkeypatch.setattr(LaneDecoder, "_step", lambda self: steps.append(1) or real_step(self))
    with torch.inference_mode():
        drafted = LaneDecoder(model, [request], [], 0, 1, greedy).run()
        drafted_steps = len(steps)
        monkeypatch.setattr(lanes, "DRAFT_ROWS", 0)
        plain = LaneDecoder(model, [request], [], 0, 1, greedy).run()
    assert drafted == plain == [alone(model, request, [])]
    assert len(steps) - drafted_steps == 40 > drafted_steps  # plain: one step a token
