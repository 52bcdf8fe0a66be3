"""``lorakit run``: one tracked run of any trainer (sd-scripts, LLaMA-Factory, a script of your own)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

TRAINER_SUFFIXES = (".toml", ".yaml", ".yml")


@click.command("run")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="TRAINER_FILE | -- COMMAND [ARGS]...")
@click.option("--dataset", type=click.Path(path_type=Path), default=None, help="The dataset folder: {dataset}.")
@click.option("--add", "overlays", multiple=True, metavar="OVERLAY",
              help="Merged into the trainer's config, in order; its stem is {variant} in the name.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="One value of the trainer's config.")
@click.option("--name", default=None, help="Run name (replaces the trainer file's name pattern).")
@click.option("--repo", "repos", multiple=True, metavar="NAME=PATH", help="A checkout the trainer runs from "
              "(its commit is recorded); command-line form. Repeatable.")
@click.option("--copy", "copies", multiple=True, metavar="FILE", help="Kept with the run, with its sha256; "
              "command-line form. Repeatable.")
@click.option("--runs-dir", default=None, help="Where run folders go (default: the trainer file's runs_dir, runs).")
@click.option("--dry-run", is_flag=True, help="Render the config and the command and print them; run nothing.")
def run_cmd(args: tuple[str, ...], dataset: Path | None, overlays: tuple[str, ...], overrides: tuple[str, ...],
            name: str | None, repos: tuple[str, ...], copies: tuple[str, ...], runs_dir: str | None,
            dry_run: bool) -> None:
    """Run an external trainer as a tracked run: versioned folder, manifest, log, OOM retries, model card.

    \b
    Examples:
        lorakit run sdxl-lora.toml --dataset ~/data/cats --add lowmem.toml
        lorakit run llamafactory.toml --set num_train_epochs=1
        lorakit run --name cats --repo sd=~/sd-scripts -- accelerate launch train_network.py --config_file x.toml
    """
    from lorakit.external.run import TrainerJob, render_plan, run_trainer
    from lorakit.external.trainer import command_trainer, load_trainer_file

    if not args:
        raise click.UsageError("give a TRAINER_FILE, or -- and the command to run")
    is_file = len(args) == 1 and args[0].lower().endswith(TRAINER_SUFFIXES)
    if is_file and (repos or copies):
        raise click.UsageError("--repo and --copy go with a command line; a trainer file lists repos and copy_files")
    if not is_file and not name:
        raise click.UsageError("a command line needs --name NAME for its run folder")
    trainer = load_trainer_file(args[0]) if is_file else command_trainer(args, repos, copies)
    job = TrainerJob(trainer, Path(runs_dir or trainer.runs_dir), dataset, tuple(Path(o).resolve() for o in overlays),
                     overrides, name, strict_command=is_file, command_line=("lorakit", "run", *sys.argv[2:]))
    if dry_run:
        click.echo(render_plan(job))
        return
    outcome = run_trainer(job, clean_empty=True)
    click.echo(f"\n{outcome.status}: {outcome.run_dir}" + (f"\n  {outcome.reason}" if outcome.reason else ""))
    if outcome.returncode != 0:  # the trainer's own exit code; killed by signal N: 128+N, as a shell says
        sys.exit(128 - outcome.returncode if outcome.returncode < 0 else outcome.returncode)
    if outcome.status == "interrupted":
        sys.exit(128 + signal.SIGINT)
    if outcome.status != "completed":
        sys.exit(1)
