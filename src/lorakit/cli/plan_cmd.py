"""``lorakit plan``."""

from __future__ import annotations

import click

from lorakit.cli.options import layered_config_options
from lorakit.config.load import load_config
from lorakit.config.schema import parse_memory_size
from lorakit.errors import ConfigError, LorakitError


@click.command("plan")
@layered_config_options
@click.option("--memory", default=None, metavar="SIZE",
              help="Budget, e.g. 8GiB (default: train.memory_budget; without either, a table for 4-24 GiB).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Plan for this device (default: cuda if one is visible, else cpu).")
@click.option("--no-data", "skip_data", is_flag=True,
              help="Price every row at data.max_length instead of reading the training data's real lengths.")
def plan_cmd(config_file: str, overlays: tuple[str, ...], overrides: tuple[str, ...], memory: str | None,
             device: str | None, skip_data: bool) -> None:
    """Estimate a run's peak memory from the model's config, without loading its weights.

    \b
    Prints the parts (weights, adapter and optimizer, activations, loss chunk, overhead) and the
    largest micro-batch and max_length that fit a budget, with and without checkpointing (and
    4-bit on a GPU), plus the --set flags to start from. When the training data can be read
    (and the model's tokenizer is at hand), activations are priced from the largest micro-batch
    the run will really compute, not from every row at data.max_length.

    \b
    Examples:
        lorakit plan examples/typst/config.yaml
        lorakit plan base.yaml --set data.max_length=2048 --memory 8GiB --device cuda
    """
    from lorakit.plan.lengths import read_lengths
    from lorakit.plan.report import PlanInputs, build_plan, render_plan

    cfg = load_config(config_file, overlays, overrides).config
    size = memory or cfg.train.memory_budget
    try:
        budget = parse_memory_size(size) if size is not None else None
    except ValueError as e:
        raise ConfigError(f"--memory: {e}") from None
    lengths = None
    if not skip_data:
        try:
            lengths = read_lengths(cfg)
        except LorakitError as e:
            click.echo(f"# not reading the training data ({e}): every row priced at data.max_length")
    click.echo(render_plan(build_plan(PlanInputs.of(cfg, lengths), device, budget)))
