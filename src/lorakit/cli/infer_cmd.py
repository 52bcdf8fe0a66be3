"""``lorakit infer`` and ``lorakit chat``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lorakit.infer.convert import Unit
from lorakit.infer.engines import Engine

runs_dir_option = click.option("--runs-dir", default="runs", show_default=True, type=click.Path(path_type=Path),
                               help="Where a run name is looked up.")
engine_option = click.option("--engine", default=Engine.TRANSFORMERS.value, show_default=True,
                              type=click.Choice(Engine.names()),
                              help="llama.cpp: a run (exported to GGUF once), a .gguf, or a base .gguf with --lora.")
lora_option = click.option("--lora", default=None, type=click.Path(path_type=Path),
                           help="llama.cpp: an adapter GGUF to apply on the base GGUF given as RUN.")
device_option = click.option("--device", default="auto", show_default=True,
                             type=click.Choice(["auto", "cpu", "cuda"]), help="auto: a GPU when there is one.")


@click.command("infer")
@click.argument("run")
@click.option("--input", "input_path", required=True,
              help="A text/.tex file, a table of rows (.jsonl, .json, .csv, .parquet), or - for stdin (JSONL rows "
                   "when its first line is a JSON object).")
@click.option("--output", "output_path", default="-", show_default=True, help="A file, or - for stdout.")
@device_option
@click.option("--no-chunking", is_flag=True, help="--unit piece: send the whole input at once, however long.")
@click.option("--unit", default="auto", show_default=True, type=click.Choice(Unit.names()),
              help="A text file's unit: document (each formula of a .tex alone, prose by rules), line, or "
                   "piece (as much as fits). auto: document for .tex, line for .txt, piece otherwise.")
@click.option("--max-new-tokens", default=None, type=click.IntRange(min=1), help="Default: the run's max_length.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0), help="0: greedy.")
@click.option("--input-field", default=None, help="JSONL: the field to convert (default: input, tex, text...).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Answers generated together. Default: 96 (transformers), 32 (llama.cpp).")
@click.option("--stop", multiple=True, help="A text that ends an answer (left out); may be repeated.")
@click.option("--force", is_flag=True, help="Replace an existing --output file.")
@engine_option
@lora_option
@runs_dir_option
def infer_cmd(run: str, input_path: str, output_path: str, device: str, no_chunking: bool, unit: str,
              max_new_tokens: int | None, temperature: float, input_field: str | None, batch_size: int | None,
              stop: tuple[str, ...], force: bool, engine: str, lora: Path | None, runs_dir: Path) -> None:
    """Run an adapter (a run folder or name, any PEFT adapter folder, or a merged model folder) on a file.

    \b
    Examples:
        lorakit infer typst --input sample.tex --output out.typ
        lorakit infer runs/typst-v002 --input cases.jsonl --output answers.jsonl
        lorakit infer typst-f16.gguf --engine llama.cpp --input sample.tex
    """
    from lorakit.infer.answer_file import InferJob, answer_file

    job = InferJob(run, input_path, output_path, device, unit, not no_chunking, max_new_tokens, temperature,
                   input_field, batch_size, stop, force, engine, lora, runs_dir)
    result = answer_file(job, sys.stdin.read, lambda line: click.echo(line, err=True))
    if result is not None:
        click.echo(result, nl=not result.endswith("\n"))


@click.command("chat")
@click.argument("run")
@device_option
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0))
@runs_dir_option
def chat_cmd(run: str, device: str, max_new_tokens: int, temperature: float, runs_dir: Path) -> None:
    """Talk to an adapter; each message is wrapped as the run's training prompts were. /clear starts over; /bye or
    Ctrl+D ends."""
    from lorakit.infer.chat import HELP, Command, Conversation, command_in
    from lorakit.infer.load import load_adapter

    adapter = load_adapter(run, runs_dir, device)
    conversation = Conversation(adapter, max_new_tokens, temperature)
    click.echo(f"chatting with {adapter.name} (/? for help, /bye or Ctrl+D to end)", err=True)
    while True:
        try:
            message = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo("", err=True)
            return
        command = command_in(message)
        if command == Command.END:
            return
        if command == Command.CLEAR:
            conversation.clear()
            click.echo("(a new conversation)", err=True)
        elif command == Command.HELP:
            click.echo(HELP, err=True)
        elif message.strip():
            try:
                click.echo(f"{adapter.name}> {conversation.reply(message)}")
            except KeyboardInterrupt:  # Ctrl+C stops a long answer, not the chat
                click.echo("\n(stopped: that message is left out of the conversation)", err=True)
