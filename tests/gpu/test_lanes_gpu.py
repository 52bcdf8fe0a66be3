"""The lane decoder on CUDA (bench/gpu_check.sh runs it): greedy answers equal generate's."""

from __future__ import annotations

import pytest

from lorakit.infer.lanes import LaneDecoder, Request
from lorakit.infer.picks import greedy
from tests.conftest import build_model
from tests.unit.infer.test_lanes import alone, requests_with_shared_start


@pytest.mark.gpu
def test_every_token_equals_generate_alone_on_a_gpu():
    """The same comparison on CUDA, where the buffers are capped by free device memory."""
    import torch

    model = build_model("gemma3", softcap=30.0, sliding_window=64).double().eval().to("cuda")
    requests = requests_with_shared_start(model.config.vocab_size, 14, seed=5)
    with torch.inference_mode():
        expected = [alone(model, Request(r.prompt, r.budget), []) for r in requests]
        assert all(len(e) == r.budget for e, r in zip(expected, requests, strict=True))
        got = LaneDecoder(model, requests, [], 0, 4, greedy).run()
    assert got == expected
