"""Attention that costs what the examples cost: one causal attention per example of a packed row.

A padding-free batch lays several examples end to end in one row. The stock SDPA path then
attends over the whole row under a block-diagonal mask: its cost grows with the square of the
*row* length, and most of that work is masked away (eight 130-token examples in one row: 8x the
attention FLOPs they need). Here each example (a segment ``[start, end)`` of its row, known on
the host when the batch is built) runs its own ``is_causal`` SDPA call, so the cost is the sum
of the squares of the example lengths, no mask is read, and attention can never cross a border.

The implementation is registered with transformers under ``SEGMENTED`` and is used only when a
forward call passes ``lorakit_segments``; every other call (validation without segments,
generation with a KV cache) goes to the stock SDPA function with the stock mask, so one loaded
model serves training and inference. On a GPU with flash-attention installed, transformers'
own variable-length kernel (driven by the restarting position ids) is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

SEGMENTED = "lorakit_segments"
# per row: the [start, end) of each example, and of the context it continues, if any (a DPO pair's prompt)
Segments = Sequence[Sequence[tuple[int, ...]]]


def _window_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """Causal and local: token i sees j when 0 <= i - j < window (transformers' sliding window)."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return (i >= j) & (i - j < window)


def segmented_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        sliding_window: int | None = None, lorakit_segments: Segments | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention interface: ``query`` is ``[batch, heads, length, dim]``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if lorakit_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, sliding_window=sliding_window, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for b, segments in enumerate(lorakit_segments):
        parts = []
        for start, end, *context in segments:
            if context:
                parts.append(_with_context(query, key, value, b, (start, end), context, sliding_window, scaling))
                continue
            q, k, v = (t[b : b + 1, :, start:end] for t in (query, key, value))
            local = sliding_window is not None and end - start > sliding_window
            mask = _window_mask(end - start, sliding_window, query.device) if local else None
            parts.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=not local,
                                                        dropout_p=dropout, scale=scaling, enable_gqa=gqa))
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def _with_context(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, b: int, span: Sequence[int],
                  context: Sequence[int], window: int | None, scaling: float | None) -> torch.Tensor:
    """A segment that continues another (a DPO pair's side after its shared prompt): its queries see the
    context's keys, then its own causally, as if the two were one sequence."""
    (start, end), (c_start, c_end) = span, context
    q = query[b : b + 1, :, start:end]
    k, v = (torch.cat([t[b : b + 1, :, c_start:c_end], t[b : b + 1, :, start:end]], dim=2) for t in (key, value))
    shift = c_end - c_start
    q_pos = torch.arange(shift, shift + end - start, device=query.device)[:, None]
    k_pos = torch.arange(shift + end - start, device=query.device)[None, :]
    mask = q_pos >= k_pos
    if window is not None:
        mask &= q_pos - k_pos < window
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling,
                                          enable_gqa=query.shape[1] != key.shape[1])


def register() -> None:
    """Make ``SEGMENTED`` a known attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SEGMENTED, segmented_attention)
    # The stock SDPA mask, so calls without segments (generation, padded batches) are masked as usual.
    AttentionMaskInterface.register(SEGMENTED, sdpa_mask)


def pick_attention(config: Any, device_type: str, dtype: torch.dtype) -> str:
    """The attention implementation for padding-free training of a model with this config."""
    from transformers.utils import is_flash_attn_2_available

    if device_type == "cuda" and dtype in (torch.bfloat16, torch.float16) and is_flash_attn_2_available():
        return "flash_attention_2"  # varlen kernel, reads the example borders from position ids
    if getattr(config, "attn_logit_softcapping", None):
        return "eager"  # SDPA cannot soft-cap attention scores (Gemma-2)
    register()
    return SEGMENTED


def uses_segments(model: Any) -> bool:
    """Whether forward calls of this (possibly wrapped) model should carry ``lorakit_segments``."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(lm.config, "_attn_implementation", None) == SEGMENTED
