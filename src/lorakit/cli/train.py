"""``lorakit train``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lorakit.cli.options import layered_config_options
from lorakit.config.load import load_config


@click.command("train")
@layered_config_options(required=False)
@click.option("--name", default=None, help="Run name (replaces output.name and the config file's stem).")
@click.option("--dry-run", is_flag=True, help="Validate, print the run name and resolved config, and exit.")
@click.option("--resume", "resume_run", default=None, metavar="RUN",
              help="Continue an interrupted or failed run (its folder or name) from its resume state, instead "
                   "of CONFIG.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where --resume looks a run name up.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Training processes on this machine (one per GPU), started by torchrun; sets launch.nproc.")
@click.option("--run-dir", "prepared_run", default=None, hidden=True,
              help="Train a run folder created earlier, as one of its processes (what torchrun and Slurm jobs run).")
@click.option("--record-dataset", "dataset", default=None, hidden=True, nargs=2, metavar="FOLDER NAME",
              help="The queue's dataset folder and its name as found: fingerprinted by content into the manifest.")
def train_cmd(config_file: str | None, overlays: tuple[str, ...], overrides: tuple[str, ...], name: str | None,
              dry_run: bool, resume_run: str | None, runs_dir: str, nproc: int | None,
              prepared_run: str | None, dataset: tuple[str, str] | None) -> None:
    """Train a LoRA adapter. Layers: defaults < CONFIG < each --add < each --set.

    \b
    Examples:
        lorakit train examples/typst/config.yaml
        lorakit train base.yaml --add lowmem.yaml --set lora.r=8 --set train.epochs=2
        lorakit train --resume runs/typst-v003
        lorakit train examples/typst/config.yaml --nproc 2
    """
    if prepared_run is not None:
        from lorakit.recipe.run import train_prepared
        from lorakit.train.distributed import process_rank

        if process_rank() != 0:
            quiet_worker()
        outcome = train_prepared(Path(prepared_run))
        if process_rank() == 0:
            _report(outcome)
        return
    if resume_run is not None:
        if config_file or overlays or overrides or name or dry_run:
            raise click.UsageError("--resume continues a run with its own config: give no CONFIG, --add, --set, "
                                   "--name or --dry-run with it")
        from lorakit.recipe.run import resume_training
        from lorakit.runs.catalog import find_run, read_manifest

        run_dir = find_run(resume_run, Path(runs_dir))
        recorded_nproc = read_manifest(run_dir).get("config", {}).get("launch", {}).get("nproc", 1)
        if recorded_nproc > 1:
            from lorakit.recipe.launch import run_processes

            _exit_as(run_processes(run_dir, recorded_nproc))  # rank 0 reports
        else:
            _report(resume_training(run_dir, ["lorakit", "train", "--resume", resume_run]))
        return
    if config_file is None:
        raise click.UsageError("give a CONFIG file to train, or --resume RUN")
    if nproc is not None:
        overrides = (*overrides, f"launch.nproc={nproc}")
    loaded = load_config(config_file, overlays, overrides, name)
    if dry_run:
        from lorakit.runs.naming import next_run_dir

        click.echo(f"# run name: {loaded.run_name}")
        click.echo(f"# run folder: {next_run_dir(Path(loaded.config.output.dir), loaded.run_name)}")
        click.echo(f"# config sha256: {loaded.sha256}")
        click.echo(loaded.to_yaml(), nl=False)
        return
    command = ["lorakit", "train", config_file, *[a for o in overlays for a in ("--add", o)],
               *[a for o in overrides for a in ("--set", o)], *(["--name", name] if name else [])]
    record = None
    if dataset is not None:
        from lorakit.runs.fingerprint import fingerprint_dataset

        record = {"dataset": {**fingerprint_dataset(Path(dataset[0])), "name": dataset[1]}}
    if loaded.config.launch.nproc > 1:
        from lorakit.recipe.launch import train_processes

        _exit_as(train_processes(loaded, command, record))  # rank 0 reports
        return
    from lorakit.recipe.run import run_training  # torch is imported only when we really train

    _report(run_training(loaded, command, record=record))


def quiet_worker() -> None:
    """Processes other than rank 0 show no progress bars: one set on the terminal is enough."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _exit_as(outcome: Any) -> None:
    if outcome.status == "interrupted":
        sys.exit(130)


def _report(outcome: Any) -> None:
    metrics = outcome.metrics
    click.echo(f"\n{outcome.status}: {outcome.run_dir}")
    summary = [f"train_loss {metrics['train_loss']:.4f} (last step {metrics['train_loss_last']:.4f})"
               if metrics.get("train_loss") is not None else "",
               f"eval_loss {metrics['eval_loss_before_training']:.4f} -> {metrics['eval_loss']:.4f}"
               if "eval_loss" in metrics else "",
               f"{metrics['train_tokens_per_second']:.0f} tokens/s", f"{metrics['train_runtime']:.0f} s"]
    click.echo("  " + " | ".join(s for s in summary if s))
    click.echo(f"  adapter: {outcome.run_dir}/adapter_model.safetensors (PEFT format); model card: "
               f"{outcome.run_dir}/README.md")
    click.echo("  load it: base = AutoModelForCausalLM.from_pretrained(<base, see the card>); "
               f"model = PeftModel.from_pretrained(base, {str(outcome.run_dir)!r})")
    if outcome.status == "interrupted":
        click.echo(f"  continue it: lorakit train --resume {outcome.run_dir}")
        sys.exit(130)
