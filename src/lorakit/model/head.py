"""The output head's product, laid out the way the CPU's matrix product runs it fastest.

A head's matrix is tall (Gemma-3 270M: 262,144 rows of 640, 671 MB in float32) and the hidden states that meet it
are few (a decode step's lanes, a loss chunk's 256 tokens). On the CPU, MKL computes ``hidden @ weight.T`` for
such shapes at 60-120 GFLOP/s, and ``weight @ hidden.T`` (the logits laid vocabulary-first) at 140-190 when the
tokens are a multiple of 8: Gemma-3's head for 16 tokens 132 -> 90 ms, for 60 tokens 244 -> 188 ms, for a
137-token loss chunk 510 -> 391 ms on 2 cores (``bench/head_product.py``, docs/benchmarks.md). So on the CPU
the tokens are padded with zero rows to a multiple of 8, and to 16 at least, and the product is taken
vocabulary-first; callers get its ``[rows, vocabulary]`` transposed view, padding rows included, because
elementwise work (soft-capping, the softmax) runs 3-5x slower on a view of the real rows alone than on the
whole buffer: they work on every row and read the first ``len(hidden)``.

The same dot products, summed in the same order: measured, the logits equal ``hidden @ weight.T``'s bit for bit
from 16 tokens on, and a token's logits no longer depend on how many tokens share the product (``hidden @
weight.T`` gives other roundings for 2, 3, 5-7 and 9-11 tokens). A lone token (one prompt decoding) keeps the
matrix-vector product, which is as fast either way.
"""

from __future__ import annotations

from typing import Any

PAD_TOKENS = 8  # the product runs at its fast rate when its token count is a multiple of this...
LEAST_TOKENS = 16  # ...and from this many on, where its roundings no longer depend on the count


def head_logits(hidden: Any, weight: Any) -> Any:
    """``hidden @ weight.T``, ``[rows, vocabulary]`` with ``rows >= len(hidden)``: the first ``len(hidden)`` are
    the hidden states' logits, any after them those of zero rows (on the CPU, a view of a vocabulary-first
    buffer)."""
    tokens = hidden.shape[0]
    if hidden.device.type != "cpu" or tokens < 2:
        return hidden @ weight.T
    import torch

    padded = max(LEAST_TOKENS, -(-tokens // PAD_TOKENS) * PAD_TOKENS)
    if padded != tokens:
        hidden = torch.cat([hidden, hidden.new_zeros(padded - tokens, hidden.shape[1])])
    return (weight @ hidden.T).T
