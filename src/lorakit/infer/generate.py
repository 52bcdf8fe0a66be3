"""Generate: prompts wrapped as in training, batched with left padding, greedy unless a temperature is given."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lorakit.data.formats import Turn
from lorakit.errors import ModelError
from lorakit.infer.load import LoadedAdapter

log = logging.getLogger(__name__)


@contextmanager
def merged(adapter: LoadedAdapter) -> Iterator[None]:
    """The LoRA weights added into the base weights while generating (one matmul per layer instead of three),
    taken out again after. Only for an adapter loaded for inference (a training run's base may be quantised,
    where merging is lossy), in float32."""
    import torch

    # float32 only: merging and unmerging in bfloat16 would leave the base weights rounded for ``--base``.
    mergeable = (adapter.base is not None and hasattr(adapter.model, "merge_adapter")
                 and adapter.model.get_base_model().dtype == torch.float32)
    if mergeable:
        adapter.model.merge_adapter()
    try:
        yield
    finally:
        if mergeable:
            adapter.model.unmerge_adapter()


def generate(adapter: LoadedAdapter, inputs: Sequence[str], **options: Any) -> list[str]:
    """The model's answer to each input text, wrapped the way the run's training prompts were."""
    return generate_turns(adapter, [adapter.shape.turns(text) for text in inputs], **options)


def generate_turns(adapter: LoadedAdapter, conversations: Sequence[Sequence[Turn]], max_new_tokens: int = 256,
                   temperature: float = 0.0, batch_size: int = 8, use_adapter: bool = True, seed: int = 0,
                   on_batch: Callable[[int], None] | None = None, length_ratio: float | None = None,
                   tools: Sequence[list[dict[str, Any]] | None] | None = None) -> list[str]:
    """The model's next assistant turn for each conversation, in order.

    Args:
        use_adapter: False runs the base model alone on the same prompts (``eval --base``).
        on_batch: called with the number of conversations finished so far (progress).
        length_ratio: for conversions, whose answer is about as long as the question: a batch
            stops after this many times its longest prompt (+16) new tokens, so one answer that
            never ends does not hold up the batch for ``max_new_tokens`` steps.
        tools: each conversation's tool definitions (None: none), rendered with its prompt.
    """
    import torch

    tools = tools or [None] * len(conversations)
    prompts = [adapter.encoder.prompt_ids(turns, row_tools) for turns, row_tools in zip(conversations, tools,
                                                                                          strict=True)]
    if hasattr(adapter.model, "generate_all"):  # the llama.cpp engine: one prompt at a time, its own budget
        if not use_adapter:
            raise ModelError("--base compares with the base model under --engine transformers only")
        budgets = [min(max_new_tokens, int(length_ratio * len(p)) + 16) if length_ratio else max_new_tokens
                   for p in prompts]
        new_ids = adapter.model.generate_all(prompts, adapter.stop_ids, budgets, temperature, seed, on_batch,
                                             batch_size)
        return [adapter.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_ids]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch with little padding
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else adapter.stop_ids[0]
    outputs: list[str] = [""] * len(prompts)
    context = merged(adapter) if use_adapter else adapter.model.disable_adapter()
    torch.manual_seed(seed)
    with torch.inference_mode(), context:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            sampling: dict[str, Any] = ({"do_sample": True, "temperature": temperature} if temperature > 0
                                        else {"do_sample": False})
            budget = min(max_new_tokens, int(length_ratio * width) + 16) if length_ratio else max_new_tokens
            generated = adapter.model.generate(
                input_ids=ids.to(adapter.device), attention_mask=mask.to(adapter.device),
                max_new_tokens=budget, eos_token_id=adapter.stop_ids, pad_token_id=pad, **sampling)
            for row, i in enumerate(batch):
                outputs[i] = adapter.tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
            if on_batch is not None:
                on_batch(min(start + batch_size, len(order)))
    return outputs
