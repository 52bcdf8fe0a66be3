"""``lorakit runs``: list, show, diff, lineage, clean and note the runs in an output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lorakit.runs.catalog import add_note, clean_runs, find_run, list_runs, read_manifest, where_runs_are
from lorakit.runs.history import diff_runs, lineage
from lorakit.runs.manifest import STATUSES

# --runs-dir too: the name eval, export, infer and train give the same folder
runs_dir_option = click.option("--dir", "--runs-dir", "runs_dir", default="runs", show_default=True,
                               type=click.Path(path_type=Path), help="The folder holding the run folders (output.dir).")


def table_of(*columns: str) -> Any:
    from rich.table import Table

    return Table(*columns, box=None, pad_edge=False, show_lines=False)


def show(renderable: Any) -> None:
    from rich.console import Console

    Console(width=200, soft_wrap=True).print(renderable)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4g}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def no_runs_in(runs_dir: Path) -> str:
    """What an empty --dir says, with the folders below it that hold runs (a deeper output.dir)."""
    holders = where_runs_are(runs_dir)
    return f"no runs in {runs_dir}/" + (f"; run folders are in {', '.join(map(str, holders))}: give --dir"
                                        if holders else "")


@click.group("runs")
def runs_group() -> None:
    """Look after the runs in an output folder."""


@runs_group.command("list")
@runs_dir_option
@click.option("--status", default=None,
              type=click.Choice(STATUSES))
@click.option("--sweep", default=None, metavar="NAME", help="Only the trials of this sweep.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def list_cmd(runs_dir: Path, status: str | None, sweep: str | None, as_json: bool) -> None:
    """Every run: name, status, base model, data, steps, final losses, created, size."""
    runs = list_runs(runs_dir, status, sweep)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in runs], indent=2))
        return
    if not runs:
        click.echo(no_runs_in(runs_dir) + (f" with status {status}" if status else ""))
        return
    table = table_of("run", "status", "base model", "data", "steps", "train loss", "eval loss", "created", "size")
    for r in runs:
        table.add_row(r.name, r.status_text, r.base_model, r.data, r.steps, cell(r.train_loss), cell(r.eval_loss),
                      r.created.replace("+00:00", "Z"), _size(r.size_bytes))
    show(table)


@runs_group.command("show")
@click.argument("run")
@runs_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest.json instead.")
def show_cmd(run: str, runs_dir: Path, as_json: bool) -> None:
    """What the run is and how it went (a folder, a folder name, or a run name for its latest version): status,
    base model, data with hashes, the settings that matter, best step and metrics, lineage, files. --json: the
    raw manifest."""
    from lorakit.runs.summary import read_run, render_text

    folder = find_run(run, runs_dir)
    manifest = read_manifest(folder)  # an unreadable manifest is one line here, as for every command
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        click.echo(render_text(read_run(folder, with_size=False)).rstrip("\n"))


@runs_group.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@runs_dir_option
def diff_cmd(run_a: str, run_b: str, runs_dir: Path) -> None:
    """What differs from RUN_A to RUN_B: config keys, data hashes, code commits, metrics."""
    a, b = find_run(run_a, runs_dir), find_run(run_b, runs_dir)
    d = diff_runs(a, b)
    click.echo(f"{a.name} -> {b.name}")
    sections = [("config", ("key", a.name, b.name), [(k, json.dumps(x), json.dumps(y)) for k, x, y in d.config]),
                ("data (sha256)", ("file", a.name, b.name), [(f, x[:12], y[:12]) for f, x, y in d.data]),
                ("code (commit)", ("repo", a.name, b.name), d.code),
                ("base model", ("", a.name, b.name), [("name", *d.base_model)] if d.base_model else []),
                ("metrics", ("metric", a.name, b.name, "delta"),
                 [(k, cell(x), cell(y), _delta(delta)) for k, x, y, delta in d.metrics])]
    for title, columns, rows in sections:
        click.echo(f"\n{title}: " + ("same" if not rows else f"{len(rows)} differ"))
        if rows:
            table = table_of(*columns)
            for row in rows:
                table.add_row(*[str(c) for c in row])
            show(table)


@runs_group.command("lineage")
@click.argument("run")
@runs_dir_option
def lineage_cmd(run: str, runs_dir: Path) -> None:
    """The chain of runs RUN continued from (lora.init_from): data with hashes, steps, final metrics."""
    for depth, entry in enumerate(lineage(find_run(run, runs_dir))):
        prefix = "  " * depth + ("<- " if depth else "")
        if not entry.is_run:
            click.echo(f"{prefix}{entry.name}: {entry.status} ({entry.path})")
            continue
        metrics = ", ".join(f"{k} {cell(entry.metrics[k])}" for k in ("train_loss", "eval_loss")
                            if entry.metrics.get(k) is not None)
        click.echo(f"{prefix}{entry.name} [{entry.status}] steps {cell(entry.steps)}" + (f", {metrics}" if metrics
                                                                                       else ""))
        for path, digest in entry.data_files.items():
            click.echo(f"{'  ' * depth}     data {path} sha256 {digest[:12]}")


@runs_group.command("clean")
@runs_dir_option
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def clean_cmd(runs_dir: Path, dry_run: bool) -> None:
    """Remove failed or interrupted runs that hold no adapter, no checkpoint and no note or file of yours
    (LORAKIT_NO_CLEAN=1: never)."""
    decisions = clean_runs(runs_dir, dry_run)
    if not decisions:
        click.echo(no_runs_in(runs_dir))
    for d in decisions:
        click.echo(f"{d.run}: {d.reason}")


@runs_group.command("note")
@click.argument("run")
@click.argument("text")
@runs_dir_option
def note_cmd(run: str, text: str, runs_dir: Path) -> None:
    """Append TEXT to the run's manifest and model card: what worked, and why."""
    run_dir = find_run(run, runs_dir)
    note = add_note(run_dir, text)
    click.echo(f"{run_dir.name}: noted at {note['at']}")


@runs_group.command("stop")
@click.argument("run")
@runs_dir_option
def stop_cmd(run: str, runs_dir: Path) -> None:
    """Stop a run training on this machine as Ctrl+C would: it finishes its step, saves the adapter and its resume
    state (lorakit train --resume continues it)."""
    from lorakit.runs.control import stop_run

    run_dir = find_run(run, runs_dir)
    pid = stop_run(run_dir)
    click.echo(f"{run_dir.name}: asked process {pid} to stop after its current step")
