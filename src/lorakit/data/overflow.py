"""Examples longer than ``data.max_length``: split, truncated, dropped or refused.

``split`` cuts a plain-text example into windows of ``max_length`` tokens, so a long document is
trained whole instead of losing everything past the first window. With ``stride`` each window
starts that many tokens before the previous one ended; those repeated tokens are context only,
so every token is trained exactly once (with ``stride: 0`` the first token of each window starts
it and is not predicted, as when texts are chunked for pre-training). A chat conversation cannot
be cut without losing its structure: it is truncated, and counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorakit.data.tokenize import IGNORE, Example

if TYPE_CHECKING:
    from lorakit.config.schema import DataSection
    from lorakit.data.dataset import SplitStats


def fit_length(example: Example, data: DataSection, plain: bool, stats: SplitStats) -> list[Example]:
    """The example, or what the over-length policy makes of it (empty: dropped)."""
    if len(example) <= data.max_length:
        return [example]
    stats.overflow += 1
    stats.first_overflow = stats.first_overflow or f"{example.where} ({len(example)} tokens)"
    policy = data.on_overflow
    if policy == "split" and plain:
        stats.split += 1
        return split_windows(example, data.max_length, data.stride)
    if policy == "drop":
        stats.dropped += 1
        return []
    if policy in ("truncate", "split"):
        stats.truncated += 1
        return [Example(example.input_ids[: data.max_length], example.labels[: data.max_length], example.where)]
    return [example]  # "error": counted here, refused once all rows are counted


def split_windows(example: Example, max_length: int, stride: int = 0) -> list[Example]:
    """Windows of at most ``max_length`` tokens covering the example; overlaps are context only."""
    ids, labels = example.input_ids, example.labels
    windows, start = [], 0
    while True:
        end = min(start + max_length, len(ids))
        window_labels = list(labels[start:end])
        if start:
            window_labels[:stride] = [IGNORE] * min(stride, len(window_labels))
        windows.append(Example(ids[start:end], window_labels, f"{example.where} (window {len(windows) + 1})"))
        if end == len(ids):
            return windows
        start = end - stride
