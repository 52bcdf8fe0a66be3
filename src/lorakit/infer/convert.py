"""Inference over files: a long text converted piece by piece, or a JSONL file row by row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from lorakit.data.formats import Turn
from lorakit.errors import DataError
from lorakit.infer.chunking import split_text
from lorakit.infer.document import DocumentResult, convert_document
from lorakit.infer.generate import generate, generate_turns
from lorakit.infer.load import LoadedAdapter
from lorakit.infer.row_prompts import is_conversation_row, question_of
from lorakit.textfile import read_text

INPUT_FIELDS = ("input", "tex", "text", "prompt", "question")
ANSWER_KEYS = ("output", "predict")
MIN_PIECE_TOKENS = 16


def piece_budget(adapter: LoadedAdapter) -> int:
    """Tokens of input per piece: the prompt wrapping and an answer about as long as the input must fit too."""
    overhead = len(adapter.encoder.prompt_ids(adapter.shape.turns("")))
    return max(MIN_PIECE_TOKENS, (adapter.max_length - overhead) // 2)


def convert_text(adapter: LoadedAdapter, text: str, chunking: bool = True, piece_tokens: int | None = None,
                 **options: Any) -> str:
    """``text`` converted; with chunking, in pieces that fit the context, joined in order with their spacing.

    Args:
        piece_tokens: input tokens per piece; default ``piece_budget``.
    """
    if not text.strip():
        raise DataError("the input is empty")

    def size(piece: str) -> int:
        return len(adapter.tokenizer(piece, add_special_tokens=False)["input_ids"])

    pieces = split_text(text, piece_tokens or piece_budget(adapter), size) if chunking else [text]
    cores = [p.strip() for p in pieces]
    answers = iter(generate(adapter, [c for c in cores if c], **{"length_ratio": 2.0, **options}))
    out = []
    for piece, core in zip(pieces, cores, strict=True):
        if not core:
            out.append(piece)
            continue
        lead = piece[: len(piece) - len(piece.lstrip())]
        trail = piece[len(piece.rstrip()):]
        out.append(f"{lead}{next(answers)}{trail}")
    return "".join(out)


class Unit(str, Enum):
    """What of a text file goes to the model as one input (``infer --unit``)."""

    AUTO = "auto"  # document for .tex, line for .txt, piece otherwise
    DOCUMENT = "document"  # each formula of a LaTeX document alone, the prose by rules
    LINE = "line"  # each line alone (one formula a line)
    PIECE = "piece"  # pieces as long as the context allows, cut between paragraphs or lines

    @classmethod
    def names(cls) -> list[str]:
        return [u.value for u in cls]

    @classmethod
    def for_input(cls, unit: str, path: str) -> Unit:
        if unit != cls.AUTO:
            return cls(unit)
        suffix = Path(path).suffix.lower()
        return cls.DOCUMENT if suffix == ".tex" else cls.LINE if suffix == ".txt" else cls.PIECE


def convert_lines(adapter: LoadedAdapter, text: str, **options: Any) -> str:
    """Each non-blank line converted on its own, the blank lines and each line's indentation kept."""
    lines = text.split("\n")
    answers = iter(generate(adapter, [line.strip() for line in lines if line.strip()], **options))
    return "\n".join(line[: len(line) - len(line.lstrip())] + next(answers) if line.strip() else line
                     for line in lines)


def convert_tex(adapter: LoadedAdapter, text: str, **options: Any) -> DocumentResult:
    """A LaTeX document in Typst: each formula by the adapter alone, the prose by rules (infer/document.py)."""
    return convert_document(text, lambda formulas: generate(adapter, formulas, **options))


def read_jsonl(path: Path | None, text: str | None = None) -> list[dict[str, Any]]:
    """Rows of a JSONL file (or text); a malformed line is an error naming it."""
    source = text if text is not None else read_text(Path(path), DataError)  # type: ignore[arg-type]
    rows = []
    for number, line in enumerate(source.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path or 'stdin'}:{number}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path or 'stdin'}:{number}: each line must be a JSON object")
        rows.append(row)
    if not rows:
        raise DataError(f"{path or 'stdin'}: the input is empty")
    return rows


@dataclass(frozen=True)
class InputRows:
    """The rows of an input file, each with where it is (``path:line``, ``path:item N``), for its errors."""

    rows: list[dict[str, Any]]
    places: list[str]


def read_input_rows(path: Path) -> InputRows | None:
    """The rows of a table file (``.jsonl``; ``.json`` as LLaMA-Factory keeps its datasets; ``.csv`` with a header;
    ``.parquet``), read as training reads them; None for a text input.

    Raises:
        DataError: a row or the file that does not read, naming the place; no rows at all.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return jsonl_rows(read_text(path, DataError), path)
    if suffix not in (".json", ".csv", ".parquet"):
        return None
    from lorakit.data.sources import ErrorCollector, read_records

    errors = ErrorCollector()
    records = list(read_records(path, errors))
    errors.raise_if_any()
    if not records:
        raise DataError(f"{path}: the input is empty")
    return InputRows([r.row for r in records], [r.where for r in records])


def jsonl_rows(text: str, path: Path | None) -> InputRows:
    """The rows of JSONL text (of ``path``, or stdin), each at its line."""
    where = path if path is not None else "stdin"
    return InputRows(read_jsonl(path, text), [f"{where}:{n}" for n, line in enumerate(text.splitlines(), 1)
                                              if line.strip()])


def stdin_rows(text: str) -> InputRows | None:
    """JSONL piped in (its first non-blank line a JSON object) as rows, each at ``stdin:N``; None for text.

    Raises:
        DataError: a later line that is not a JSON object, naming it."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        if not isinstance(json.loads(first), dict):
            return None
    except json.JSONDecodeError:
        return None
    return jsonl_rows(text, None)


def input_field(rows: Sequence[dict[str, Any]], wanted: str | None, where: str,
                places: Sequence[str] | None = None) -> str | None:
    """The field whose text each row asks about (wrapped as the run's training prompts were), or None for rows in a
    training format, which carry their whole question (alpaca's instruction and input, a chat's messages).
    ``places``: where each row is (default: ``where:1``, ``where:2``... as in a JSONL file without blank lines).

    Raises:
        DataError: a row without the field, or rows that mix both kinds; which line, and what to give.
    """
    places = places or numbered(where, len(rows))
    if wanted is not None:
        missing = next((i for i, r in enumerate(rows) if not isinstance(r.get(wanted), str)), None)
        if missing is not None:
            raise DataError(f"{places[missing]}: no text field {wanted!r}")
        return wanted
    kinds = [is_conversation_row(r) for r in rows]
    if all(kinds):
        return None
    if any(kinds):
        raise DataError(f"{places[kinds.index(not kinds[0])]}: rows mix training-format questions (instruction or "
                        "messages) with plain fields; give --input-field to read one field of every row, or split the "
                        "file")
    for name in INPUT_FIELDS:
        if all(isinstance(r.get(name), str) for r in rows):
            return name
    raise DataError(f"{where}: no input field shared by every row; give --input-field (tried "
                    f"{', '.join(INPUT_FIELDS)}), or give rows in a training format (instruction, messages)")


def answer_key(rows: Sequence[dict[str, Any]]) -> str:
    """Where each row's answer goes: ``output``, or ``predict`` (LLaMA-Factory's name for predictions) where rows
    already hold an ``output`` (a reference), which is kept.

    Raises:
        DataError: the rows hold both names.
    """
    key = next((k for k in ANSWER_KEYS if not any(k in r for r in rows)), None)
    if key is None:
        raise DataError(f"rows already hold {' and '.join(ANSWER_KEYS)}: the answers would replace one; remove "
                        "one of the fields")
    return key


def convert_rows(adapter: LoadedAdapter, rows: list[dict[str, Any]], field: str | None, where: str = "input",
                 places: Sequence[str] | None = None, **options: Any) -> list[dict]:
    """Each row with its answer added (under ``answer_key``): to its ``field`` wrapped as the run's training
    prompts were, or, ``field`` None, to the question its training format asks.

    Raises:
        DataError: a row that does not read in its format (its place: ``where:line: ...``).
    """
    key = answer_key(rows)
    if field is not None:
        answers = generate(adapter, [r[field] for r in rows], **options)
    else:
        questions = [_question(row, place) for row, place in zip(rows, places or numbered(where, len(rows)),
                                                                   strict=True)]
        answers = generate_turns(adapter, [turns for turns, _ in questions], tools=[t for _, t in questions],
                                 **options)
    return [{**row, key: answer} for row, answer in zip(rows, answers, strict=True)]


def _question(row: dict[str, Any], place: str) -> tuple[list[Turn], list[dict[str, Any]] | None]:
    try:
        turns, _, tools = question_of(row)
    except DataError as e:
        raise DataError(f"{place}: {e}") from None
    return turns, tools


def numbered(where: str, count: int) -> list[str]:
    return [f"{where}:{n}" for n in range(1, count + 1)]
