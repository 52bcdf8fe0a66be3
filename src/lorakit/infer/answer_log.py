"""Answers kept as they come, so a long ``infer --output`` or ``data pairs`` stopped half way loses none of them.

Each answer is appended to a hidden file beside the output (``.NAME.answers.jsonl``) the moment its lane ends,
keyed by the sha256 of what decided it: the model's weights (their bytes), the engine and sampling settings, the
prompt's token ids and its length budget. The same command run again answers only the questions without a kept
answer; a changed input, template, adapter or setting simply finds no match. The file is lorakit's own and is
removed once the output holds every answer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from lorakit.digest import file_sha256
from lorakit.errors import WriteError

log = logging.getLogger(__name__)

SYNC_EVERY_S = 5.0  # appended lines are flushed at once (a killed process keeps them); synced to disk this often


def model_fingerprint(adapter: Any, engine: str) -> str:
    """The bytes that decide a model's answers: its weight files, and its base model's identity (a content hash
    of the base's file where lorakit resolved one, else its name and revision)."""
    digest = hashlib.sha256(engine.encode())
    base = getattr(adapter.base, "identity", None) or {}
    digest.update(json.dumps({k: v for k, v in base.items() if k != "file"}, sort_keys=True).encode())
    for path in adapter.weights:
        digest.update(f"{path.name}:{file_sha256(path)}".encode())
    return digest.hexdigest()


class AnswerLog:
    """The answers already found for an output file (``recall``), and each new one as it comes (``add``)."""

    def __init__(self, target: Path, model: str, settings: dict[str, Any]) -> None:
        self.path = target.with_name(f".{target.name}.answers.jsonl")
        self.salt = json.dumps({"model": model, **settings}, sort_keys=True)
        self.known = self._read()
        self.file: IO[str] | None = None
        self.synced = time.monotonic()

    def key(self, prompt: Sequence[int], budget: int) -> str:
        return hashlib.sha256(f"{self.salt}|{budget}|{','.join(map(str, prompt))}".encode()).hexdigest()

    def recall(self, prompts: Sequence[Sequence[int]], budgets: Sequence[int]) -> dict[int, str]:
        """{index: answer} of the prompts answered before with everything else the same."""
        found = {i: self.known[k] for i, (p, b) in enumerate(zip(prompts, budgets, strict=True))
                 if (k := self.key(p, b)) in self.known}
        if found:
            log.info("kept %d of %d answers from an earlier run that stopped (%s)", len(found), len(prompts),
                     self.path.name)
        return found

    def add(self, prompt: Sequence[int], budget: int, answer: str) -> None:
        key = self.key(prompt, budget)
        self.known[key] = answer
        if self.file is None:
            self.file = self._open_alone()
        self.file.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")
        self.file.flush()
        if time.monotonic() - self.synced > SYNC_EVERY_S:
            os.fsync(self.file.fileno())
            self.synced = time.monotonic()

    def _open_alone(self) -> IO[str]:
        """The log opened to append, held by this process only: a second command answering into the same output
        at the same time would write over this one's output at its end, so it stops here, at its first answer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)  # the output's folder, made as the output would be
        file = self.path.open("a", encoding="utf-8")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            target = self.path.with_name(self.path.name[1:].removesuffix(".answers.jsonl"))
            raise WriteError(f"{target}: another command is answering into it now (its answers go to {self.path}); "
                             "wait for it to end, or give another output") from None
        return file

    def __enter__(self) -> AnswerLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        """A stop half way (Ctrl+C) says what is kept and how to go on; the file is closed either way."""
        if kind is KeyboardInterrupt and self.known:
            log.warning("stopped: %d answers kept in %s; the same command run again goes on from them",
                        len(self.known), self.path)
        self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def remove(self, written: Path, text: str) -> bool:
        """The kept answers deleted, once ``written`` (the output) reads back, now, as ``text``: then it is the good
        copy of what they were kept for. Otherwise they stay, and a warning says where."""
        self.close()
        try:
            holds = written.read_text(encoding="utf-8") == text
        except (OSError, UnicodeDecodeError):
            holds = False
        if not holds:
            log.warning("%s does not read back as it was written; the answers stay kept in %s", written, self.path)
            return False
        self.path.unlink(missing_ok=True)
        return True

    def _read(self) -> dict[str, str]:
        known: dict[str, str] = {}
        if not self.path.is_file():
            return known
        with self.path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    known[str(entry["key"])] = str(entry["answer"])
                except (ValueError, KeyError, TypeError):
                    continue  # the line a killed process was writing
        return known
