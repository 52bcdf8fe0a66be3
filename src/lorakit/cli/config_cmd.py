"""``lorakit config schema`` and ``lorakit config show``."""

from __future__ import annotations

import click

from lorakit.cli.options import layered_config_options
from lorakit.config.describe import describe_fields
from lorakit.config.load import load_config


@click.group("config")
def config_group() -> None:
    """Inspect the configuration schema and merged configs."""


@config_group.command("schema")
def schema_cmd() -> None:
    """Print every config key with its type, default and description."""
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "type", "default", "description", show_lines=False, box=None, pad_edge=False)
    for key, type_name, default, description in describe_fields():
        table.add_row(key, type_name, default, description)
    Console(width=200).print(table)


@config_group.command("show")
@layered_config_options
def show_cmd(config_file: str, overlays: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Print the merged, validated config as YAML."""
    loaded = load_config(config_file, overlays, overrides)
    click.echo(f"# merged from: {', '.join(loaded.sources)}")
    click.echo(loaded.to_yaml(), nl=False)
