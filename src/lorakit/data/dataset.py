"""From the data section of a config to tokenised training and validation examples."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lorakit.config.schema import DataSection
from lorakit.data.formats import Turn, detect_format, get_format
from lorakit.data.overflow import fit_length
from lorakit.data.pairs import pair_dialogues
from lorakit.data.prompt_shape import PromptShape, prompt_shape
from lorakit.data.registry import Source, sources
from lorakit.data.rows import RowPolicy, placeholders
from lorakit.data.sources import ErrorCollector, read_records
from lorakit.data.templates import resolve_template
from lorakit.data.tokenize import Encoder, Example, Pair
from lorakit.errors import DataError, DataRefusal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conversation:
    turns: list[Turn]  # a preference pair's: the prompt and its chosen answer
    where: str
    tools: list[dict[str, Any]] | None = None
    rejected: list[Turn] | None = None  # a preference pair's prompt and rejected answer


@dataclass
class SplitStats:
    """What happened to the rows of one split; reported by the CLI and stored in the manifest."""

    rows: int = 0
    formats: dict[str, str] = field(default_factory=dict)  # file -> detected format
    ignored: dict[str, list[str]] = field(default_factory=dict)  # file -> fields nothing reads
    left_out: dict[str, int] = field(default_factory=dict)  # file -> rows data.label_field left out
    placeholders: dict[str, int] = field(default_factory=dict)  # {{name}} left in the data -> rows
    overflow: int = 0  # rows longer than max_length
    truncated: int = 0
    dropped: int = 0  # over-length rows dropped, or left with no trained token after truncation
    split: int = 0  # rows cut into windows (on_overflow: split)
    lengths: list[int] = field(default_factory=list, repr=False)
    first_overflow: str = ""
    also_trained: int = 0  # validation rows equal to a training row

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "examples": len(self.lengths), "formats": self.formats,
                "ignored_fields": self.ignored, "left_out_by_label": self.left_out,
                "placeholders": self.placeholders, "overflow": self.overflow, "truncated": self.truncated,
                "dropped": self.dropped, "split": self.split, "tokens": sum(self.lengths),
                "also_trained": self.also_trained}

    def notes(self) -> list[str]:
        """What a user should know about the rows, one line each: ignored fields, rows left out, placeholders."""
        lines = [f"{source}: ignored fields: {', '.join(fields)}" for source, fields in self.ignored.items()]
        lines += [f"{source}: {count} rows left out by data.label_field (labelled false)"
                  for source, count in self.left_out.items()]
        if self.placeholders:
            found = ", ".join(f"{{{{{name}}}}} ({rows} rows)" for name, rows in sorted(self.placeholders.items()))
            lines.append(f"placeholders left in the data: {found}; fill them with data.replace")
        if self.also_trained:
            lines.append(f"{self.also_trained} of {self.rows} rows are training rows too (the same turns): the "
                         "validation figures will flatter the adapter; give data.eval files the training data lacks")
        return lines


@dataclass
class Datasets:
    train: list[Example] | list[Pair]  # pairs under train.method dpo
    eval: list[Example] | list[Pair]
    template_name: str
    stats: dict[str, SplitStats]
    prompt_shape: PromptShape | None = None  # how inference should wrap new input
    eval_conversations: list[Conversation] = field(default_factory=list)  # for generated metrics and samples


def load_conversations(paths: Sequence[str | Path], data: DataSection | None = None,
                       stats: SplitStats | None = None, per_file_cap: int | None = None,
                       pairs: bool = False) -> list[Conversation]:
    """Read files (or registry datasets) and convert every row; bad rows are reported together, up to 20.
    ``pairs`` (``train.method: dpo``) reads preference pairs, each a conversation with its ``rejected`` side.

    Raises:
        DataError: missing files, malformed rows (``path:line: what is wrong``) or no rows at all.
        DataRefusal: a file holds data lorakit does not train as it stands (one line, naming it).
    """
    stats = stats if stats is not None else SplitStats()
    errors = ErrorCollector()
    conversations: list[Conversation] = []
    for source in sources(map(str, paths)):
        read = _read_source(source, data, stats, errors, pairs)
        if source.entry is not None and source.entry.num_samples is not None:
            read = _sample(read, source.entry.num_samples, data.seed if data else 42)
        conversations += read[:per_file_cap] if per_file_cap else read
    errors.raise_if_any()
    if not conversations:
        raise DataError(f"no examples found in {', '.join(map(str, paths))}: the dataset is empty")
    return conversations


def _read_source(source: Source, data: DataSection | None, stats: SplitStats,
                 errors: ErrorCollector, pairs: bool = False) -> list[Conversation]:
    fmt = "preference" if pairs else data.format if data else "auto"
    policy = RowPolicy.of(data, pairs)
    options = replace(source.options, train_history=data.train_history if data else True)
    file_format = None if fmt in ("auto", "preference") else get_format(fmt)
    ignored: set[str] = set()
    conversations = []
    for record in read_records(source.path, errors):
        try:
            row = policy.prepare(source.canonical(record.row))
            if row is None:
                stats.left_out[source.label] = stats.left_out.get(source.label, 0) + 1
                continue
            rejected = None
            if pairs:
                dialogue, rejected = pair_dialogues(row, options)
            else:
                if file_format is None:
                    fmt = detect_format(row)
                    file_format = get_format(fmt)
                dialogue = file_format(row, options)
        except DataRefusal as e:
            raise type(e)(f"{source.label}: {e}") from None
        except DataError as e:
            errors.add(f"{record.where}: {e}")
            if errors.full:
                errors.raise_if_any()
            continue
        ignored |= dialogue.ignored
        for name in placeholders([t.content for t in dialogue.turns]):
            stats.placeholders[name] = stats.placeholders.get(name, 0) + 1
        conversations.append(Conversation(dialogue.turns, record.where, dialogue.tools,
                                          rejected.turns if rejected is not None else None))
    stats.formats[source.label] = fmt
    if ignored:  # a registry folder's files share one label
        stats.ignored[source.label] = sorted(ignored | set(stats.ignored.get(source.label, [])))
    return conversations


def _sample(conversations: list[Conversation], count: int, seed: int) -> list[Conversation]:
    """A registry's num_samples, as LLaMA-Factory draws it: a seeded random subset, or all rows and random extras."""
    rng = random.Random(seed)
    if count <= len(conversations):
        return [conversations[i] for i in sorted(rng.sample(range(len(conversations)), count))]
    return conversations + rng.choices(conversations, k=count - len(conversations))


def encode_all(conversations: Sequence[Conversation], encoder: Encoder, data: DataSection,
               stats: SplitStats) -> list[Example]:
    """Tokenise and apply the over-length policy; counts go to ``stats``."""
    errors = ErrorCollector()
    examples = []
    for conv in conversations:
        stats.rows += 1
        encoded = _encoded(encoder, conv, conv.turns, errors)
        if encoded is None:
            continue
        ids, labels = encoded
        plain = all(t.role == "text" for t in conv.turns)
        for example in fit_length(Example(ids, labels, conv.where), data, plain, stats):
            if data.on_overflow != "error" and example.num_trained == 0:
                stats.dropped += 1  # nothing left to learn from, usually a prompt longer than max_length
                continue
            stats.lengths.append(len(example))
            examples.append(example)
    errors.raise_if_any()
    _refuse_overflow(data, stats)
    return examples


def encode_pairs(conversations: Sequence[Conversation], encoder: Encoder, data: DataSection,
                 stats: SplitStats) -> list[Pair]:
    """Tokenise both sides of each preference pair; a side longer than max_length is cut (truncate, split),
    or its pair dropped (drop), or refused (error)."""
    errors = ErrorCollector()
    pairs = []
    for conv in conversations:
        stats.rows += 1
        chosen = _encoded(encoder, conv, conv.turns, errors)
        rejected = _encoded(encoder, conv, conv.rejected or [], errors) if chosen is not None else None
        if chosen is None or rejected is None:
            continue
        pair = Pair(Example(*chosen, conv.where), Example(*rejected, conv.where), conv.where)
        if pair.longest > data.max_length:
            stats.overflow += 1
            stats.first_overflow = stats.first_overflow or f"{conv.where} ({pair.longest} tokens)"
            if data.on_overflow == "drop":
                stats.dropped += 1
                continue
            if data.on_overflow != "error":
                stats.truncated += 1
                pair = pair.truncated(data.max_length)
        if data.on_overflow != "error" and pair.num_trained == 0:
            stats.dropped += 1  # a side with no answer token left to score
            continue
        stats.lengths.append(len(pair))
        pairs.append(pair)
    errors.raise_if_any()
    _refuse_overflow(data, stats)
    return pairs


def _encoded(encoder: Encoder, conv: Conversation, turns: list[Turn],
             errors: ErrorCollector) -> tuple[list[int], list[int]] | None:
    """``turns`` tokenised with their labels; None when the row is bad (collected in ``errors``).

    Raises:
        DataRefusal: the data cannot be trained as written (said once, naming the row).
    """
    try:
        return encoder.encode(turns, conv.tools)
    except DataRefusal as e:
        raise DataRefusal(f"{conv.where}: {e}") from None
    except DataError as e:
        errors.add(f"{conv.where}: {e}")
        return None


def _refuse_overflow(data: DataSection, stats: SplitStats) -> None:
    if data.on_overflow == "error" and stats.overflow:
        raise DataError(f"{stats.overflow} of {stats.rows} rows are longer than data.max_length={data.max_length}, "
                        f"first at {stats.first_overflow}; raise max_length or set data.on_overflow to "
                        "split, truncate or drop")


def build_encoder(data: DataSection, tokenizer: Any) -> tuple[Encoder, str]:
    template_name, template = resolve_template(data.template, tokenizer)
    return Encoder(tokenizer, template, data.system_prompt, template_name), template_name


def split_validation(conversations: list[Conversation], val_size: float,
                     seed: int) -> tuple[list[Conversation], list[Conversation]]:
    """Hold out a seeded random share (val_size < 1) or count (val_size >= 1) of the rows; a share of a few rows
    holds out at least one (as the datasets library's split does), so asking for validation always gets some."""
    count = max(1, round(val_size * len(conversations))) if 0 < val_size < 1 else int(val_size)
    if count <= 0:
        return conversations, []
    if count >= len(conversations):
        raise DataError(f"data.val_size={val_size} leaves no training rows out of {len(conversations)}")
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return ([c for i, c in enumerate(conversations) if i not in held],
            [c for i, c in enumerate(conversations) if i in held])


def build_datasets(data: DataSection, tokenizer: Any, method: str = "sft") -> Datasets:
    """Read, convert, split and tokenise the training and validation data of a config (``method`` dpo: as
    preference pairs).

    Raises:
        DataError: anything wrong with the files or rows, and a training set left empty.
    """
    encoder, template_name = build_encoder(data, tokenizer)
    stats = {"train": SplitStats(), "eval": SplitStats()}
    pairs = method == "dpo"
    train_convs = load_conversations(data.train, data, stats["train"], data.max_samples_per_file, pairs)
    if data.max_samples is not None:
        train_convs = train_convs[: data.max_samples]
    if data.eval:
        # capped as LLaMA-Factory caps its eval_dataset: max_samples applies to every dataset it loads
        eval_convs = load_conversations(data.eval, data, stats["eval"], data.max_samples_per_file, pairs)
    else:
        train_convs, eval_convs = split_validation(train_convs, data.val_size, data.seed)
    stats["eval"].also_trained = _also_trained(eval_convs, train_convs)
    encode = encode_pairs if pairs else encode_all
    train = encode(train_convs, encoder, data, stats["train"])
    evals = encode(eval_convs, encoder, data, stats["eval"])
    if not train:
        raise DataError(f"no training examples left: all {stats['train'].rows} rows were dropped as longer than "
                        f"data.max_length={data.max_length} or without a trained token")
    if (data.eval or data.val_size) and not evals:  # else the run would never evaluate, and say nothing
        raise DataError(f"no validation examples left: all {stats['eval'].rows} rows of "
                        f"{'data.eval' if data.eval else f'data.val_size={data.val_size}'} were dropped as longer "
                        f"than data.max_length={data.max_length} or without a trained token")
    for split, s in stats.items():
        for note in s.notes():
            log.warning("%s data: %s", split, note)
        if s.overflow:
            chat = " (chat rows cannot be split: truncated)" if data.on_overflow == "split" and s.truncated else ""
            log.warning("%s: %d of %d rows longer than max_length=%d (%s: %d split into windows, %d truncated, "
                        "%d dropped)%s", split, s.overflow, s.rows, data.max_length, data.on_overflow, s.split,
                        s.truncated, s.dropped, chat)
    kept = {e.where for e in evals}  # the validation rows that survived the length policy
    return Datasets(train, evals, template_name, stats, prompt_shape(train_convs),
                    [c for c in eval_convs if c.where in kept])


def _also_trained(eval_convs: list[Conversation], train_convs: list[Conversation]) -> int:
    """How many validation conversations a training conversation equals, turn for turn (an eval_dataset that is
    also among the training datasets, as LLaMA-Factory's examples suggest)."""
    def key(c: Conversation) -> tuple[Any, ...]:
        return tuple((t.role, t.content) for t in c.turns) + tuple((t.role, t.content) for t in c.rejected or ())

    trained = {key(c) for c in train_convs}
    return sum(key(c) in trained for c in eval_convs)
