"""A model file's sha256, remembered beside the conversions it names (``~/.cache/lorakit/models/digests.json``).

Hashing Gemma-3 270M's 253 MB GGUF takes 0.5 s of every start (its digest names the conversion folder and
identifies the base in each manifest). The digest is kept with the file's device, inode, size and its
modification and change times in nanoseconds: any write to the file changes its change time (which no user call
can set back), so a file that kept all five is the file that was hashed. Only base-model files are remembered;
every other comparison lorakit makes (datasets, results, the queue) hashes the bytes each time.
"""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.atomic import write_json_atomic
from lorakit.digest import file_sha256

MEMO = "digests.json"


def remembered_sha256(path: Path, folder: Path) -> str:
    """``path``'s sha256: from ``folder``/digests.json when the file is unchanged since, else hashed (and kept)."""
    key = str(path.resolve())
    stamp = file_stamp(path)
    memo = _read(folder / MEMO)
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(path)
    if file_stamp(path) == stamp:  # not written while it was read
        memo[key] = {"stat": stamp, "sha256": digest}
        _write(folder / MEMO, memo)
    return digest


def file_stamp(path: Path) -> list[int]:
    """The file's device, inode, size, modification and change times (ns): what any write to it changes."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read(memo: Path) -> dict:
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every file is hashed again
    return data if isinstance(data, dict) else {}


def _write(memo: Path, data: dict) -> None:
    """Atomically (another process may read it meanwhile); a cache that cannot be written is only slower."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo, data)
    except OSError:
        pass
