"""NEFTune (Jain et al., 2023): uniform noise on the input embeddings of the trained steps.

As the Hugging Face trainer adds it for ``neftune_noise_alpha`` (LLaMA-Factory and axolotl pass the key on):
each embedding value gets noise drawn from U(-m, m) with m = alpha / sqrt(L x hidden size). The trainer's L is
the length of the (padded) sequence, one example a row; a lorakit row lays several examples end to end, so L
here is each example's own length (its shared prompt counted), not the row's, which would shrink the noise by
the square root of the number of examples in the row. Training steps under NEFTune lay each example's prompt whole
(``train.loop``): one copy shared by a row's examples would give them all one draw of its noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def example_lengths(segments: Sequence[Sequence[tuple[int, ...]]], width: int) -> list[list[int]]:
    """Per row, the length of the example each position belongs to.

    A segment is ``(start, end)``, or ``(start, end, prompt_start, prompt_end)`` for an example that attends to a
    prompt laid once: its length counts the prompt's tokens, and the prompt's own positions take the length of
    the first example that reads them. A row's padding is a segment of its own (its noise reaches no example:
    attention never crosses a segment's border and padding predicts nothing)."""
    rows = []
    for spans in segments:
        lengths = [0] * width
        prompts_taken: set[tuple[int, ...]] = set()
        for span in spans:
            start, end, prompt = span[0], span[1], tuple(span[2:4])
            length = end - start + (prompt[1] - prompt[0] if prompt else 0)
            lengths[start:end] = [length] * (end - start)
            if prompt and prompt not in prompts_taken:
                prompts_taken.add(prompt)
                lengths[prompt[0]:prompt[1]] = [length] * (prompt[1] - prompt[0])
        rows.append(lengths)
    return rows


def with_noise(embeddings: torch.Tensor, segments: Sequence[Sequence[tuple[int, ...]]], alpha: float) -> torch.Tensor:
    """``embeddings`` (rows x width x hidden) plus NEFTune's noise, scaled at each position by its example's
    length."""
    lengths = example_lengths(segments, embeddings.shape[1])
    counts = torch.tensor(lengths, dtype=embeddings.dtype, device=embeddings.device).unsqueeze(-1)
    scale = alpha / torch.sqrt(counts.clamp(min=1) * embeddings.shape[-1])
    return embeddings + torch.empty_like(embeddings).uniform_(-1.0, 1.0) * scale
