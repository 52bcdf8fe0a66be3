"""The one way lorakit hashes a file (sha256, read in blocks): manifests, dataset fingerprints, base models and
the queue's every comparison use it, so two records of one file always agree."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
