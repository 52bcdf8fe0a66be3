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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from lorakit.data.tokenize import IGNORE, Example


@dataclass
class Scored:
    """One sequence of a teacher-forced pass: its ids and, per position, greedy's pick there (the first largest
    logit after the tokens before it; None where the pass ran no head)."""

    ids: list[int]
    picks: list[int | None]
    # every attention layer's (keys, values) for the sequence's tokens up to its first token that is not
    # greedy's pick (the tokens a lane decoding its answer would hold before its last one); None: not kept
    states: list[tuple[Any, Any]] | None = None

    def proven_end(self, start: int) -> int:
        """Where the run of greedy's own tokens from ``start`` on ends."""
        end = start
        while end < len(self.ids) and self.picks[end] == self.ids[end]:
            end += 1
        return end


@dataclass
class GreedyStarts:
    """The sequences of a teacher-forced pass, each with greedy's pick at every scored token."""

    sequences: list[Scored]
    _by_start: dict[int, dict[tuple[int, ...], list[int]]] = field(default_factory=dict, repr=False)

    def after(self, prompt: Sequence[int]) -> list[int]:
        """The longest proven start of ``prompt``'s greedy answer: the tokens after the prompt in a sequence
        that begins with it, for as long as each is greedy's pick, and then greedy's pick where the sequence
        leaves it. Empty when no sequence begins with it."""
        found = self._found(prompt)
        if found is None:
            return []
        scored, end = found
        pick = scored.picks[end] if end < len(scored.ids) else None
        return scored.ids[len(prompt) : end] + ([pick] if pick is not None else [])

    def reference(self, prompt: Sequence[int]) -> list[int]:
        """Every token after ``prompt`` in the sequence ``after`` reads (its reference, end-of-turn token
        included), proven or not: where the greedy answer leaves it, the decoder drafts from it (``lookup``).
        Empty when no sequence begins with it."""
        found = self._found(prompt)
        return found[0].ids[len(prompt) :] if found is not None else []

    def states(self, prompt: Sequence[int]) -> list[tuple[Any, Any]] | None:
        """The keys and values the pass computed for ``prompt`` + ``after(prompt)`` but its last token (the
        tokens up to where the sequence leaves greedy's answer), when kept: a lane filled with them decodes on
        from that token without a prefill."""
        found = self._found(prompt)
        if found is None or found[0].states is None:
            return None
        scored, end = found
        left = end < len(scored.ids) and scored.picks[end] is not None  # after() ends with greedy's own pick
        # kept up to where the run from the sequence's first scored token ends: this run only in a single turn
        return scored.states if left and scored.states[0][0].shape[-2] == end else None

    def _found(self, prompt: Sequence[int]) -> tuple[Scored, int] | None:
        """The sequence beginning with ``prompt`` whose proven run after it is the longest (the first of
        equals), and where that run ends."""
        numbers = self._beginning_with(prompt)
        if not numbers:
            return None
        ends = [self.sequences[n].proven_end(len(prompt)) for n in numbers]
        best = max(range(len(numbers)), key=ends.__getitem__)
        return self.sequences[numbers[best]], ends[best]

    def _beginning_with(self, prompt: Sequence[int]) -> list[int]:
        length = len(prompt)
        if length not in self._by_start:
            index: dict[tuple[int, ...], list[int]] = {}
            for number, scored in enumerate(self.sequences):
                if len(scored.ids) > length:
                    index.setdefault(tuple(scored.ids[:length]), []).append(number)
            self._by_start[length] = index
        return self._by_start[length].get(tuple(prompt), [])


def loss_and_greedy_starts(model: Any, groups: Sequence[Sequence[Example]], pad_id: int, chunk_tokens: int,
                           device: Any, keep_states: int = 0) -> tuple[float, GreedyStarts]:
    """The mean next-token loss over every supervised token of the examples, one forward per group
    (``train.evaluate.evaluate_loss``'s figure, on one process), and the greedy starts its logits prove.

    ``model`` is the causal LM as the decoder will run it (an adapter in eval mode, merged or not alike).
    ``keep_states``: the first this many examples (the ones to be generated) keep their proven starts' keys and
    values, within ``lane_cache.CACHE_BYTES``."""
    import torch

    from lorakit.data.packing import collate
    from lorakit.infer.lane_cache import cache_budget
    from lorakit.model.attention import uses_segments

    summed, count = 0.0, 0
    sequences: list[Scored] = []
    budget = cache_budget(device) if keep_states else 0
    share = uses_segments(model)  # a prompt the group's examples all begin with: computed once
    start = 0  # the group's first example's number
    with torch.no_grad():
        for group in map(list, groups):
            batch = collate([group], pad_id, share)
            keeping = start < keep_states and budget > 0
            with kept_keys_values(model) if keeping else nullcontext() as kept:
                loss, picks = (_scored(model, batch.to_tensors(device), chunk_tokens) if batch.num_targets
                               else (0.0, []))
            summed, count = summed + loss, count + batch.num_targets
            scored = _per_example(group, picks)
            if kept:
                budget -= _keep_states(scored[: keep_states - start], kept, batch.segments[0])
            sequences += scored
            start += len(group)
    return summed / max(1, count), GreedyStarts(sequences)


@contextmanager
def kept_keys_values(model: Any) -> Iterator[dict[int, tuple[Any, Any]]]:
    """The keys and values every attention layer computes in the forward calls inside, by layer index (the
    last call's): the attention function the model's config names is wrapped for the while."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(lm.config, "_attn_implementation", None)
    kept: dict[int, tuple[Any, Any]] = {}
    if name not in ALL_ATTENTION_FUNCTIONS:  # eager attention is the modeling file's own function: none kept
        yield kept
        return
    attend = ALL_ATTENTION_FUNCTIONS[name]

    def keeping(module: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(module, "layer_idx", None) is not None:
            kept[module.layer_idx] = (key, value)
        return attend(module, query, key, value, *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS[name] = keeping  # this instance's own entry, over the registered one
    try:
        yield kept
    finally:
        del ALL_ATTENTION_FUNCTIONS[name]


def _keep_states(group: list[Scored], kept: dict[int, tuple[Any, Any]], spans: Sequence[tuple[int, ...]]) -> int:
    """Give each sequence of a packed row its proven start's keys and values, cut from the row's and copied;
    returns the bytes kept. ``spans``: the row's segments as ``collate`` laid them, each sequence's
    ``[start, end)``, and the prompt it continues where one was computed once for them all."""
    import torch

    layers = [kept[index] for index in sorted(kept)]
    if not layers or layers[0][0].shape[0] != 1:
        return 0
    own_spans = [span for span in spans if len(span) == 4] or list(spans)  # past the shared prompt's own segment
    used = 0
    for scored, (start, _, *context) in zip(group, own_spans, strict=False):  # group: the first of the row's
        first = next((j for j, pick in enumerate(scored.picks) if pick is not None), len(scored.ids))
        end = scored.proven_end(first)
        if end < len(scored.ids):  # its answer is decoded on from there; a whole proven answer is not decoded
            head = slice(*context) if context else slice(0, 0)
            own = slice(start, start + end - (head.stop - head.start))
            scored.states = [(torch.cat([k[0, :, head], k[0, :, own]], dim=1),
                              torch.cat([v[0, :, head], v[0, :, own]], dim=1)) for k, v in layers]
            used += sum(k.nbytes + v.nbytes for k, v in scored.states)
    return used


def _scored(model: Any, batch: dict[str, Any], chunk_tokens: int) -> tuple[float, list[int]]:
    """Summed cross-entropy of the batch's supervised tokens, and greedy's pick at each (in target order)."""
    import torch

    from lorakit.infer.picks import greedy
    from lorakit.train.loss import supervised_states

    hidden, targets, head, softcap = supervised_states(model, batch)
    summed = torch.zeros((), dtype=torch.float32, device=hidden.device)
    picks: list[int] = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        wanted = targets[start : start + chunk_tokens]
        n = len(wanted)
        logits = _capped_logits(hidden[start : start + chunk_tokens], head, softcap)  # rows past n: padding
        picked = greedy(logits)  # the decoder's own pick: the first largest logit
        picks += picked[:n].tolist()
        chosen = logits[:n].gather(1, wanted[:, None]).squeeze(1)
        summed += (_logsumexp_(logits, picked)[:n] - chosen).sum()
    return float(summed), picks


def _capped_logits(hidden: Any, head: Any, softcap: float | None) -> Any:
    """float32 logits of a chunk, soft-capped in place where the model caps them (``train.loss.chunk_logits``'s
    values without the copy it keeps for a gradient); rows past ``len(hidden)`` are padding."""
    import torch

    from lorakit.model.head import head_logits

    logits = head_logits(hidden, head.weight)
    if logits.dtype != torch.float32:
        logits = logits.float()
    if head.bias is not None:
        logits += head.bias.float()
    if softcap:
        logits.div_(softcap).tanh_().mul_(softcap)
    return logits


def _logsumexp_(logits: Any, picks: Any) -> Any:
    """Each row's log-sum-exp, its maximum read at greedy's pick instead of searched again; overwrites
    ``logits`` (three passes over the chunk, where ``torch.logsumexp`` makes five and a copy)."""
    top = logits.gather(1, picks[:, None])
    return logits.sub_(top).exp_().sum(dim=-1).log_() + top.squeeze(1)


def _per_example(group: Sequence[Example], picks: list[int]) -> list[Scored]:
    """Each example's ids with greedy's pick at each scored position (``collate``'s target order: example by
    example, token ``j`` scored at position ``j - 1`` where its label is not ignored)."""
    flow = iter(picks)
    out = []
    for example in group:
        at: list[int | None] = [None]
        for token, label in zip(example.input_ids[1:], example.labels[1:], strict=True):
            at.append(next(flow) if label != IGNORE else None)
            if label != IGNORE and label != token:  # a label other than the input: not a teacher-forced token
                at[-1] = None
        out.append(Scored(list(example.input_ids), at))
    return out
