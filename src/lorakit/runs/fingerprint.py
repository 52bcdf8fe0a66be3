"""A dataset folder by content: every file's path, size and sha256, and one sha256 over that list.

The combined sha256 is a dataset's identity wherever lorakit has to know what a run was trained on:
the run's manifest records it (``dataset``), and the queue takes a run as a dataset's result only when
the two are equal, never by name. A file's content, not its name or date, decides.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lorakit.digest import file_sha256

LISTING_HEADER = "path\tbytes\tsha256\n"


def listing(folder: Path) -> str:
    """One ``path<TAB>bytes<TAB>sha256`` line per file under ``folder`` (any depth, hidden ones too), by path."""
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rows.append(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}\t{file_sha256(path)}\n")
    return "".join(rows)


def content_sha256(folder: Path) -> str:
    """The dataset's identity: sha256 of its listing."""
    return hashlib.sha256(listing(folder).encode()).hexdigest()


def fingerprint_dataset(folder: Path, listing_file: Path | None = None) -> dict[str, Any]:
    """Every file under ``folder`` (images and captions too): count, bytes and the combined sha256; the per-file
    listing goes to ``listing_file`` (tab-separated) when given."""
    text = listing(folder)
    if listing_file is not None:
        listing_file.write_text(LISTING_HEADER + text, encoding="utf-8")
    lines = [line.split("\t") for line in text.splitlines()]
    return {"path": str(folder.resolve()), "name": folder.name, "files": len(lines),
            "bytes": sum(int(size) for _, size, _ in lines), "sha256": hashlib.sha256(text.encode()).hexdigest(),
            **({"list": listing_file.name} if listing_file is not None else {})}
