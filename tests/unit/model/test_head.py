"""The output head's product on the CPU, laid vocabulary-first: the logits ``hidden @ weight.T`` gives."""

import pytest
import torch

from lorakit.model.head import head_logits


@pytest.mark.parametrize("tokens", [0, 1, 2, 7, 8, 15, 16, 17, 60, 137])
def test_the_first_rows_are_the_hidden_states_logits(tokens):
    generator = torch.Generator().manual_seed(tokens)
    weight = torch.randn(5000, 64, generator=generator)
    hidden = torch.randn(tokens, 64, generator=generator)
    logits = head_logits(hidden, weight)
    assert logits.shape[0] >= tokens and logits.shape[1] == 5000
    # the same 64-term dot products, summed in another order at most: logits up to about 30, whose float32
    # rounding over 64 additions stays under 1e-5
    torch.testing.assert_close(logits[:tokens], hidden @ weight.T, rtol=1e-5, atol=1e-4)
    assert torch.equal(logits[:tokens].argmax(dim=-1), (hidden @ weight.T).argmax(dim=-1))
    assert not logits[tokens:].any()  # padding: zero states, zero logits


def test_the_chunked_losses_read_only_the_real_rows():
    from lorakit.train.logprobs import chunked_head_logprobs
    from lorakit.train.loss import chunked_head_loss, naive_head_loss

    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 3000, bias=True)
    hidden = torch.randn(37, 32, generator=generator, requires_grad=True)  # chunks of 16, 16 and 5 (padded)
    targets = torch.randint(0, 3000, (37,), generator=generator)
    for softcap in (None, 5.0):
        loss = chunked_head_loss(hidden, head, targets, 16, softcap)
        (grad,) = torch.autograd.grad(loss, hidden)
        want = naive_head_loss(hidden, head, targets, softcap)
        (want_grad,) = torch.autograd.grad(want, hidden)
        # float32 sums over 3000 logits and 37 tokens in other orders: relative 1e-5 covers their rounding
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-6)
        logprobs = chunked_head_logprobs(hidden, head, targets, 16, softcap)
        assert logprobs.shape == (37,)
        torch.testing.assert_close(-logprobs.sum(), want, rtol=1e-5, atol=1e-4)
