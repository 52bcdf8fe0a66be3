"""A peer config being turned into a nested lorakit config, with a line for every key."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.config.train_section import EVAL_METRICS, metric_key

# (the steps key, the strategy keys, lorakit's steps key, lorakit's count an epoch), as both peers write them
CADENCES = (("eval_steps", ("eval_strategy", "evaluation_strategy"), "train.eval_every", "train.evals_per_epoch"),
            ("save_steps", ("save_strategy",), "train.save_every", "train.saves_per_epoch"))
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant", "constant_with_warmup": "constant"}


def relative(path: Path, out_dir: Path) -> str:
    """``path`` as the written config must name it: relative to the folder the config is written to."""
    return os.path.relpath(path.resolve(), out_dir.resolve())


@dataclass(frozen=True)
class Line:
    outcome: str  # mapped | default | dropped | no equivalent
    key: str  # the peer's key (or, for a default, lorakit's)
    detail: str


@dataclass
class Translation:
    """The nested config so far and what happened to each key."""

    peer: str
    config: dict[str, Any] = field(default_factory=dict)
    lines: list[Line] = field(default_factory=list)

    def set(self, dotted: str, value: Any, key: str, note: str = "") -> None:
        node = self.config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.lines.append(Line("mapped", key, f"{dotted}: {value!r}" + (f" ({note})" if note else "")))

    def default(self, dotted: str, value: Any, why: str) -> None:
        """Write the peer's own default where lorakit's differs, so the run is the one the peer would do."""
        if self.get(dotted) is None:
            self.set(dotted, value, dotted)
            self.lines[-1] = Line("default", dotted, f"{value!r}: {why}")

    def get(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def drop(self, key: str, why: str) -> None:
        self.lines.append(Line("dropped", key, why))

    def none(self, key: str, why: str) -> None:
        self.lines.append(Line("no equivalent", key, why))

    def simple(self, raw: dict[str, Any], table: dict[str, str]) -> set[str]:
        """Copy the keys that map one to one; returns the keys it handled."""
        for key, dotted in table.items():
            if key in raw and raw[key] is not None:
                self.set(dotted, raw[key], key)
        return set(table)

    def dropped_all(self, raw: dict[str, Any], reasons: dict[str, str]) -> set[str]:
        for key, why in reasons.items():
            if key in raw:
                self.drop(key, why)
        return set(reasons)

    def common(self, raw: dict[str, Any], scheduler_key: str) -> set[str]:
        """The keys both peers write the same way: output_dir, the scheduler, resume_from_checkpoint."""
        if raw.get("resume_from_checkpoint"):
            self.none("resume_from_checkpoint", "a config starts a new run; lorakit train --resume RUN continues one "
                      "from its resume state (train.resumable)")
        if raw.get("output_dir"):
            path = Path(str(raw["output_dir"]))
            self.set("output.dir", str(path.parent) if str(path.parent) != "." else "runs", "output_dir",
                     "lorakit adds -v001, -v002... to the name")
            self.set("output.name", path.name.lstrip(".") or "run", "output_dir")
        scheduler = raw.get(scheduler_key)
        if scheduler in SCHEDULERS:
            self.set("train.scheduler", SCHEDULERS[scheduler], scheduler_key)
        elif scheduler is not None:
            self.none(scheduler_key, f"{scheduler}: lorakit schedules cosine, linear or constant")
        return {"output_dir", scheduler_key, "resume_from_checkpoint"}

    def leftovers(self, raw: dict[str, Any], handled: set[str]) -> None:
        """A line for each key nothing else took: left empty, it asks for nothing (axolotl's examples list
        ``deepspeed:``, ``wandb_project:``); else lorakit has no setting for it. ``false`` is not empty: a key whose
        default is on (LLaMA-Factory's ``enable_thinking``) asks for something when turned off."""
        for key, value in raw.items():
            if key in handled:
                continue
            if value is None or value == "" or value == [] or value == {}:
                self.drop(key, "left empty, it asks for nothing")
            else:
                self.none(key, "lorakit has no setting for it")

    def distributed(self, raw: dict[str, Any]) -> set[str]:
        for key in ("deepspeed", "fsdp", "fsdp_config"):
            if raw.get(key):
                self.none(key, "several GPUs: lorakit launch with launch.nproc and launch.strategy (ddp or fsdp)")
        return {"deepspeed", "fsdp", "fsdp_config"}

    def selection(self, raw: dict[str, Any]) -> set[str]:
        """Which adapter is kept and when training stops, as the Hugging Face trainer's keys say it:
        ``metric_for_best_model``, ``load_best_model_at_end`` and axolotl's ``early_stopping_patience``."""
        metric = raw.get("metric_for_best_model")
        chosen = None
        if metric is not None:
            name = str(metric).removeprefix("eval_")
            if name in EVAL_METRICS:
                chosen = metric_key(name)
                if name != "loss":  # measured only when asked for, as it generates answers
                    self.set("train.eval_metrics", ["loss", name], "metric_for_best_model")
            else:
                self.none("metric_for_best_model", f"{metric}: lorakit measures {', '.join(EVAL_METRICS)}")
        patience = raw.get("early_stopping_patience")
        if isinstance(patience, int) and not isinstance(patience, bool) and patience > 0:
            stopping = {"patience": patience, **({"metric": chosen} if chosen else {})}
            self.set("train.early_stopping", stopping, "early_stopping_patience", "the best adapter is kept")
        elif patience not in (None, False, 0):
            self.none("early_stopping_patience", f"{patience!r}: not a number of evaluations")
        elif chosen:
            self.set("train.best_metric", chosen, "metric_for_best_model")
        if raw.get("load_best_model_at_end"):
            self.set("train.keep", "best", "load_best_model_at_end")
        return {"metric_for_best_model", "early_stopping_patience", "load_best_model_at_end"}

    def cadence(self, raw: dict[str, Any], epochs: float) -> set[str]:
        """When to evaluate and save, as the Hugging Face trainer reads it: ``*_strategy: epoch`` is once an epoch;
        ``eval_steps`` and ``save_steps`` are a number of steps, or below 1 a share of the run's steps, which is
        lorakit's evals_per_epoch (saves_per_epoch) where it makes a whole number of them an epoch."""
        for steps_key, strategy_keys, every, per_epoch in CADENCES:
            strategy_key = next((key for key in strategy_keys if key in raw), "")
            if strategy_key and raw[strategy_key] == "epoch":
                self.set(per_epoch, 1, strategy_key)
                if raw.get(steps_key) is not None:
                    self.drop(steps_key, f"{strategy_key}: epoch decides")
                continue
            if strategy_key:
                self.drop(strategy_key, f"{raw[strategy_key]}: {every} or {per_epoch} say when")
            self._steps(raw, steps_key, every, per_epoch, epochs)
        return {key for steps_key, strategy_keys, _, _ in CADENCES for key in (steps_key, *strategy_keys)}

    def _steps(self, raw: dict[str, Any], key: str, every: str, per_epoch: str, epochs: float) -> None:
        value = raw.get(key)
        if value is None:
            return
        if not isinstance(value, int | float) or value <= 0:
            self.none(key, f"{value!r}: not a number of steps")
        elif value >= 1:
            self.set(every, math.ceil(value), key)
        elif not raw.get("max_steps") and _whole(times := 1 / (value * epochs)):
            self.set(per_epoch, round(times), key, f"a share {value} of the run's {epochs:g} epoch(s)")
        else:
            self.none(key, f"{value}: a share of the run's steps; set {every} (steps) or {per_epoch}")


def _whole(number: float) -> bool:
    return number >= 1 and abs(number - round(number)) < 0.01  # a share written to 3 digits: 0.0833 of 3 epochs is 4
