"""Preference pairs from an adapter's own mistakes (``lorakit data pairs``): its greedy answers to a file's
prompts, through the same engines as ``lorakit eval``, and a pair for every answer the metric judges wrong,
chosen = the file's answer, rejected = the adapter's.

The pairs are TRL's explicit-prompt rows (``prompt`` messages, ``chosen``/``rejected`` assistant messages,
``tools`` when the row had them), so ``train.method: dpo`` reads them as any other preference data, with the
prompt exactly as the run's training prompts were shaped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.atomic import check_writable, write_text_atomic
from lorakit.errors import DataError
from lorakit.infer import metrics as m
from lorakit.infer.engines import Engine
from lorakit.infer.evaluate import LENGTH_RATIO, EvalCase, case_turns, load_cases

log = logging.getLogger(__name__)

# What makes an answer wrong, by --metric: it differs from the file's answer (whitespace aside), or it does not
# compile as Typst math.
WRONG: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda answer, reference: m.normalise(answer) != m.normalise(reference),
    "typst": lambda answer, reference: not m.typst_math_compiles(answer),
}


@dataclass(frozen=True)
class MineOptions:
    metric: str = "exact"
    limit: int | None = None
    max_new_tokens: int = 256
    batch_size: int | None = None  # default: the engine's
    device: str = "auto"
    engine: str = Engine.TRANSFORMERS
    force: bool = False  # replace an existing --out file


@dataclass(frozen=True)
class MineSummary:
    prompts: int
    right: int
    pairs: int
    out: Path

    def line(self) -> str:
        share = self.right / max(1, self.prompts)
        return (f"{self.prompts} prompts: {self.right} answered right ({share:.1%}), {self.pairs} pairs written "
                f"to {self.out}")


def mine_pairs(ref: str, data: Path, out: Path, options: MineOptions = MineOptions(),
               runs_dir: Path = Path("runs")) -> MineSummary:
    """Write a pair for every prompt of ``data`` the run answers wrong; returns what it found.

    Raises:
        DataError: an unknown metric or its package missing, an unreadable file, or ``out`` exists (no --force).
        RunError, ModelError: as ``lorakit eval`` for the run and engine.
    """
    if options.metric not in WRONG:
        raise DataError(f"--metric: {options.metric!r} is not one of {', '.join(WRONG)}")
    if m.missing_packages([options.metric]):
        raise DataError(f"--metric: {options.metric} needs the {m.METRIC_PACKAGES[options.metric]} package: "
                        "pip install 'lorakit[eval]'")
    if out.exists() and not options.force:
        raise DataError(f"--out: {out} exists; choose another file or give --force to replace it")
    check_writable(out.parent, f"--out {out}", "choose another --out")  # before minutes of generating
    from lorakit.infer.answer_log import AnswerLog, model_fingerprint
    from lorakit.infer.engines import check_reference, default_batch_size, open_model
    from lorakit.infer.generate import generate_turns

    check_reference(ref, runs_dir, options.engine, None)
    cases = load_cases(data, limit=options.limit)
    adapter = open_model(ref, runs_dir, options.device, options.engine)
    prompts = [case_turns(adapter, c) for c in cases]
    # a stop half way keeps the answers found so far for the same command run again
    with AnswerLog(out, model_fingerprint(adapter, options.engine), {"temperature": 0.0, "stop": []}) as kept:
        answers = generate_turns(adapter, prompts, max_new_tokens=options.max_new_tokens,
                                 batch_size=options.batch_size or default_batch_size(options.engine),
                                 length_ratio=LENGTH_RATIO, tools=[c.tools for c in cases], kept=kept,
                                 on_batch=lambda done: log.info("%s: %d/%d answered", adapter.name, done, len(cases)))
    wrong = WRONG[options.metric]
    rows = [_pair_row(turns, case, answer) for turns, case, answer in zip(prompts, cases, answers, strict=True)
            if wrong(answer, case.reference)]
    kept.remove(out, _write_jsonl(out, rows))  # the pairs are written: their answers are not needed any more
    return MineSummary(len(cases), len(cases) - len(rows), len(rows), out)


def _pair_row(turns: list[Any], case: EvalCase, answer: str) -> dict[str, Any]:
    if all(t.role == "text" for t in turns):  # plain text prompts: TRL's string pairs
        return {"prompt": "".join(t.content for t in turns), "chosen": case.reference, "rejected": answer}
    row: dict[str, Any] = {"prompt": [t.message() for t in turns],
                           "chosen": [{"role": "assistant", "content": case.reference}],
                           "rejected": [{"role": "assistant", "content": answer}]}
    if case.tools:
        row["tools"] = case.tools
    return row


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    """All rows or nothing (``write_text_atomic``); the text written."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return text
