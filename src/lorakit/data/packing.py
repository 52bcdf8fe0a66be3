"""Padding-free batches: rows of whole examples, position ids restarting per example.

A micro-batch is a list of rows; a row is a list of examples laid end to end. Without packing a
micro-batch is one row holding ``micro_batch_size`` examples; with packing, examples are first
packed into rows of up to ``max_length`` tokens (best-fit decreasing) and a micro-batch holds
``micro_batch_size`` rows. Either way no pad token is computed except at the end of the shorter
rows of a packed micro-batch. Three examples A (3 tokens), B (2), C (3) in one row:

    input_ids     a0 a1 a2 b0 b1 c0 c1 c2
    position_ids   0  1  2  0  1  0  1  2     restarts mark the example borders
    targets       a1 a2  · b1  · c1 c2  ·     each example's labels shifted within it: the last
                                              token of an example predicts nothing (·)

A preference pair (``lorakit.data.tokenize.Pair``) is one item of a row: its chosen and rejected
sequences follow each other as two examples, so a pair never crosses a row (or micro-batch) boundary, and
each target records which sequence it scores (``target_sequence``: 2p for pair p's chosen, 2p+1 for its
rejected) with the pairs' reference log-probabilities beside them.

Examples that all begin with the same untrained tokens (a chat template's header, an instruction every
prompt repeats) can share them too (``share_prompts``, segmented attention only): the row holds those tokens
once, as a segment of its own, and each example's rest, which attends to it and continues its positions. The
quickstart's rows are 18% shorter so; the loss and gradients are the same (each example keeps the last
shared token, to predict its own first trained token from its own hidden state).

Each row also records its segments, ``[(0, 3), (3, 5), (5, 8)]`` here, so attention runs once per
example (``lorakit.model.attention``); other attention implementations read the restarting
position ids instead. Either way attention never crosses an example border, so packed and
one-at-a-time runs compute the same loss. Targets are shifted here, per example, so no token is
asked to predict the first token of the next example.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

from lorakit.data.tokenize import IGNORE, Example, Pair, untrained_common_start

Row = list[Example] | list[Pair]
# A row's shared prompt is computed once only where that saves this share of the row's tokens: each example
# then attends to it under an explicit mask, which costs about what a few tokens save. Measured, a LoRA step's
# forward and backward on 2 cores: Gemma-3 270M, 3 of ~115 tokens an example shared (2% of the row), from 1%
# slower to 3% faster; 12 of ~53 (18%), 13% faster; SmolLM2-135M, its default system prompt, 23 of ~130
# (13%), 10% faster.
MIN_SHARED_SAVING = 0.05


@dataclass(frozen=True)
class Batch:
    """Plain Python lists; ``to_tensors`` makes the tensors at the last moment."""

    input_ids: list[list[int]]
    position_ids: list[list[int]]
    targets: list[list[int]]
    num_tokens: int  # real (non-pad) tokens
    num_targets: int  # tokens that count towards the loss
    # per row, [start, end) of each example and of the padding; a pair's side sharing its prompt adds the
    # prompt's [start, end), which it attends to as well
    segments: list[list[tuple[int, ...]]]
    target_sequence: list[int] | None = None  # pairs: each target's sequence, in target_index order
    reference: list[float] | None = None  # pairs: the reference log-probability of each sequence

    @property
    def num_pairs(self) -> int:
        return len(self.reference) // 2 if self.reference is not None else 0

    @property
    def loss_units(self) -> int:
        """What a step's loss is the mean over: its pairs (DPO), else its supervised tokens."""
        return self.num_pairs if self.reference is not None else self.num_targets

    @property
    def num_computed(self) -> int:
        """Tokens the model runs on, padding included."""
        return len(self.input_ids) * len(self.input_ids[0])

    def to_tensors(self, device: object = "cpu") -> dict[str, object]:
        """Tensors for the model; ``target_index`` holds the flat positions of supervised tokens."""
        import torch

        width = len(self.targets[0])
        index = [r * width + c for r, row in enumerate(self.targets) for c, t in enumerate(row) if t != IGNORE]
        pairs = {} if self.reference is None else {
            "target_sequence": torch.tensor(self.target_sequence, dtype=torch.long, device=device),
            "reference": torch.tensor(self.reference, dtype=torch.float64, device=device)}
        return {**pairs,
            "target_index": torch.tensor(index, dtype=torch.long, device=device),
            "input_ids": torch.tensor(self.input_ids, dtype=torch.long, device=device),
            "position_ids": torch.tensor(self.position_ids, dtype=torch.long, device=device),
            "targets": torch.tensor(self.targets, dtype=torch.long, device=device),
            "segments": self.segments,
        }


def pack_rows(examples: Sequence[Example], max_length: int) -> list[Row]:
    """Best-fit decreasing: longest first, each into the row with the least room that still fits it."""
    rows: list[Row] = []
    # (free tokens, row index), kept sorted so the best fit is a binary search away.
    free: list[tuple[int, int]] = []
    for example in sorted(examples, key=len, reverse=True):
        pos = bisect.bisect_left(free, (len(example), -1))
        if pos < len(free):
            room, index = free.pop(pos)
            rows[index].append(example)
            bisect.insort(free, (room - len(example), index))
        else:
            rows.append([example])
            bisect.insort(free, (max_length - len(example), len(rows) - 1))
    return rows


def plan_micro_batches(examples: Sequence[Example], micro_batch_size: int, packing: bool,
                       max_length: int, seed: int) -> list[list[Row]]:
    """Shuffle (seeded) and group the examples of one epoch into micro-batches of rows."""
    rng = random.Random(seed)
    if packing:
        # Rows of similar length share a micro-batch, so almost no padding is computed (BFD leaves a
        # few short rows at the end); the order of the micro-batches is what gets shuffled.
        rows = sorted(pack_rows(examples, max_length), key=lambda row: sum(map(len, row)), reverse=True)
        batches = [rows[i : i + micro_batch_size] for i in range(0, len(rows), micro_batch_size)]
        rng.shuffle(batches)
        return batches
    order = list(examples)
    rng.shuffle(order)
    return [[order[i : i + micro_batch_size]] for i in range(0, len(order), micro_batch_size)]


def evaluation_groups(examples: Sequence[Example], micro_batch_size: int, max_length: int) -> list[list[Example]]:
    """The examples in order, in groups of one evaluation forward each: as many as fit the tokens a training
    micro-batch may hold (``micro_batch_size`` rows of ``max_length``; so never fewer rows than a micro-batch).

    A forward without gradients holds far less per token than a training step, which keeps every layer's
    activations: short validation rows go many to a forward, where larger matrix products run faster (Gemma-3
    270M on 2 cores, the quickstart's 60 validation rows: 8.3 s in groups of 8, 6.6 s in groups of 40)."""
    budget = micro_batch_size * max_length
    groups: list[list[Example]] = []
    tokens = 0
    for example in examples:
        size = len(example.input_ids)
        if not groups or tokens + size > budget:
            groups.append([])
            tokens = 0
        groups[-1].append(example)
        tokens += size
    return groups


def row_width(rows: Sequence[Row]) -> int:
    """The width ``collate`` pads every row of a micro-batch to: its longest row's tokens (at most: a prompt
    computed once for a row or a pair, ``share_prompts``, makes it shorter)."""
    return max(sum(len(e) for e in row) for row in rows)


def computed_tokens(rows: Sequence[Row]) -> int:
    """Tokens the model runs on for this micro-batch (``collate(rows).num_computed``, or at most that with
    ``share_prompts``) without building it."""
    return len(rows) * row_width(rows)


@dataclass(frozen=True)
class _Piece:
    """A stretch of a row: an example, a side of a pair, or a pair's shared prompt (its ``context``)."""

    example: Example
    first_position: int = 0
    context: int | None = None  # the piece (index in its row) whose keys this one also attends to
    scored: bool = True  # a pair's side: its targets are numbered as one sequence


def shared_prompt(examples: Sequence[Example]) -> int:
    """Leading tokens every example of a row shares and none trains (a chat template's header and a common
    instruction), less the last of them (each example keeps it to predict its own first trained token): what a
    batch can compute once for the whole row. 0 where that would save under ``MIN_SHARED_SAVING`` of its tokens."""
    if len(examples) < 2:
        return 0
    shared = max(0, untrained_common_start(examples) - 1)
    saved = shared * (len(examples) - 1)
    return shared if shared and saved >= MIN_SHARED_SAVING * sum(len(e) for e in examples) else 0


def _pieces(row: Row, share_prompts: bool) -> list[_Piece]:
    """A row's examples; a pair as its two sides, or as its shared prompt followed by the two sides, each
    side starting with the prompt's last token (which predicts that side's first answer token). Examples
    that share a prompt (``shared_prompt``), with ``share_prompts``: the prompt once, then each example's rest."""
    shared = shared_prompt(row) if share_prompts and row and not isinstance(row[0], Pair) else 0  # type: ignore[arg-type]
    if shared:
        head = row[0].input_ids[:shared]
        return [_Piece(Example(head, [IGNORE] * shared), scored=False),
                *(_Piece(Example(e.input_ids[shared:], e.labels[shared:]), shared, 0) for e in row)]  # type: ignore[union-attr]
    pieces: list[_Piece] = []
    for item in row:
        if not isinstance(item, Pair):
            pieces.append(_Piece(item))
            continue
        shared = item.shared_prompt if share_prompts else 0
        if not shared:
            pieces += [_Piece(item.chosen), _Piece(item.rejected)]
            continue
        context = len(pieces)
        pieces.append(_Piece(Example(item.chosen.input_ids[:shared], [IGNORE] * shared), scored=False))
        pieces += [_Piece(Example(side.input_ids[shared:], side.labels[shared:]), shared, context)
                   for side in (item.chosen, item.rejected)]
    return pieces


def _pair_facts(rows: Sequence[Row], pieces: list[list[_Piece]]) -> tuple[list[int], list[float]] | None:
    """Each target's sequence number and each sequence's reference log-probability, for rows of pairs."""
    pairs = [item for row in rows for item in row]
    if not pairs or not isinstance(pairs[0], Pair):
        return None
    sides = [piece.example for row in pieces for piece in row if piece.scored]
    sequence = [number for number, side in enumerate(sides) for label in side.labels[1:] if label != IGNORE]
    reference = [value for pair in pairs for value in (pair.reference or (0.0, 0.0))]
    return sequence, reference


def collate(rows: Sequence[Row], pad_id: int, share_prompts: bool = False) -> Batch:
    """Lay each row's examples end to end; pad shorter rows at the end (their own 'example').

    ``share_prompts`` (segmented attention only): each pair's prompt is computed once, both sides attending to
    it as context (a segment ``(start, end, context_start, context_end)``); so is the prompt all the examples
    of a row begin with (``shared_prompt``). ``num_tokens`` still counts every example's own tokens."""
    pieces = [_pieces(row, share_prompts) for row in rows]
    width = max(sum(len(p.example) for p in row) for row in pieces)
    input_ids, position_ids, targets, segments = [], [], [], []
    num_tokens = num_targets = 0
    for items, row in zip(rows, pieces, strict=True):
        ids: list[int] = []
        pos: list[int] = []
        tgt: list[int] = []
        spans: list[tuple[int, ...]] = []
        for piece in row:
            example = piece.example
            span = (len(ids), len(ids) + len(example))
            spans.append(span if piece.context is None else (*span, *spans[piece.context][:2]))
            ids += example.input_ids
            pos += range(piece.first_position, piece.first_position + len(example))
            tgt += [*example.labels[1:], IGNORE]
        # the examples' tokens, whether or not their prompt was computed once (a pair's shared prompt: once)
        num_tokens += len(ids) if not items or isinstance(items[0], Pair) else sum(len(e) for e in items)
        pad = width - len(ids)
        if pad:
            spans.append((len(ids), width))
        segments.append(spans)
        input_ids.append(ids + [pad_id] * pad)
        position_ids.append(pos + list(range(pad)))
        targets.append(tgt + [IGNORE] * pad)
        num_targets += sum(t != IGNORE for t in tgt)
    facts = _pair_facts(rows, pieces)
    if facts is None:
        return Batch(input_ids, position_ids, targets, num_tokens, num_targets, segments)
    return Batch(input_ids, position_ids, targets, num_tokens, num_targets, segments, *facts)
