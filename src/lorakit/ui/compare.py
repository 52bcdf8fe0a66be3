"""Two to four runs side by side: only the config keys that differ, data fingerprints, curves, metrics, samples."""

from __future__ import annotations

import json
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
    # `lorakit eval` predictions on a data file every run was evaluated on: file -> (reference, answers, same)
    predictions: dict[str, list[tuple[str, list[str], bool]]] = field(default_factory=dict)


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
    out.predictions = _predictions(views)
    return out


def _predictions(views: list[RunView], rows: int = 50) -> dict[str, list[tuple[str, list[str], bool]]]:
    """The first ``rows`` predictions of each evaluation file every run has (eval/<data>.jsonl), side by side."""
    per_run = []
    for view in views:
        found = {}
        for path in sorted((view.path / "eval").glob("*.jsonl")):
            try:
                lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()[:rows] if x.strip()]
            except (OSError, ValueError):
                continue
            found[path.stem] = [(str(x.get("reference", "")), str(_prediction(x, view.name))) for x in lines]
        per_run.append(found)
    common = sorted(set.intersection(*(set(f) for f in per_run))) if per_run else []
    out = {}
    for stem in common:
        length = min(len(f[stem]) for f in per_run)
        out[stem] = [(per_run[0][stem][i][0], answers := [f[stem][i][1] for f in per_run], len(set(answers)) == 1)
                     for i in range(length)]
    return out


def _prediction(row: dict[str, Any], run_name: str) -> Any:
    # eval/<data>.jsonl: {"reference", "<adapter name>": answer, "base": answer (with --base)}
    if run_name in row:
        return row[run_name]
    return next((v for k, v in row.items() if k not in ("reference", "base")), MISSING)


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
