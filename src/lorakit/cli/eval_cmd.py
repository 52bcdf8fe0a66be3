"""``lorakit eval`` and ``lorakit export``."""

from __future__ import annotations

from pathlib import Path

import click

from lorakit.cli.infer_cmd import device_option, runs_dir_option


@click.command("eval")
@click.argument("runs", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Held-out file (JSONL).")
@click.option("--metrics", default="loss,exact,chrf", show_default=True,
              help="Comma-separated: loss (and perplexity), exact, chrf, typst.")
@click.option("--base", is_flag=True, help="Also the base model without the adapter, on the same prompts.")
@click.option("--limit", default=None, type=int, help="Only the first N cases.")
@click.option("--input-field", default=None, help="Plain rows: the input field (default: input, tex...).")
@click.option("--target-field", default=None, help="Plain rows: the reference field (default: output, typst...).")
@click.option("--max-new-tokens", default=256, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@device_option
@runs_dir_option
def eval_cmd(runs: tuple[str, ...], data: Path, metrics: str, base: bool, limit: int | None,
             input_field: str | None, target_field: str | None, max_new_tokens: int, batch_size: int,
             device: str, runs_dir: Path) -> None:
    """Score runs side by side on a held-out file; results go to each run's eval_results.json and card.

    \b
    Example:
        lorakit eval typst --data ../shared/data/typst/real_math_dev.jsonl --metrics exact,typst --base
    """
    from rich.console import Console
    from rich.table import Table

    from lorakit.infer.evaluate import evaluate_runs

    wanted = [w.strip() for w in metrics.split(",") if w.strip()]
    table = evaluate_runs(runs, data, wanted, base, limit, runs_dir, device, input_field, target_field,
                          max_new_tokens, batch_size)
    columns = sorted({k for r in table.values() for k in r})
    out = Table("model", *columns, box=None, pad_edge=False)
    for model, results in table.items():
        out.add_row(model, *[str(results.get(c, "-")) for c in columns])
    Console(width=200, soft_wrap=True).print(out)


@click.command("export")
@click.argument("run")
@click.option("--merge", is_flag=True, required=True, help="Merge the adapter into the base weights.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="A new folder for the merged model.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]))
@runs_dir_option
def export_cmd(run: str, merge: bool, out: Path, dtype: str, runs_dir: Path) -> None:
    """Write the adapter merged into its base as a plain model folder (safetensors + tokenizer)."""
    from lorakit.infer.export import export_merged

    click.echo(f"wrote {export_merged(run, out, dtype, runs_dir)}")
