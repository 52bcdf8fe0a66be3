"""``lorakit train``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lorakit.cli.options import layered_config_options
from lorakit.config.load import load_config


@click.command("train")
@layered_config_options
@click.option("--name", default=None, help="Run name (replaces output.name and the config file's stem).")
@click.option("--dry-run", is_flag=True, help="Validate, print the run name and resolved config, and exit.")
def train_cmd(config_file: str, overlays: tuple[str, ...], overrides: tuple[str, ...], name: str | None,
              dry_run: bool) -> None:
    """Train a LoRA adapter. Layers: defaults < CONFIG < each --add < each --set.

    \b
    Examples:
        lorakit train examples/typst/config.yaml
        lorakit train base.yaml --add lowmem.yaml --set lora.r=8 --set train.epochs=2
    """
    loaded = load_config(config_file, overlays, overrides, name)
    if dry_run:
        from lorakit.runs.naming import next_run_dir

        click.echo(f"# run name: {loaded.run_name}")
        click.echo(f"# run folder: {next_run_dir(Path(loaded.config.output.dir), loaded.run_name)}")
        click.echo(f"# config sha256: {loaded.sha256}")
        click.echo(loaded.to_yaml(), nl=False)
        return
    from lorakit.train.runner import run_training  # torch is imported only when we really train

    command = ["lorakit", "train", config_file, *[a for o in overlays for a in ("--add", o)],
               *[a for o in overrides for a in ("--set", o)], *(["--name", name] if name else [])]
    outcome = run_training(loaded, command)
    metrics = outcome.metrics
    click.echo(f"\n{outcome.status}: {outcome.run_dir}")
    summary = [f"train_loss {metrics['train_loss']:.4f}" if metrics.get("train_loss") is not None else "",
               f"eval_loss {metrics['eval_loss_before_training']:.4f} -> {metrics['eval_loss']:.4f}"
               if "eval_loss" in metrics else "",
               f"{metrics['train_tokens_per_second']:.0f} tokens/s", f"{metrics['train_runtime']:.0f} s"]
    click.echo("  " + " | ".join(s for s in summary if s))
    click.echo(f"  adapter: {outcome.run_dir}/adapter_model.safetensors (PEFT format); model card: "
               f"{outcome.run_dir}/README.md")
    click.echo("  load it: base = AutoModelForCausalLM.from_pretrained(<base, see the card>); "
               f"model = PeftModel.from_pretrained(base, {str(outcome.run_dir)!r})")
    if outcome.status == "interrupted":
        sys.exit(130)
