"""From the data section of a config to tokenised training and validation examples."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.config.schema import DataSection
from lorakit.data.formats import Turn, detect_format, get_format
from lorakit.data.prompt_shape import PromptShape, prompt_shape
from lorakit.data.sources import ErrorCollector, read_records
from lorakit.data.templates import resolve_template
from lorakit.data.tokenize import Encoder, Example
from lorakit.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conversation:
    turns: list[Turn]
    where: str


@dataclass
class SplitStats:
    """What happened to the rows of one split; reported by the CLI and stored in the manifest."""

    rows: int = 0
    formats: dict[str, str] = field(default_factory=dict)  # file -> detected format
    overflow: int = 0  # rows longer than max_length
    truncated: int = 0
    dropped: int = 0  # over-length rows dropped, or left with no trained token after truncation
    lengths: list[int] = field(default_factory=list, repr=False)
    first_overflow: str = ""

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "examples": len(self.lengths), "formats": self.formats,
                "overflow": self.overflow, "truncated": self.truncated, "dropped": self.dropped,
                "tokens": sum(self.lengths)}


@dataclass
class Datasets:
    train: list[Example]
    eval: list[Example]
    template_name: str
    stats: dict[str, SplitStats]
    prompt_shape: PromptShape | None = None  # how inference should wrap new input
    eval_conversations: list[Conversation] = field(default_factory=list)  # for generated metrics and samples


def load_conversations(paths: Sequence[str | Path], fmt: str = "auto",
                       formats_seen: dict[str, str] | None = None) -> list[Conversation]:
    """Read files and convert every row; bad rows are reported together, up to 20.

    Raises:
        DataError: missing files, malformed rows (``path:line: what is wrong``) or no rows at all.
    """
    errors = ErrorCollector()
    conversations: list[Conversation] = []
    for path in paths:
        file_format = None if fmt == "auto" else get_format(fmt)
        name = fmt
        for record in read_records(path, errors):
            try:
                if file_format is None:
                    name = detect_format(record.row)
                    file_format = get_format(name)
                conversations.append(Conversation(file_format(record.row), record.where))
            except DataError as e:
                errors.add(f"{record.where}: {e}")
            if errors.full:
                errors.raise_if_any()
        if formats_seen is not None:
            formats_seen[str(path)] = name
    errors.raise_if_any()
    if not conversations:
        raise DataError(f"no examples found in {', '.join(map(str, paths))}: the dataset is empty")
    return conversations


def encode_all(conversations: Sequence[Conversation], encoder: Encoder, max_length: int,
               on_overflow: str, stats: SplitStats) -> list[Example]:
    """Tokenise and apply the over-length policy; counts go to ``stats``."""
    errors = ErrorCollector()
    examples = []
    for conv in conversations:
        stats.rows += 1
        try:
            ids, labels = encoder.encode(conv.turns)
        except DataError as e:
            errors.add(f"{conv.where}: {e}")
            continue
        if len(ids) > max_length:
            stats.overflow += 1
            stats.first_overflow = stats.first_overflow or f"{conv.where} ({len(ids)} tokens)"
            if on_overflow == "drop":
                stats.dropped += 1
                continue
            if on_overflow == "truncate":
                ids, labels = ids[:max_length], labels[:max_length]
                stats.truncated += 1
        example = Example(ids, labels, conv.where)
        if on_overflow != "error" and example.num_trained == 0:
            stats.dropped += 1  # nothing left to learn from, usually a prompt longer than max_length
            continue
        stats.lengths.append(len(example))
        examples.append(example)
    errors.raise_if_any()
    if on_overflow == "error" and stats.overflow:
        raise DataError(f"{stats.overflow} of {stats.rows} rows are longer than data.max_length={max_length}, "
                        f"first at {stats.first_overflow}; raise max_length or set data.on_overflow to "
                        "truncate or drop")
    return examples


def build_encoder(data: DataSection, tokenizer: Any) -> tuple[Encoder, str]:
    template_name, template = resolve_template(data.template, tokenizer)
    return Encoder(tokenizer, template, data.system_prompt), template_name


def split_validation(conversations: list[Conversation], val_size: float,
                     seed: int) -> tuple[list[Conversation], list[Conversation]]:
    """Hold out a seeded random share (val_size < 1) or count (val_size >= 1) of the rows."""
    count = round(val_size * len(conversations)) if val_size < 1 else int(val_size)
    if count <= 0:
        return conversations, []
    if count >= len(conversations):
        raise DataError(f"data.val_size={val_size} leaves no training rows out of {len(conversations)}")
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return ([c for i, c in enumerate(conversations) if i not in held],
            [c for i, c in enumerate(conversations) if i in held])


def build_datasets(data: DataSection, tokenizer: Any) -> Datasets:
    """Read, convert, split and tokenise the training and validation data of a config.

    Raises:
        DataError: anything wrong with the files or rows, and a training set left empty.
    """
    encoder, template_name = build_encoder(data, tokenizer)
    stats = {"train": SplitStats(), "eval": SplitStats()}
    train_convs = load_conversations(data.train, data.format, stats["train"].formats)
    if data.max_samples is not None:
        train_convs = train_convs[: data.max_samples]
    if data.eval:
        eval_convs = load_conversations(data.eval, data.format, stats["eval"].formats)
    else:
        train_convs, eval_convs = split_validation(train_convs, data.val_size, data.seed)
    train = encode_all(train_convs, encoder, data.max_length, data.on_overflow, stats["train"])
    evals = encode_all(eval_convs, encoder, data.max_length, data.on_overflow, stats["eval"])
    if not train:
        raise DataError(f"no training examples left: all {stats['train'].rows} rows were dropped as longer than "
                        f"data.max_length={data.max_length} or without a trained token")
    for split, s in stats.items():
        if s.overflow:
            log.warning("%s: %d of %d rows longer than max_length=%d (%s: %d truncated, %d dropped)",
                        split, s.overflow, s.rows, data.max_length, data.on_overflow, s.truncated, s.dropped)
    kept = {e.where for e in evals}  # the validation rows that survived the length policy
    return Datasets(train, evals, template_name, stats, prompt_shape(train_convs),
                    [c for c in eval_convs if c.where in kept])
