"""``lorakit data check``: what a data file holds and how it will be tokenised, without training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lorakit.config.schema import DataSection
from lorakit.data.dataset import SplitStats, build_encoder, encode_all, encode_pairs, load_conversations
from lorakit.data.tokenize import IGNORE, Example
from lorakit.errors import LabelledRows, PreferenceRows

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


@dataclass
class CheckReport:
    formats: dict[str, str]
    rows: int
    max_length: int | None = None
    template: str | None = None
    stats: SplitStats | None = None
    percentiles: dict[str, int] = field(default_factory=dict)
    example: str | None = None  # one rendered example, trained span between ⟦ ⟧
    notes: list[str] = field(default_factory=list)  # ignored fields, rows left out, placeholders


def percentiles(lengths: Sequence[int]) -> dict[str, int]:
    ordered = sorted(lengths)
    if not ordered:
        return {}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]  # noqa: E731
    return {"min": ordered[0], "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


def render_trained_span(example: Example, tokenizer: Any) -> str:
    """Decode an example, wrapping each run of trained tokens in ⟦ ⟧."""
    pieces, run, trained = [], [], False
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if (label != IGNORE) != trained and run:
            text = tokenizer.decode(run)
            pieces.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text)
            run = []
        trained = label != IGNORE
        run.append(token)
    if run:
        text = tokenizer.decode(run)
        pieces.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text)
    return "".join(pieces)


@dataclass
class _Read:
    conversations: list[Any]
    stats: SplitStats
    pairs: bool
    data: DataSection | None
    notes: list[str] = field(default_factory=list)  # how rows no config decides about were read


def _read(paths: Sequence[str], data: DataSection | None, cap: int | None, pairs: bool | None) -> _Read:
    """The rows as the config reads them; with none (``pairs`` None), as the rows are: pairs as train.method: dpo
    reads them, true/false-labelled rows as data.label_field: label does (a config's own refusal stands)."""
    stats = SplitStats()
    try:
        return _Read(load_conversations(paths, data, stats, cap, pairs=bool(pairs)), stats, bool(pairs), data)
    except PreferenceRows:
        if pairs is not None:
            raise
        stats = SplitStats()
        return _Read(load_conversations(paths, data, stats, cap, pairs=True), stats, True, data,
                     ["rows are preference pairs: read as train.method: dpo reads them"])
    except LabelledRows:
        if pairs is not None:
            raise
        labelled = (data or DataSection(train=list(paths))).model_copy(update={"label_field": "label"})
        stats = SplitStats()
        return _Read(load_conversations(paths, labelled, stats, cap), stats, False,
                     labelled if data is not None else None,
                     ["rows carry a true/false label: read as data.label_field: label reads them"])


def check_data(paths: Sequence[str], data: DataSection | None = None, tokenizer: Any = None,
               pairs: bool | None = None) -> CheckReport:
    """Detect formats and count rows; with a tokenizer, also token lengths and a rendered example (``pairs``:
    preference pairs, as ``train.method: dpo`` reads them; lengths are both sides', the example the chosen side;
    None, as no config decides it: pairs when the rows are pairs).

    Raises:
        DataError: the same errors training would raise for these files.
    """
    cap = data.max_samples_per_file if data is not None else None  # as training reads each file
    read = _read(paths, data, cap, pairs)
    conversations, loaded, pairs, data = read.conversations, read.stats, read.pairs, read.data
    capped = [f"data.max_samples_per_file: the first {cap} rows of each file"] if cap else []
    report = CheckReport(loaded.formats, len(conversations), notes=read.notes + loaded.notes() + capped)
    if tokenizer is None or data is None:
        return report
    encoder, report.template = build_encoder(data, tokenizer)
    stats = SplitStats()
    # Measure every row at full length; over-length rows are counted, not cut, here.
    unlimited = data.model_copy(update={"max_length": 10**9, "on_overflow": "truncate", "stride": 0})
    if pairs:  # a pair is over the limit when one of its sides is
        encoded = encode_pairs(conversations, encoder, unlimited, stats)
        examples, longest = [p.chosen for p in encoded], [p.longest for p in encoded]
    else:
        examples = encode_all(conversations, encoder, unlimited, stats)
        longest = stats.lengths
    report.max_length = data.max_length
    stats.overflow = sum(length > data.max_length for length in longest)
    report.stats = stats
    report.percentiles = percentiles(stats.lengths)
    if examples:
        # A tool-calling row shows the most of what the template does, so it is shown when there is one.
        tool_row = next((c.where for c in conversations if c.tools or any(t.tool_calls for t in c.turns)), None)
        shown = next((e for e in examples if e.where == tool_row), examples[0])
        report.example = render_trained_span(shown, tokenizer)
    return report
