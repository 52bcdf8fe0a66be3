"""What the queue said, kept beside its state: every warning it prints (a dataset kept and why, a name taken, a
remote that changed, clean-up off) is also appended to ``work_dir/.lorakit-queue-notices.jsonl``, so the
dashboard's queue page shows them after the terminal that printed them is gone."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lorakit.redaction import redact_text
from lorakit.runs.manifest import now

NOTICES_FILE = ".lorakit-queue-notices.jsonl"
KEPT = 200  # the newest notices a reader shows
READ = 20_000  # the newest lines read for them (a queue run every 5 minutes, about two months of one notice)


class NoticeLog(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps({"at": now(), "level": record.levelname.lower(),
                               "message": redact_text(record.getMessage())})
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        except Exception:  # a full disk must not stop the queue over a notice
            self.handleError(record)


@contextmanager
def recording_notices(work_dir: Path) -> Iterator[None]:
    """While the queue runs: its warnings also go to the notices file."""
    handler = NoticeLog(work_dir / NOTICES_FILE)
    logger = logging.getLogger("lorakit.queue")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def read_notices(work_dir: Path) -> list[dict[str, str]]:
    """The newest notices, oldest first (a line that cannot be read is skipped). A notice said again (the same
    folder left alone on every run of a queue started by cron) is one entry: its latest time, how many times
    and since when, so it does not push the others out."""
    path = work_dir / NOTICES_FILE
    if not path.is_file():
        return []
    said: dict[tuple[str, str], dict[str, str]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[-READ:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        notice = {k: str(entry.get(k, "")) for k in ("at", "level", "message")}
        earlier = said.pop((notice["level"], notice["message"]), None)  # popped: it moves to the newest place
        notice["times"] = str(int(earlier["times"]) + 1 if earlier else 1)
        notice["since"] = earlier["since"] if earlier else notice["at"]
        said[(notice["level"], notice["message"])] = notice
    return list(said.values())[-KEPT:]
