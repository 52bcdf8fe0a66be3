"""``lorakit sweep``: search config keys with Optuna, each trial a tracked run; ``sweep show`` and ``sweep best``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lorakit.cli.options import layered_config_options
from lorakit.launch.executor import Executor

SUBCOMMANDS = ("show", "best", "work", "start")


class SweepGroup(click.Group):
    """``lorakit sweep CONFIG --space F`` starts a sweep; ``lorakit sweep show|best NAME`` read one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


sweeps_dir_option = click.option("--sweeps-dir", default="sweeps", show_default=True, type=click.Path(path_type=Path),
                                 help="Where sweeps live.")


@click.group("sweep", cls=SweepGroup)
def sweep_group() -> None:
    """Search learning rate, rank and friends: lorakit sweep CONFIG --space SPACE_FILE [...].

    \b
    Examples:
        lorakit sweep examples/typst/config.yaml --space examples/typst/sweep.yaml --trials 8
        lorakit sweep show typst-sweep
        lorakit infer "$(lorakit sweep best typst-sweep)" --input sample.tex
    """


@sweep_group.command("start", hidden=True)
@layered_config_options
@click.option("--space", "space_file", required=True, metavar="SPACE_FILE", help="The keys to search (YAML/TOML).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="How many trials (default: the grid, or 10).")
@click.option("--executor", type=click.Choice(Executor.names()), default=Executor.LOCAL.value, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials at once: processes here, or Slurm jobs.")
@click.option("--name", default=None, help="The sweep's name (default: <run name>-<space file stem>).")
@click.option("--dry-run", is_flag=True, help="List the trials with their memory estimates; run nothing.")
@sweeps_dir_option
def start_cmd(config_file: str, overlays: tuple[str, ...], overrides: tuple[str, ...], space_file: str,
              trials: int | None, executor: str, workers: int, name: str | None, dry_run: bool,
              sweeps_dir: Path) -> None:
    """Start (or, the same command again, continue) a sweep."""
    from lorakit.sweep.results import render_table, trial_rows, write_summary
    from lorakit.sweep.run import SweepRequest, prepare, start
    from lorakit.sweep.run import dry_run as plan_trials

    sweep, base, space = prepare(SweepRequest(config_file, space_file, overlays, overrides, trials, executor,
                                              workers, name, sweeps_dir))
    if dry_run:
        click.echo(f"# sweep {sweep.name}: {sweep.trials} trials, {space.sampler} sampler, {space.pruner} pruner, "
                   f"{space.direction} {space.metric}")
        for line in plan_trials(sweep, base, space, min(sweep.trials, 10)):
            click.echo(line)
        return
    start(sweep, base)
    click.echo(render_table(sweep, trial_rows(sweep), space.metric))
    click.echo(f"summary: {write_summary(sweep)}")


@sweep_group.command("show")
@click.argument("name")
@sweeps_dir_option
def show_cmd(name: str, sweeps_dir: Path) -> None:
    """The trials ranked by the metric; writes sweeps/NAME/summary.md with a plot per parameter."""
    from lorakit.sweep.results import render_table, trial_rows, write_summary
    from lorakit.sweep.study import load_sweep

    sweep = load_sweep(name, sweeps_dir)
    metric = sweep.space(sweep.base_config().config).metric
    click.echo(render_table(sweep, trial_rows(sweep), metric))
    click.echo(f"summary: {write_summary(sweep)}")


@sweep_group.command("best")
@click.argument("name")
@sweeps_dir_option
def best_cmd(name: str, sweeps_dir: Path) -> None:
    """The winning trial's run folder (for lorakit infer/eval/export)."""
    from lorakit.sweep.results import best_run
    from lorakit.sweep.study import load_sweep

    click.echo(str(best_run(load_sweep(name, sweeps_dir))))


@sweep_group.command("work", hidden=True)
@click.argument("folder")
@click.option("--as", "run", default=None, help="This worker's own folder (a Slurm job's).")
def work_cmd(folder: str, run: str | None, **_: Any) -> None:
    """One worker: trials until the sweep has its count (what --workers and Slurm jobs run)."""
    import sys

    from lorakit.sweep.run import worker_main

    worker_main(folder, run, sys.argv)
