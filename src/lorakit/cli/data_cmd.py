"""``lorakit data check`` and ``lorakit data pairs``."""

from __future__ import annotations

from pathlib import Path

import click

from lorakit.cli.infer_cmd import device_option, engine_option, runs_dir_option
from lorakit.config.schema import DataSection


@click.group("data")
def data_group() -> None:
    """Inspect datasets."""


@data_group.command("check")
@click.argument("files", nargs=-1)
@click.option("--config", "config_file", default=None,
              help="Take the model (tokenizer), template and max_length from this config (and, with no FILE, "
                   "the data files it trains on).")
@click.option("--model", default=None, help="Tokenize with this model's tokenizer (default settings).")
def check_cmd(files: tuple[str, ...], config_file: str | None, model: str | None) -> None:
    """Show format, rows, token lengths and one example with its trained span, without training.

    \b
    Example:
        lorakit data check --config examples/typst/config.yaml      # the data the config trains on
        lorakit data check examples/typst/train.jsonl --config examples/typst/config.yaml
        lorakit data check examples/typst/pairs.jsonl --config examples/typst/dpo.yaml
    """
    from lorakit.data.check import TRAINED_CLOSE, TRAINED_OPEN, check_data

    configs = [f for f in files if Path(f).suffix.lower() in (".yaml", ".yml", ".toml")]
    if configs and not config_file:
        raise click.UsageError(f"{configs[0]} is a config, not data: lorakit data check --config {configs[0]} "
                               "checks the data it trains on")
    if not files and not config_file:
        raise click.UsageError("give the data FILEs, or --config CONFIG to check the data it trains on")
    data, tokenizer, pairs = None, None, None  # pairs: None, as the rows are
    if config_file or model:
        from lorakit.model.load import load_tokenizer
        from lorakit.model.resolve import resolve_model

        if config_file:
            from lorakit.config.load import load_config

            cfg = load_config(config_file).config
            data, model, pairs = cfg.data, model or cfg.model.name_or_path, cfg.train.method == "dpo"
            files = files or (*cfg.data.train, *cfg.data.eval)
        else:
            data = DataSection(train=list(files))
        tokenizer = load_tokenizer(resolve_model(model))
    report = check_data(files, data, tokenizer, pairs)
    for path, fmt in report.formats.items():
        click.echo(f"{path}: format {fmt}")
    click.echo(f"rows: {report.rows}")
    for note in report.notes:
        click.echo(note)
    if report.stats is None:
        click.echo("(give --config or --model for token lengths and a rendered example)")
        return
    click.echo(f"template: {report.template}")
    click.echo("tokens: " + ", ".join(f"{k} {v}" for k, v in report.percentiles.items()))
    click.echo(f"over max_length={report.max_length}: {report.stats.overflow} rows")
    if report.stats.dropped:
        click.echo(f"rows without a trained token: {report.stats.dropped}")
    if report.example is not None:
        click.echo(f"\nfirst example (trained tokens between {TRAINED_OPEN} {TRAINED_CLOSE}):")
        click.echo(report.example)


@data_group.command("pairs")
@click.argument("run")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Rows with prompts and answers (any training format, or a registry's dataset_info.json#name).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The pairs file to write (JSONL).")
@click.option("--metric", default="exact", show_default=True, type=click.Choice(["exact", "typst"]),
              help="exact: an answer other than the file's is wrong; typst: an answer that does not compile.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N rows.")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Answers generated together (default: the engine's).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@device_option
@engine_option
@runs_dir_option
def pairs_cmd(run: str, data: Path, out: Path, metric: str, limit: int | None, max_new_tokens: int,
              batch_size: int | None, force: bool, device: str, engine: str, runs_dir: Path) -> None:
    """Preference pairs from a run's own mistakes: its greedy answer to each prompt of --data, and a pair
    (chosen: the file's answer, rejected: the run's) for each one --metric judges wrong, for train.method: dpo.

    \b
    Example:
        lorakit data pairs typst --data examples/typst/train.jsonl --out runs/typst-pairs.jsonl
    """
    from lorakit.infer.mined_pairs import MineOptions, mine_pairs

    summary = mine_pairs(run, data, out, MineOptions(metric, limit, max_new_tokens, batch_size, device, engine,
                                                     force), runs_dir)
    click.echo(summary.line())
