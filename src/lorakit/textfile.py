"""Read a user's text file as UTF-8, or say in one line what it looks like instead.

Configs, data files and inputs arrive from Windows editors (UTF-16, a UTF-8 byte-order mark),
spreadsheets (Latin-1) and slips of the mouse (a .safetensors file given as the config). A
``UnicodeDecodeError`` names neither the file nor the fix, so every text file lorakit reads goes
through here. Cross-cutting like ``log.py``: config, data and infer all read text.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError

SNIFF_BYTES = 4096
# Magic numbers of files people give by mistake, and what to call them.
MAGIC = ((b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "a gzip archive"), (b"GGUF", "a GGUF model file"),
         (b"PAR1", "a parquet file"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
         (b"%PDF", "a PDF document"), (b"\x80\x02", "a pickle (PyTorch) file"), (b"\x7fELF", "a program"))
BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"))


def _looks_like(head: bytes) -> str | None:
    """What a file that is not UTF-8 text seems to be, from its first bytes; None if it may be text."""
    for bom, name in BOMS:
        if head.startswith(bom):
            return f"looks like {name}: re-save it as UTF-8"
    for magic, name in MAGIC:
        if head.startswith(magic):
            return f"looks like {name}, not text"
    if b"\x00" in head:
        # UTF-16 without a byte-order mark: mostly ASCII characters, each with a NUL beside it.
        pairs = [head[i : i + 2] for i in range(0, len(head) - 1, 2)]
        printable = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
        for text_at in (0, 1):  # little-endian: the character first; big-endian: the NUL first
            ascii_pairs = sum(1 for p in pairs if p[1 - text_at] == 0 and p[text_at] in printable)
            if ascii_pairs > 0.7 * len(pairs):
                return "looks like UTF-16: re-save it as UTF-8"
        return "looks like a binary file, not text"
    return None


def check_text(path: Path, error: type[LorakitError]) -> None:
    """Raise ``error`` naming ``path`` if its first bytes show it is not UTF-8 text."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if (what := _looks_like(head)) is not None:
        raise error(f"{path}: {what}")


def _decode_error(path: Path, e: UnicodeDecodeError, line: int | None = None) -> str:
    where = f"{path}:{line}" if line is not None else str(path)
    return (f"{where}: not UTF-8 text (byte 0x{e.object[e.start]:02x} cannot be decoded; Latin-1 or a Windows "
            "code page?): re-save it as UTF-8")


def read_text(path: Path, error: type[LorakitError]) -> str:
    """The whole file as text (a UTF-8 byte-order mark is dropped).

    Raises:
        error: the file is not UTF-8 text; the message names it and what it looks like.
    """
    check_text(path, error)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise error(_decode_error(path, e, line)) from None


def read_json(path: Path, error: type[LorakitError], holds: type = object, what: str = "") -> Any:
    """The file's JSON value, which must be a ``holds`` (``what`` says it in the error).

    Raises:
        error: the file is missing, not text, not JSON (``path:line: malformed JSON (...)``), or holds
            another type.
    """
    if not path.is_file():
        raise error(f"file not found: {path}")
    try:
        value = json.loads(read_text(path, error))
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(value, holds):
        raise error(f"{path}: {what} (got {type(value).__name__})")
    return value


def read_lines(path: Path, error: type[LorakitError]) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each line, streamed, a bad byte reported with its line number.

    Raises:
        error: the file is not UTF-8 text.
    """
    check_text(path, error)
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(_decode_error(path, e, number)) from None
            yield number, line.removeprefix("\ufeff") if number == 1 else line
