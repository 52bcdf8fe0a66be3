"""Direct preference optimisation on padding-free batches of pairs, computed as TRL's DPOTrainer computes it.

A pair's score is the sum of its answer tokens' log-probabilities (prompt tokens masked), for the adapter
being trained and for the reference. The reference is the model as the run starts: the base model for a
fresh adapter (whose B matrices are zero), or ``lora.init_from``'s adapter when continuing one. Its
log-probabilities are measured once, before the first step, and travel with each pair
(``Pair.reference``), so no step runs a second model, or a second adapter, or even a second forward.

With d = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected), per pair:

- sigmoid: -(1 - e) log sigmoid(beta d) - e log sigmoid(-beta d)    (e: label_smoothing)
- hinge:   relu(1 - beta d)
- ipo:     (d' - 1 / (2 beta))^2, d' with each log-ratio divided by its answer's token count (as TRL does)

plus, with ``sft_weight`` w, w times the chosen answer's mean token loss (LLaMA-Factory's pref_ftx), which keeps
the chosen answers likely: on pairs that differ by a token or two, DPO alone lowers both sides' likelihood.

and the logged rewards are beta times each side's log-ratio, under TRL's names (rewards/chosen,
rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen, logps/rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from lorakit.config.schema import PAIR_STATS, DpoSection
from lorakit.data.packing import collate
from lorakit.data.tokenize import Pair
from lorakit.model.attention import uses_segments
from lorakit.train.distributed import share_of, summed_over_processes
from lorakit.train.logprobs import chunked_head_logprobs
from lorakit.train.loss import SupervisedLoss, supervised_states, trained_model


def sequence_logps(model: Any, batch: dict[str, Any], chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's summed answer log-probability (float32, ``[2 x pairs]``: chosen, rejected, ...) and its
    answer's token count."""
    hidden, targets, head, softcap = supervised_states(model, batch)
    logps = chunked_head_logprobs(hidden, head, targets, chunk_tokens, softcap)
    sequences = batch["reference"].numel()
    summed = torch.zeros(sequences, dtype=torch.float32, device=logps.device).index_add(
        0, batch["target_sequence"], logps)
    counts = torch.bincount(batch["target_sequence"], minlength=sequences)
    return summed, counts


def pair_losses(policy: torch.Tensor, reference: torch.Tensor, counts: torch.Tensor,
                dpo: DpoSection) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair: the loss, and the statistics of ``PAIR_STATS`` (detached), from the sequences' log-probabilities."""
    chosen_ratio = policy[0::2] - reference[0::2]
    rejected_ratio = policy[1::2] - reference[1::2]
    delta = chosen_ratio - rejected_ratio
    if dpo.loss == "sigmoid":
        smooth = dpo.label_smoothing
        losses = -(1 - smooth) * F.logsigmoid(dpo.beta * delta) - smooth * F.logsigmoid(-dpo.beta * delta)
    elif dpo.loss == "hinge":
        losses = torch.relu(1 - dpo.beta * delta)
    else:  # ipo
        per_token = chosen_ratio / counts[0::2].clamp(min=1) - rejected_ratio / counts[1::2].clamp(min=1)
        losses = (per_token - 1 / (2 * dpo.beta)) ** 2
    if dpo.sft_weight:
        losses = losses - dpo.sft_weight * policy[0::2] / counts[0::2].clamp(min=1)
    chosen_rewards, rejected_rewards = dpo.beta * chosen_ratio.detach(), dpo.beta * rejected_ratio.detach()
    stats = torch.stack([chosen_rewards, rejected_rewards, (chosen_rewards > rejected_rewards).float(),
                         chosen_rewards - rejected_rewards, policy[0::2].detach(), policy[1::2].detach()], dim=1)
    return losses, stats


class PreferenceLoss(SupervisedLoss):
    """The trained model whose ``forward`` is a batch of pairs' summed DPO loss, with their summed statistics."""

    def __init__(self, model: Any, dpo: DpoSection) -> None:
        super().__init__(model)
        self.dpo = dpo

    def forward(self, batch: dict[str, Any], chunk_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        policy, counts = sequence_logps(self.model, batch, chunk_tokens)
        losses, stats = pair_losses(policy, batch["reference"].to(policy.dtype), counts, self.dpo)
        return losses.sum(), stats.sum(0)


@torch.no_grad()
def measure_reference(model: Any, pairs: Sequence[Pair], micro_batch_size: int, pad_id: int, chunk_tokens: int,
                      device: torch.device) -> list[Pair]:
    """The pairs with the reference log-probabilities of their two answers: ``model`` as it is now, in eval mode."""
    was_training = model.training
    model.eval()
    measured: list[Pair] = []
    for start in range(0, len(pairs), micro_batch_size):
        group = list(pairs[start : start + micro_batch_size])
        batch = collate([group], pad_id, uses_segments(model)).to_tensors(device)
        logps, _ = sequence_logps(model, batch, chunk_tokens)
        values = logps.double().tolist()
        measured += [replace(pair, reference=(values[2 * i], values[2 * i + 1])) for i, pair in enumerate(group)]
    model.train(was_training)
    return measured


@torch.no_grad()
def evaluate_pairs(loss_module: PreferenceLoss, pairs: Sequence[Pair], micro_batch_size: int, pad_id: int,
                   chunk_tokens: int, device: torch.device, accelerator: Any | None = None) -> dict[str, float]:
    """Held-out pairs: eval_loss (the mean preference loss) and the mean of each of ``PAIR_STATS``."""
    was_training = loss_module.training
    loss_module.eval()
    share = uses_segments(trained_model(loss_module))
    batches = [collate([list(pairs[start : start + micro_batch_size])], pad_id, share)
               for start in range(0, len(pairs), micro_batch_size)]
    total = torch.zeros(2 + len(PAIR_STATS), dtype=torch.float32, device=device)  # loss, pairs, statistics
    for batch, weight in share_of(batches, accelerator):
        loss, stats = loss_module(batch.to_tensors(device), chunk_tokens)
        total += torch.cat([torch.stack([loss.float(), torch.tensor(float(batch.num_pairs), device=device)]),
                            stats.float()]) * weight
    loss_module.train(was_training)
    loss_sum, count, *stats = summed_over_processes(total, accelerator).tolist()
    count = max(1.0, count)
    return {"eval_loss": loss_sum / count, **{f"eval_{name}": value / count for name, value in zip(
        PAIR_STATS, stats, strict=True)}}
