"""``lorakit eval`` and ``lorakit export``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from lorakit.cli.infer_cmd import device_option, engine_option, lora_option, runs_dir_option
from lorakit.infer.export.merged import DTYPES

if TYPE_CHECKING:
    from lorakit.infer.export.check import CheckResult


@click.command("eval")
@click.argument("runs", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Held-out file (JSONL), or datasets of a registry: dataset_info.json#name.")
@click.option("--metrics", default="loss,exact,chrf", show_default=True,
              help="Comma-separated: loss (and perplexity), exact, chrf, typst.")
@click.option("--base", is_flag=True, help="Also the base model without the adapter, on the same prompts.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Only the first N cases.")
@click.option("--input-field", default=None, help="Plain rows: the input field (default: input, tex...).")
@click.option("--target-field", default=None, help="Plain rows: the reference field (default: output, typst...).")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Answers generated together. Default: 96 (transformers), 32 (llama.cpp).")
@device_option
@engine_option
@lora_option
@runs_dir_option
def eval_cmd(runs: tuple[str, ...], data: Path, metrics: str, base: bool, limit: int | None,
             input_field: str | None, target_field: str | None, max_new_tokens: int, batch_size: int | None,
             device: str, engine: str, lora: Path | None, runs_dir: Path) -> None:
    """Score runs side by side on a held-out file; results go to each run's eval_results.json and card.

    \b
    Example:
        lorakit eval typst --data ../shared/data/typst/real_math_dev.jsonl --metrics exact,typst --base
    """
    from rich.console import Console
    from rich.table import Table

    from lorakit.infer.engines import default_batch_size
    from lorakit.infer.evaluate import EvalOptions, evaluate_runs

    wanted = [w.strip() for w in metrics.split(",") if w.strip()]
    options = EvalOptions(base, limit, input_field, target_field, max_new_tokens,
                          batch_size or default_batch_size(engine), device, engine, lora)
    table = evaluate_runs(runs, data, wanted, options, runs_dir)
    columns = sorted({k for r in table.values() for k in r})
    out = Table("model", *columns, box=None, pad_edge=False)
    for model, results in table.items():
        out.add_row(model, *[str(results.get(c, "-")) for c in columns])
    Console(width=200, soft_wrap=True).print(out)


@click.command("export")
@click.argument("run")
@click.option("--merge", is_flag=True, help="A plain model folder (safetensors + tokenizer) with the adapter merged.")
@click.option("--gguf", is_flag=True, help="One GGUF file for llama.cpp/Ollama, with a Modelfile beside it.")
@click.option("--quant", default="f16", show_default=True, help="GGUF: f16, q8_0 or q4_k_m.")
@click.option("--adapter-only", is_flag=True, help="GGUF: the LoRA adapter alone (plus the base's GGUF, shared).")
@click.option("--check", is_flag=True, help="Compare the export's logits with the adapter's and print the result.")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="--merge: a new folder. --gguf: the file, or a folder for it (default: RUN/gguf/RUN-QUANT.gguf).")
@click.option("--force", is_flag=True, help="GGUF: replace an existing --out file.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES),
              help="--merge only.")
@runs_dir_option
def export_cmd(run: str, merge: bool, gguf: bool, quant: str, adapter_only: bool, check: bool, out: Path | None,
               force: bool, dtype: str, runs_dir: Path) -> None:
    """Ship an adapter: merged into a model folder (--merge) or a GGUF file for llama.cpp and Ollama (--gguf).

    \b
    Examples:
        lorakit export typst --gguf --quant q8_0 --check
        lorakit export typst --gguf --adapter-only
        lorakit export typst --merge --out merged/
    """
    from lorakit.errors import ConfigError

    if merge == gguf:
        raise ConfigError("export: give exactly one of --merge (a model folder) or --gguf (a llama.cpp file)")
    from lorakit.infer.load import adapter_folder

    adapter_folder(run, runs_dir)  # a run or adapter: a merged model folder has nothing left to merge
    if merge:
        if out is None:
            raise ConfigError("export --merge: give --out, a new folder for the merged model")
        from lorakit.infer.export.merged import export_merged

        click.echo(f"wrote {export_merged(run, out, dtype, runs_dir)}")
        if check:
            from lorakit.infer.export.check import check_merged

            _say_verdict(check_merged(run, out, dtype, runs_dir))
        return
    from lorakit.infer.export.check import check_export
    from lorakit.infer.export.gguf_export import export_gguf

    result = export_gguf(run, out, quant, adapter_only, force, runs_dir)
    for path in (result.model, result.base, result.modelfile):
        if path is not None:
            click.echo(f"wrote {path}")
    if result.modelfile is not None:
        click.echo(f"ollama: cd {result.modelfile.parent} && ollama create NAME -f {result.modelfile.name}")
    if check:
        _say_verdict(check_export(run, result.base or result.model, result.model if result.base else None, quant,
                                  runs_dir))


def _say_verdict(verdict: CheckResult) -> None:
    click.echo(verdict.line())
    if not verdict.passed:
        raise SystemExit(1)
