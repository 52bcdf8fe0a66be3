"""Two to four runs side by side: only the config keys that differ, data fingerprints, curves, metrics, samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.config.load import flatten_keys
from lorakit.runs.summary import RunView, log_entries, read_run, samples

MISSING = "(unset)"


@dataclass
class Comparison:
    views: list[RunView]
    config: list[tuple[str, list[Any]]] = field(default_factory=list)  # only the keys that differ
    data: list[tuple[str, list[str]]] = field(default_factory=list)  # file name -> sha256 per run
    metrics: list[tuple[str, list[Any]]] = field(default_factory=list)
    curves: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)  # run -> series -> [step, value]
    answers: list[tuple[str, list[str], bool]] = field(default_factory=list)  # prompt, answers, all the same


def compare_runs(runs: list[Path]) -> Comparison:
    views = [read_run(r, with_size=False) for r in runs]
    out = Comparison(views)
    configs = [flatten_keys(v.manifest.get("config") or {}) for v in views]
    for key in sorted(set().union(*configs)):
        values = [c.get(key, MISSING) for c in configs]
        if any(v != values[0] for v in values):
            out.config.append((key, values))
    names = [{Path(p).name: d for p, d in v.data.items()} for v in views]
    out.data = [(name, [n.get(name, MISSING) for n in names]) for name in sorted(set().union(*names))]
    metric_names = sorted({k for v in views for k, x in v.metrics.items() if isinstance(x, (int, float))})
    out.metrics = [(k, [v.metrics.get(k) for v in views]) for k in metric_names]
    for view in views:
        train, evaluation = log_entries(view.path)
        series = {"loss": [[e["current_steps"], e["loss"]] for e in train if isinstance(e.get("loss"), (int, float))]}
        for entry in evaluation:
            for key, value in entry.items():
                if key.startswith("eval_") and isinstance(value, (int, float)):
                    series.setdefault(key, []).append([entry["current_steps"], value])
        out.curves[view.name] = series
    out.answers = _last_answers(views)
    return out


def _last_answers(views: list[RunView]) -> list[tuple[str, list[str], bool]]:
    """Each sample prompt with every run's last answer to it."""
    last = []
    for view in views:
        by_step = samples(view.path)
        rows = by_step[max(by_step)] if by_step else []
        last.append({r.get("prompt", ""): r.get("output", "") for r in rows})
    prompts = sorted(set().union(*last)) if last else []
    return [(p, [answers.get(p, MISSING) for answers in last], len({a.get(p, MISSING) for a in last}) == 1)
            for p in prompts]
