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


@config_group.command("import")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--from", "peer", type=click.Choice(["llamafactory", "axolotl"]), default=None,
              help="The trainer that wrote SOURCE (default: told from its keys).")
@click.option("--out", default=None, help="Where to write the lorakit config (default: SOURCE_STEM.lorakit.yaml here).")
@click.option("--dataset-dir", default=None, help="LLaMA-Factory's dataset_dir: the folder of dataset_info.json.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def import_cmd(source: str, peer: str | None, out: str | None, dataset_dir: str | None, force: bool) -> None:
    """Write a LLaMA-Factory or axolotl config as a lorakit config, saying what became of each key.

    \b
    Example:
        lorakit config import qwen3_lora_sft.yaml --out qwen3.yaml
    """
    from lorakit.config.peers.importer import import_config

    imported = import_config(source, peer, out, dataset_dir, force)
    width = max(len(line.key) for line in imported.lines) if imported.lines else 0
    for line in imported.lines:
        click.echo(f"{line.outcome:<13} {line.key:<{width}}  {line.detail}")
    click.echo(f"wrote {imported.out} (from {imported.peer}); check it with: lorakit config show {imported.out}")
