"""trainer_log.jsonl: one JSON line per logged step and per validation (LLaMA-Factory's field names).

Its one writer. lorakit's trainer appends through ``TrainerLog.callback``, a resumed run drops the lines after its
resume point (``trim_after``), and an external trainer's loss curve is written once from what it logged
(``write_history``). Readers (``lorakit status``, the card, the dashboard) use ``read``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from lorakit.config.schema import PAIR_STATS
from lorakit.train.callbacks import LoggedMeans, eval_values

FILE = "trainer_log.jsonl"


def _hms(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def _finite(value: Any) -> Any:
    # NaN/inf are not JSON; null keeps every line parseable.
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class TrainerLog:
    path: Path

    @classmethod
    def of(cls, run_dir: Path) -> TrainerLog:
        return cls(run_dir / FILE)

    def read(self) -> list[dict[str, Any]]:
        """Every line, parsed (a half-written last line of a live run is skipped)."""
        if not self.path.is_file():
            return []
        entries = []
        # errors="replace": an external trainer's own log, or a line cut mid-character, is read as far as it goes
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def callback(self, log_every: int) -> JsonlMetrics:
        """The training loop's callback that appends a line per logged step and per validation."""
        return JsonlMetrics(self.path, log_every)

    def trim_after(self, steps_done: int) -> None:
        """Drop the lines of steps after a resume point: they will be logged again."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("current_steps", 0) <= steps_done]
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def write_history(self, history: list[dict[str, Any]], total_steps: int | None) -> None:
        """An external trainer's loss curve ({"step", "loss", ...} per step), written as this file."""
        self.path.write_text("".join(json.dumps({"current_steps": h["step"], "total_steps": total_steps,
                                                 **{k: _finite(v) for k, v in h.items() if k != "step"}}) + "\n"
                                     for h in history), encoding="utf-8")


class JsonlMetrics:
    """Append a JSON line per logged step to ``trainer_log.jsonl``.

    Each line is flushed, so ``tail -f`` works and a crashed run keeps every finished step.
    """

    def __init__(self, path: Path, log_every: int) -> None:
        self.path = path
        self.means = LoggedMeans(log_every)
        self.total_steps = 0
        self._file = None

    def on_train_begin(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self._file = self.path.open("a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "on_train_begin opens the file"
        self._file.write(json.dumps({k: _finite(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def _base(self, m: dict[str, Any]) -> dict[str, Any]:
        return {
            "current_steps": m["step"],
            "total_steps": m["total_steps"],
            "epoch": round(m["epoch"], 4),
            "percentage": round(100.0 * m["step"] / max(1, m["total_steps"]), 2),
            "elapsed_time": _hms(m["elapsed_s"]),
            "remaining_time": _hms(m["remaining_s"]),
        }

    def on_step_end(self, step_metrics: dict[str, Any]) -> None:
        metrics = self.means.add(step_metrics)  # the loss: the mean since the last line, as LLaMA-Factory's
        if metrics is None:
            return
        self._write({**self._base(metrics), "loss": round(metrics["loss"], 6), "lr": metrics["lr"],
                     "grad_norm": round(metrics["grad_norm"], 6),
                     "tokens_per_second": round(metrics["tokens_per_second"], 1),
                     "trained_tokens": metrics["trained_tokens"],
                     **({"memory_gib": round(metrics["memory_gib"], 3)} if "memory_gib" in metrics else {}),
                     **{name: round(metrics[name], 6) for name in PAIR_STATS if name in metrics}})

    def on_evaluate(self, metrics: dict[str, Any]) -> None:
        self._write({**self._base(metrics), **{k: round(v, 6) for k, v in eval_values(metrics).items()}})

    def on_samples(self, step: int, samples: list[dict[str, str]]) -> None:
        pass

    def on_train_end(self, status: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
