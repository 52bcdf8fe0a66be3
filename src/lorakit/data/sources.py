"""Read data files into records, each tagged with where it came from (``path:line``).

Supported: .jsonl (one JSON object a line), .json (a list of objects), .csv (header row),
.parquet, and .txt (one plain-text example a non-empty line).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import DataError
from lorakit.textfile import read_json, read_lines

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class Record:
    """One raw row and its location, e.g. ``data/train.jsonl:12``."""

    row: dict[str, Any]
    where: str


class ErrorCollector:
    """Gather up to ``limit`` row errors, then stop: one pass reports many bad rows at once."""

    def __init__(self, limit: int = MAX_REPORTED_ERRORS) -> None:
        self.limit = limit
        self.errors: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.errors) < self.limit:
            self.errors.append(message)

    @property
    def full(self) -> bool:
        return self.total >= self.limit

    def raise_if_any(self) -> None:
        if self.errors:
            more = f"\n(stopped after {self.limit} errors)" if self.full else ""
            raise DataError("\n".join(self.errors) + more)


def read_records(path: str | Path, errors: ErrorCollector) -> Iterator[Record]:
    """Yield the rows of one data file; malformed rows go to ``errors`` with their line number.

    Raises:
        DataError: the file is missing, has an unknown suffix or cannot be parsed at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, errors)
    elif suffix == ".json":
        yield from _read_json(path, errors)
    elif suffix == ".csv":
        for index, row in enumerate(csv.DictReader(line for _, line in read_lines(path, DataError))):
            yield Record(dict(row), f"{path}:{index + 2}")  # line 1 is the header
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix == ".txt":
        for line_no, line in read_lines(path, DataError):
            if line.strip():
                yield Record({"text": line.rstrip("\r\n")}, f"{path}:{line_no}")
    else:
        raise DataError(f"unsupported data file {path}: use one of {', '.join(SUFFIXES)}")


def _read_jsonl(path: Path, errors: ErrorCollector) -> Iterator[Record]:
    for line_no, line in read_lines(path, DataError):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            errors.add(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(row, dict):
            errors.add(f"{path}:{line_no}: expected a JSON object (got {type(row).__name__})")
            continue
        yield Record(row, f"{path}:{line_no}")


def _read_json(path: Path, errors: ErrorCollector) -> Iterator[Record]:
    rows = read_json(path, DataError, list, "a .json data file must hold a list of objects")
    for index, row in enumerate(rows):
        if isinstance(row, dict):
            yield Record(row, f"{path}:item {index}")
        else:
            errors.add(f"{path}:item {index}: expected a JSON object (got {type(row).__name__})")


def _read_parquet(path: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise DataError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read parquet ({e})") from None
    for index, row in enumerate(table.to_pylist()):
        yield Record(row, f"{path}:row {index}")
