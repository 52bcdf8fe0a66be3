"""``lorakit submit``, ``status``, ``logs`` and ``cancel``: runs as Slurm jobs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from lorakit.cli.options import layered_config_options
from lorakit.cli.runs_cmd import cell, no_runs_in, runs_dir_option, show, table_of
from lorakit.config.load import load_config
from lorakit.runs.catalog import find_run, run_dirs

# --flag -> launch.slurm key; each flag is recorded as a --set in the run's config.
SLURM_FLAGS = {"partition": "partition", "nodes": "nodes", "gpus_per_node": "gpus_per_node",
               "cpus_per_task": "cpus_per_task", "mem": "mem", "time": "time", "account": "account",
               "container": "container"}


@click.command("submit")
@layered_config_options
@click.option("--name", default=None, help="Run name (replaces output.name and the config file's stem).")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--nodes", type=click.IntRange(min=1), default=None, help="Nodes (torchrun on each through srun).")
@click.option("--gpus-per-node", type=click.IntRange(min=0), default=None, help="GPUs per node; one process each.")
@click.option("--cpus-per-task", type=click.IntRange(min=1), default=None, help="CPUs for the job on each node.")
@click.option("--mem", default=None, help="Memory per node, e.g. 32G.")
@click.option("--time", default=None, help="Time limit, e.g. 04:00:00.")
@click.option("--account", default=None, help="Slurm account to charge.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="Training processes per node.")
@click.option("--container", default=None, metavar="IMAGE.sif", help="Train inside this apptainer image (--nv).")
@click.option("--bind", "binds", multiple=True, metavar="SRC:DST", help="apptainer --bind; repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script; create and submit nothing.")
def submit_cmd(config_file: str, overlays: tuple[str, ...], overrides: tuple[str, ...], name: str | None,
               dry_run: bool, binds: tuple[str, ...], nproc: int | None, **flags: object) -> None:
    """Submit a training run to Slurm: the run folder now, training when the job starts.

    \b
    The script (saved as <run>/sbatch.sh) writes slurm-<job>.out/.err into the run folder.
    Examples:
        lorakit submit config.yaml --partition gpu --gpus-per-node 1 --time 04:00:00
        lorakit submit config.yaml --container lorakit.sif --bind /data:/data --dry-run
    """
    from lorakit.recipe.launch import submit_run

    given = [f"launch.slurm.{SLURM_FLAGS[k]}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    given += [f"launch.slurm.binds={json.dumps(list(binds))}"] if binds else []
    given += [f"launch.nproc={nproc}"] if nproc else []
    loaded = load_config(config_file, overlays, (*overrides, *given), name)
    command = ["lorakit", "submit", config_file, *[a for o in overlays for a in ("--add", o)],
               *[a for o in (*overrides, *given) for a in ("--set", o)], *(["--name", name] if name else [])]
    submission = submit_run(loaded, command, dry_run=dry_run)
    if dry_run:
        click.echo(f"# run folder: {submission.run_dir}")
        click.echo(submission.script, nl=False)
        return
    run = shlex.quote(str(submission.run_dir))
    click.echo(f"submitted: Slurm job {submission.job_id}, run {submission.run_dir}")
    click.echo(f"  watch it: lorakit status {run}; lorakit logs {run} -f; stop it: lorakit cancel {run}")


@click.command("status")
@click.argument("run", required=False)
@runs_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def status_cmd(run: str | None, runs_dir: Path, as_json: bool) -> None:
    """Slurm state and training progress of RUN, or of every submitted run in --dir."""
    from lorakit.launch.jobs import job_row, log_tail
    from lorakit.runs.catalog import read_manifest

    folders = [find_run(run, runs_dir)] if run else [d for d in run_dirs(runs_dir) if "slurm" in read_manifest(d)]
    rows = [job_row(d) for d in folders]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo(no_runs_in(runs_dir).replace("no runs", "no submitted runs", 1))
        return
    table = table_of("run", "job", "slurm", "status", "step", "loss", "eval loss", "remaining")
    for r in rows:
        table.add_row(r.run, r.job_id, r.slurm_state, r.status, r.step, cell(r.loss), cell(r.eval_loss), r.remaining)
    show(table)
    for folder, r in zip(folders, rows, strict=True):
        if run and r.status == "failed":
            click.echo(f"\nlast lines of {folder.name}'s job log:")
            click.echo("\n".join(f"  {line}" for line in log_tail(folder, r.job_id)))


@click.command("logs")
@click.argument("run")
@runs_dir_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
def logs_cmd(run: str, runs_dir: Path, follow: bool) -> None:
    """The Slurm job's output and error streams (slurm-<job>.out, .err in the run folder)."""
    from lorakit.launch.jobs import follow_logs

    follow_logs(find_run(run, runs_dir), follow, write=lambda text: click.echo(text, nl=False))


@click.command("cancel")
@click.argument("run")
@runs_dir_option
def cancel_cmd(run: str, runs_dir: Path) -> None:
    """scancel the run's Slurm job and mark the run cancelled."""
    from lorakit.launch.jobs import cancel_run

    run_dir = find_run(run, runs_dir)
    state = cancel_run(run_dir)
    click.echo(f"cancelled: {run_dir.name} (Slurm: {state.describe() if state else 'gone'})")
