"""A sweep's results: the trials ranked by the metric, summary.md with a plot per parameter, the winner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import RunError
from lorakit.runs.catalog import read_manifest
from lorakit.sweep.study import Sweep, open_study


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    steps: int | None
    seconds: float | None
    tokens_per_second: float | None
    peak_gib: float | None
    run_dir: str | None
    reason: str
    node: str | None = None  # --executor ray: the node that ran it (its run folder is on that node's disk)


def trial_rows(sweep: Sweep) -> list[TrialRow]:
    """Every trial, best first (by the study's direction), then pruned, failed and running ones."""
    base = sweep.base_config()
    space = sweep.space(base.config)
    study = open_study(sweep, space)
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = t.user_attrs.get("run_dir")
        manifest = read_manifest(Path(run)) if run and (Path(run) / "manifest.json").is_file() else {}
        metrics = manifest.get("metrics") or {}
        attempts = manifest.get("attempts") or [{}]
        rows.append(TrialRow(t.number, t.state.name, t.value, dict(t.params), metrics.get("train_steps"),
                             metrics.get("train_runtime"), metrics.get("train_tokens_per_second"),
                             attempts[-1].get("peak_memory_gib"), run, t.user_attrs.get("reason", ""),
                             t.user_attrs.get("node")))
    sign = -1 if space.direction == "maximize" else 1
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3, "WAITING": 4}
    return sorted(rows, key=lambda r: (order.get(r.state, 5), sign * (r.value if r.value is not None else 0),
                                       r.number))


def best_run(sweep: Sweep) -> Path:
    """The winning trial's run folder (its top-level adapter is the best of that run).

    Raises:
        RunError: no trial has completed yet.
    """
    done = [r for r in trial_rows(sweep) if r.state == "COMPLETE" and r.run_dir]
    if not done:
        raise RunError(f"sweep {sweep.name}: no trial has completed yet")
    return Path(done[0].run_dir)  # type: ignore[arg-type]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_table(sweep: Sweep, rows: list[TrialRow], metric: str) -> str:
    keys = sorted({k for r in rows for k in r.params})
    on_nodes = any(r.node for r in rows)
    head = ["trial", metric.removeprefix("eval_"), *keys, "steps", "time (s)", "tok/s", "peak GiB", "status",
            *(["node"] if on_nodes else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.number), _fmt(r.value), *(_fmt(r.params.get(k)) for k in keys), _fmt(r.steps),
                 _fmt(r.seconds), _fmt(r.tokens_per_second), _fmt(r.peak_gib),
                 r.state.lower() + (f": {r.reason}" if r.reason else ""), *([_fmt(r.node)] if on_nodes else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(sweep: Sweep) -> Path:
    """sweeps/<name>/summary.md: the ranked table, a plot of the metric against each parameter, the winner."""
    base = sweep.base_config()
    space = sweep.space(base.config)
    rows = trial_rows(sweep)
    plots = _plot(sweep, rows, space.metric)
    done = [r for r in rows if r.state == "COMPLETE"]
    winner = (f"Winner: trial {done[0].number}, `{done[0].run_dir}` ({space.metric.removeprefix('eval_')} "
              f"{_fmt(done[0].value)}).\n" if done else "No trial has completed yet.\n")
    text = (f"# Sweep {sweep.name}\n\n{len(rows)} trials of {sweep.trials}; {space.sampler} sampler, "
            f"{space.pruner} pruner, {space.direction} {space.metric}.\n\n{winner}\n"
            f"{render_table(sweep, rows, space.metric)}\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots))
    path = sweep.path / "summary.md"
    path.write_text(text, encoding="utf-8")
    return path


def _plot(sweep: Sweep, rows: list[TrialRow], metric: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.value is not None]
    paths = []
    for key in sorted({k for r in rows for k in r.params}):
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        values = [r.params.get(key) for r in done]
        numeric = all(isinstance(v, (int, float)) for v in values)
        ax.scatter(values if numeric else [str(v) for v in values], [r.value for r in done])
        if numeric and key.endswith("lr"):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric.removeprefix("eval_"))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = sweep.path / f"{key.replace('.', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
