"""Validation loss: the mean next-token loss over every supervised token of the validation examples.

Shared by the training loop and ``lorakit eval`` (which adds the generated metrics on top).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lorakit.data.packing import collate
from lorakit.data.tokenize import Example
from lorakit.model.attention import uses_segments
from lorakit.train.distributed import share_of, summed_over_processes
from lorakit.train.loss import as_loss_module, trained_model


@torch.no_grad()
def evaluate_loss(model: Any, groups: Sequence[Sequence[Example]], pad_id: int, chunk_tokens: int,
                  device: torch.device, accelerator: Any | None = None) -> float:
    """Mean next-token loss over every supervised token of the examples, one forward per group
    (``data.packing.evaluation_groups``; shared out over processes)."""
    loss_module = as_loss_module(model)
    was_training = loss_module.training
    loss_module.eval()
    share = uses_segments(trained_model(loss_module))  # a prompt a batch's examples all begin with: computed once
    batches = [b for b in (collate([list(group)], pad_id, share) for group in groups) if b.num_targets]
    total = torch.zeros(2, dtype=torch.float32, device=device)  # summed loss, target count
    for batch, weight in share_of(batches, accelerator):
        loss = loss_module(batch.to_tensors(device), chunk_tokens)
        total += torch.stack([loss.float(), torch.tensor(float(batch.num_targets), device=device)]) * weight
    loss_module.train(was_training)
    loss_sum, count = summed_over_processes(total, accelerator).tolist()
    return loss_sum / max(1.0, count)
