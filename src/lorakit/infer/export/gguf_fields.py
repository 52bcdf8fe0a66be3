"""A GGUF's key/value fields, read without its tensors.

``gguf.GGUFReader`` makes a numpy view of every part of every field, the vocabulary's 262,144 strings and their
scores included, before anything can be asked: 11 s for the header of a Gemma-3 GGUF on 2 cores, paid at every
``--engine llama.cpp`` start for the few ``lorakit.*`` fields lorakit wrote. This reads the same little-endian
layout with ``struct`` and builds only the fields asked for (others are stepped over): 0.1 s.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import ModelError

MAGIC = b"GGUF"
STRING, ARRAY = 8, 9  # gguf.GGUFValueType
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass(frozen=True)
class Field:
    kind: int  # its gguf.GGUFValueType
    item_kind: int | None  # an array's items' type (GGUFWriter's ``sub_type``)
    value: Any  # str, int, float, bool, or a list of them


def read_fields(path: Path, wanted: Callable[[str], bool]) -> dict[str, Field]:
    """The fields whose keys ``wanted`` accepts, in the file's order.

    Raises:
        ModelError: not a GGUF file, or one cut short.
    """
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != MAGIC or len(data) < 24:
            raise ModelError(f"{path}: not a GGUF file (it does not begin with 'GGUF')")
        version, _, count = struct.unpack_from("<IQQ", data, 4)
        if version not in (2, 3):  # a big-endian file, or a version this was not written for
            return _read_with_gguf(path, wanted)
        reader = _Reader(data)
        reader.offset = 24
        fields = {}
        try:
            for _ in range(count):
                key = reader.string()
                kind = reader.scalar("I")
                if wanted(key):
                    fields[key] = reader.field(kind)
                else:
                    reader.skip(kind)
        except (struct.error, UnicodeDecodeError) as err:
            raise ModelError(f"{path}: its fields are cut short or garbled ({err}); download or export it "
                             "again") from err
        return fields


class _Reader:
    """Values read at a moving offset of the file's bytes."""

    def __init__(self, data: Any) -> None:
        self.data, self.offset = data, 0

    def scalar(self, code: str) -> Any:
        (value,) = struct.unpack_from("<" + code, self.data, self.offset)
        self.offset += struct.calcsize(code)
        return value

    def string(self) -> str:
        size = self.scalar("Q")
        end = self.offset + size
        if end > len(self.data):
            raise struct.error("a string runs past the end of the file")
        text = bytes(self.data[self.offset : end]).decode("utf-8")
        self.offset = end
        return text

    def field(self, kind: int) -> Field:
        if kind != ARRAY:
            return Field(kind, None, self.value(kind))
        item_kind, count = self.scalar("I"), self.scalar("Q")
        if item_kind in SCALARS:  # all at once: a quarter of a million scores is one unpack
            code = SCALARS[item_kind]
            values = list(struct.unpack_from(f"<{count}{code}", self.data, self.offset))
            self.offset += count * struct.calcsize(code)
            return Field(kind, item_kind, values)
        return Field(kind, item_kind, [self.value(item_kind) for _ in range(count)])

    def value(self, kind: int) -> Any:
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            return self.field(kind).value
        if kind not in SCALARS:
            raise struct.error(f"unknown value type {kind}")
        return self.scalar(SCALARS[kind])

    def skip(self, kind: int) -> None:
        if kind == STRING:
            size = self.scalar("Q")  # read first: ``offset += scalar()`` would add to the offset before the read
            self.offset += size
        elif kind == ARRAY:
            item_kind, count = self.scalar("I"), self.scalar("Q")
            if item_kind in SCALARS:
                self.offset += count * struct.calcsize(SCALARS[item_kind])
            else:
                for _ in range(count):
                    self.skip(item_kind)
        elif kind in SCALARS:
            self.offset += struct.calcsize(SCALARS[kind])
        else:
            raise struct.error(f"unknown value type {kind}")


def _read_with_gguf(path: Path, wanted: Callable[[str], bool]) -> dict[str, Field]:
    """The same fields through ``gguf.GGUFReader`` (any byte order and version it knows; slow on a vocabulary;
    it reads an array of arrays as one flat list)."""
    import gguf

    fields = gguf.GGUFReader(path).fields
    return {key: Field(int(f.types[0]), int(f.types[-1]) if f.types[0] == ARRAY else None, f.contents())
            for key, f in fields.items() if wanted(key) and not key.startswith("GGUF.")}
