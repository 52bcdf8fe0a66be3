"""``lorakit``: the command group. Only this module configures logging."""

from __future__ import annotations

import errno
from typing import Any

import click

from lorakit import __version__
from lorakit.cli.config_cmd import config_group
from lorakit.cli.data_cmd import data_group
from lorakit.cli.eval_cmd import eval_cmd, export_cmd
from lorakit.cli.infer_cmd import chat_cmd, infer_cmd
from lorakit.cli.plan_cmd import plan_cmd
from lorakit.cli.queue_cmd import queue_cmd
from lorakit.cli.run_cmd import run_cmd
from lorakit.cli.runs_cmd import runs_group
from lorakit.cli.slurm_cmd import cancel_cmd, logs_cmd, status_cmd, submit_cmd
from lorakit.cli.sweep_cmd import sweep_group
from lorakit.cli.train import train_cmd
from lorakit.cli.ui_cmd import ui_cmd
from lorakit.disk import is_disk_full
from lorakit.errors import DiskFullError, LorakitError


class LorakitGroup(click.Group):
    """Report a LorakitError, a full disk or a path the system refuses as one line on stderr and exit with its
    code: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LorakitError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except Exception as e:
            said = _system_refusal(e)
            if said is None:
                raise
            click.echo(f"error: {said[0]}", err=True)
            ctx.exit(said[1])


REFUSED_PATHS = (PermissionError, NotADirectoryError, IsADirectoryError)


def _system_refusal(error: Exception) -> tuple[str, int] | None:
    """What the system refused, in one line, and the exit code; None for anything else (a bug: its traceback)."""
    if is_disk_full(error):
        written = error.filename if isinstance(error, OSError) else None
        return (f"no space left on device{f' writing {written}' if written else ''} ({error}): free space on "
                "that disk, or write elsewhere", DiskFullError.exit_code)
    if isinstance(error, OSError) and error.filename and (isinstance(error, REFUSED_PATHS)
                                                          or error.errno == errno.EROFS):
        return f"{error.filename}: {error.strerror}", 1
    return None


@click.group(cls=LorakitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lorakit")
@click.option("-v", "--verbose", is_flag=True, help="Show debug messages (as DEBUG=1 does); passed on to external "
              "trainers and Slurm jobs as DEBUG=1.")
def cli(verbose: bool) -> None:
    """lorakit: train, track and use LoRA adapters.

    \b
    Quickstart:
        lorakit train examples/typst/config.yaml
    """
    import os

    from lorakit.log import setup_logging

    if verbose or os.environ.get("DEBUG", "") not in ("", "0"):
        verbose = True
        os.environ["DEBUG"] = "1"  # inherited by trainers, queue children and (sbatch exports it) Slurm jobs
    setup_logging(verbose)


cli.add_command(train_cmd)
cli.add_command(config_group)
cli.add_command(data_group)
cli.add_command(plan_cmd)
cli.add_command(runs_group)
cli.add_command(ui_cmd)
cli.add_command(queue_cmd)
cli.add_command(run_cmd)
cli.add_command(sweep_group)
cli.add_command(infer_cmd)
cli.add_command(chat_cmd)
cli.add_command(eval_cmd)
cli.add_command(export_cmd)
for command in (submit_cmd, status_cmd, logs_cmd, cancel_cmd):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="lorakit")


if __name__ == "__main__":
    main()
