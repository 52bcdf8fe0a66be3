"""Greedy answers known before decoding: the reference as a draft, checked by the loss pass.

A validation loss runs the model over prompt + reference with the output head at every reference token. The
same logits say, at each of those tokens, whether greedy decoding would pick it after the tokens before it;
the longest run of such tokens after a prompt is therefore the start of the prompt's greedy answer
(speculative decoding, with the reference as the draft). The lane decoder prefills that start with the prompt
and decodes only the rest, and an answer equal to its reference, end-of-turn token included, is not decoded
at all. On a trained adapter most answers share a long start with their reference, so an evaluation's
generation shrinks to the tokens where the adapter goes its own way. Past that point the reference still
guides: an answer that differs in a token or two often goes on as its reference does, so the decoder drafts
from the reference's text too (``Request.hint``), and keeps a drafted token only where greedy picks it.

The answers are greedy's own up to float rounding: the pass runs all of prompt + reference at once where the
decoder runs one token at a time, so a near tie between two logits could break the other way (the same
difference as between a batched and a lone prompt in ``lanes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lorakit.data.tokenize import IGNORE, Example


@dataclass
class GreedyStarts:
    """Sequences of a teacher-forced pass and, per token, whether greedy decoding picks it after the tokens
    before it (False where the pass did not score the token)."""

    sequences: list[tuple[list[int], list[bool]]]
    _by_start: dict[int, dict[tuple[int, ...], list[int]]] = field(default_factory=dict, repr=False)

    def after(self, prompt: Sequence[int]) -> list[int]:
        """The longest proven start of ``prompt``'s greedy answer: the tokens after the prompt in a sequence
        that begins with it, for as long as each is greedy's pick. Empty when no sequence begins with it."""
        best: list[int] = []
        for number in self._beginning_with(prompt):
            ids, picked = self.sequences[number]
            end = len(prompt)
            while end < len(ids) and picked[end]:
                end += 1
            if end - len(prompt) > len(best):
                best = ids[len(prompt) : end]
        return best

    def reference(self, prompt: Sequence[int]) -> list[int]:
        """Every token after ``prompt`` in the first sequence that begins with it (its reference, end-of-turn
        token included), proven or not: where the greedy answer leaves it, the decoder drafts from it
        (``lookup``). Empty when no sequence begins with it."""
        numbers = self._beginning_with(prompt)
        return self.sequences[numbers[0]][0][len(prompt) :] if numbers else []

    def _beginning_with(self, prompt: Sequence[int]) -> list[int]:
        length = len(prompt)
        if length not in self._by_start:
            index: dict[tuple[int, ...], list[int]] = {}
            for number, (ids, _) in enumerate(self.sequences):
                if len(ids) > length:
                    index.setdefault(tuple(ids[:length]), []).append(number)
            self._by_start[length] = index
        return self._by_start[length].get(tuple(prompt), [])


def loss_and_greedy_starts(model: Any, examples: Sequence[Example], micro_batch_size: int, pad_id: int,
                           chunk_tokens: int, device: Any) -> tuple[float, GreedyStarts]:
    """The mean next-token loss over every supervised token of ``examples`` (``train.evaluate.evaluate_loss``'s
    figure, on one process) and the greedy starts its logits prove.

    ``model`` is the causal LM as the decoder will run it (an adapter in eval mode, merged or not alike)."""
    import torch

    from lorakit.data.packing import collate

    summed, count = 0.0, 0
    sequences: list[tuple[list[int], list[bool]]] = []
    with torch.no_grad():
        for start in range(0, len(examples), micro_batch_size):
            group = list(examples[start : start + micro_batch_size])
            batch = collate([group], pad_id)
            loss, agrees = (_scored(model, batch.to_tensors(device), chunk_tokens) if batch.num_targets
                            else (0.0, []))
            summed, count = summed + loss, count + batch.num_targets
            sequences += _per_example(group, agrees)
    return summed / max(1, count), GreedyStarts(sequences)


def _scored(model: Any, batch: dict[str, Any], chunk_tokens: int) -> tuple[float, list[bool]]:
    """Summed cross-entropy of the batch's supervised tokens, and whether greedy picks each (in target order)."""
    import torch

    from lorakit.infer.lanes import greedy
    from lorakit.train.loss import chunk_logits, supervised_states

    hidden, targets, head, softcap = supervised_states(model, batch)
    summed = torch.zeros((), dtype=torch.float32, device=hidden.device)
    agrees: list[bool] = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        logits, _ = chunk_logits(hidden[start : start + chunk_tokens], head.weight, head.bias, softcap)
        wanted = targets[start : start + chunk_tokens]
        agrees += (greedy(logits) == wanted).tolist()  # the decoder's own pick: the first largest logit
        summed += (torch.logsumexp(logits, dim=-1) - logits.gather(1, wanted[:, None]).squeeze(1)).sum()
    return float(summed), agrees


def _per_example(group: Sequence[Example], agrees: list[bool]) -> list[tuple[list[int], list[bool]]]:
    """Each example's ids with, per token, whether greedy picked it (``collate``'s target order: example by
    example, token ``j`` scored at position ``j - 1`` where its label is not ignored)."""
    flags = iter(agrees)
    out = []
    for example in group:
        picked = [False]
        for token, label in zip(example.input_ids[1:], example.labels[1:], strict=True):
            picked.append(label != IGNORE and next(flags) and label == token)
        out.append((list(example.input_ids), picked))
    return out
