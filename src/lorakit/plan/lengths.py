"""The tokens a micro-batch really holds, when the training data is known.

Without data the planner must assume every row is ``max_length`` long. Real rows are usually far
shorter (the quickstart's longest has 174 tokens at ``max_length`` 256, most under 60), and the
activations, the largest part that grows, follow the real tokens. So when the data can be read,
the estimate prices the largest micro-batch the run will actually compute: the one found in the
run's own step plan (the same shuffles, the same packing) for the configured micro-batch size,
and for any other size the worst a shuffle could make (its longest examples together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lorakit.config.schema import DataSection, TrainSection
from lorakit.data.packing import computed_tokens
from lorakit.data.tokenize import Example, Pair
from lorakit.train.plan import plan_steps


@dataclass(frozen=True)
class DataLengths:
    """Example lengths of a training set and the largest micro-batch of its planned steps."""

    lengths: tuple[int, ...]  # every training example's tokens, longest first
    packing: bool
    micro_batch_size: int  # the configured one, that ``largest`` was planned with
    max_length: int
    largest: int  # most tokens computed by one micro-batch of the run's planned steps
    sequences: int = 1  # per training item: 2 for DPO pairs (each side up to max_length)

    @property
    def examples(self) -> int:
        return len(self.lengths)

    def tokens(self, micro_batch_size: int, max_length: int) -> int:
        """Most tokens one micro-batch of ``micro_batch_size`` computes with this data."""
        if (micro_batch_size, max_length) == (self.micro_batch_size, self.max_length):
            return self.largest
        if self.packing:  # packed rows are nearly full: each costs max_length
            return min(micro_batch_size * max_length, sum(self.lengths))
        return sum(min(n, max_length * self.sequences) for n in self.lengths[:micro_batch_size])

    def largest_batch_within(self, tokens: int, max_length: int) -> int:
        """The largest micro-batch size whose largest micro-batch computes at most ``tokens``."""
        if self.packing:
            return tokens // max_length
        size, total = 0, 0
        for n in self.lengths:  # longest first: the worst micro-batch of each size
            total += min(n, max_length * self.sequences)
            if total > tokens:
                break
            size += 1
        if max_length == self.max_length and self.largest <= tokens:  # the planned size is known exactly
            size = max(size, self.micro_batch_size)
        return size

    def describe(self) -> str:
        items = "pairs (both sides)" if self.sequences == 2 else "examples"
        return (f"{self.examples} {items}, longest {self.lengths[0]} tokens, largest micro-batch "
                f"{self.largest} tokens")


def measure_lengths(examples: Sequence[Example], train: TrainSection, data: DataSection,
                    processes: int = 1) -> DataLengths:
    """The lengths of tokenised training examples, planned into steps as the run plans them."""
    steps = plan_steps(examples, train, data, processes)
    largest = max(computed_tokens(rows) for step in steps for rows in step.micro_batches)
    pairs = bool(examples) and isinstance(examples[0], Pair)
    return DataLengths(tuple(sorted((len(e) for e in examples), reverse=True)), data.packing,
                       train.micro_batch_size, data.max_length, largest, 2 if pairs else 1)


def read_lengths(cfg: Any) -> DataLengths:
    """Tokenise a run config's training data as the run would, and measure it.

    Raises:
        ModelError: the tokenizer cannot be loaded, or the model is a GGUF not converted yet (its
            tokenizer comes with the conversion, which ``lorakit train`` does once).
        DataError: the data cannot be read.
    """
    from lorakit.data.dataset import build_datasets
    from lorakit.errors import ModelError
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    resolved = resolve_model(cfg.model.name_or_path, cfg.model.revision, convert=False)
    if resolved.gguf_file:
        raise ModelError(f"{cfg.model.name_or_path} is not converted yet, so its tokenizer cannot be read")
    tokenizer = load_tokenizer(resolved, cfg.model.revision)
    return measure_lengths(build_datasets(cfg.data, tokenizer, cfg.train.method).train, cfg.train, cfg.data)
