"""``lorakit queue``."""

from __future__ import annotations

import sys

import click


@click.command("queue")
@click.argument("workspace", type=click.Path(dir_okay=False))
@click.option("--test", is_flag=True, help="Train and upload, but delete nothing (local or remote).")
@click.option("--add", "overlays", multiple=True, metavar="OVERLAY",
              help="Overlay merged into every dataset's config; its stem is appended to the output name.")
@click.option("--only", multiple=True, metavar="NAME", help="Only these datasets (repeatable).")
@click.option("--dry-run", is_flag=True, help="List what would be downloaded, trained and uploaded.")
def queue_cmd(workspace: str, test: bool, overlays: tuple[str, ...], only: tuple[str, ...], dry_run: bool) -> None:
    """Download datasets with rclone, train each, upload each result, clean up; safe to kill and re-run.

    \b
    Example:
        lorakit queue workspace.toml --add lowmem.yaml
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lorakit.queue.runner import QueueOptions, run_queue
    from lorakit.queue.workspace import load_workspace

    result = run_queue(load_workspace(workspace), QueueOptions(test, overlays, only, dry_run))
    if dry_run:
        for line in result.plan or ["nothing to do"]:
            click.echo(line)
        return
    on_nodes = any(job.node for job in result.jobs)  # the ray executor: where each ran, not a local folder
    table = Table("dataset", "state", "time", "node" if on_nodes else "run folder", "remote", "error / note",
                  box=None, pad_edge=False)
    for job in result.jobs:  # names and errors come from outside: shown as text, never as rich markup
        cells = [job.key, job.state, f"{job.seconds:.0f} s", (job.node if on_nodes else job.run_dir) or "-",
                 job.remote_output or "-", "; ".join(x for x in (job.error, job.note) if x)]
        table.add_row(*(escape(c) for c in cells))
    Console(width=200, soft_wrap=True).print(table)
    if result.stopped:
        click.echo(f"queue stopped: {result.stopped}", err=True)
    if result.failed or result.stopped:
        sys.exit(1)
