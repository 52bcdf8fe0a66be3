"""How a decode step's logits become tokens: greedy's first largest logit, or a draw at a temperature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Greedy picks the first largest logit of each row in two passes over chunks of this many, a tenth of
# ``argmax``'s time over Gemma-3's 262,144 logits (64 rows: 3 ms against 30), with the same result.
ARGMAX_CHUNK = 4096


def greedy(logits: Any) -> Any:
    """``logits.argmax(-1)``, the first index of each row's maximum, computed faster for large vocabularies.
    ``logits`` may be laid vocabulary-first (``model.head``: a transposed view)."""
    import torch

    rows, vocab = logits.shape
    if vocab % ARGMAX_CHUNK:
        return logits.argmax(dim=-1)
    every = torch.arange(rows, device=logits.device)
    if logits.stride(-1) == 1:
        chunks = logits.view(rows, vocab // ARGMAX_CHUNK, ARGMAX_CHUNK)
        first = chunks.amax(dim=-1).argmax(dim=-1)  # the first chunk holding the row's maximum
        inside = chunks[every, first].argmax(dim=-1)
    else:  # vocabulary-first: the chunks are taken down the columns
        chunks = logits.T.view(vocab // ARGMAX_CHUNK, ARGMAX_CHUNK, rows)
        first = chunks.amax(dim=1).argmax(dim=0)
        inside = chunks[first, :, every].argmax(dim=-1)
    return first * ARGMAX_CHUNK + inside


def sampler(temperature: float, seed: int) -> Callable[[Any], Any]:
    """Tokens drawn from the softmax of the logits over ``temperature``, reproducible for one ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def pick(logits: Any) -> Any:
        probabilities = torch.softmax(logits.float().cpu() / temperature, dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator)[:, 0].to(logits.device)

    return pick
