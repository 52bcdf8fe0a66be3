"""``lorakit infer`` and ``lorakit chat``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

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
@click.option("--input", "input_path", required=True, help="A text/.tex file, a .jsonl file, or - for stdin.")
@click.option("--output", "output_path", default="-", show_default=True, help="A file, or - for stdout.")
@device_option
@click.option("--no-chunking", is_flag=True, help="--unit piece: send the whole input at once, however long.")
@click.option("--unit", default="auto", show_default=True, type=click.Choice(Unit.names()),
              help="A text file's unit: document (each formula of a .tex alone, prose by rules), line, or "
                   "piece (as much as fits). auto: document for .tex, line for .txt, piece otherwise.")
@click.option("--max-new-tokens", default=None, type=int, help="Default: the run's max_length.")
@click.option("--temperature", default=0.0, show_default=True, help="0: greedy.")
@click.option("--input-field", default=None, help="JSONL: the field to convert (default: input, tex, text...).")
@click.option("--batch-size", default=None, type=int,
              help="Answers generated together. Default: 96 (transformers), 32 (llama.cpp).")
@click.option("--stop", multiple=True, help="A text that ends an answer (left out); may be repeated.")
@click.option("--force", is_flag=True, help="Replace an existing --output file.")
@engine_option
@lora_option
@runs_dir_option
def infer_cmd(run: str, input_path: str, output_path: str, device: str, no_chunking: bool, unit: str,
              max_new_tokens: int | None, temperature: float, input_field: str | None, batch_size: int | None,
              stop: tuple[str, ...], force: bool, engine: str, lora: Path | None, runs_dir: Path) -> None:
    """Run an adapter (a run folder or name, or any PEFT adapter folder) on a file.

    \b
    Examples:
        lorakit infer typst --input sample.tex --output out.typ
        lorakit infer runs/typst-v002 --input cases.jsonl --output answers.jsonl
        lorakit infer typst-f16.gguf --engine llama.cpp --input sample.tex
    """
    from lorakit.errors import DataError
    from lorakit.infer.convert import input_field as pick_field
    from lorakit.infer.convert import read_jsonl
    from lorakit.infer.engines import check_reference, default_batch_size, open_model
    from lorakit.textfile import read_text

    check_reference(run, runs_dir, engine, lora)  # a wrong model fails before the input is read or one loaded
    is_jsonl = input_path.endswith(".jsonl")
    if input_path != "-" and not Path(input_path).is_file():
        raise DataError(f"--input: file not found: {input_path}")
    if output_path != "-":
        check_output(Path(output_path), None if input_path == "-" else Path(input_path), force)
    text = sys.stdin.read() if input_path == "-" else read_text(Path(input_path), DataError)
    if not text.strip():
        raise DataError(f"{input_path if input_path != '-' else 'stdin'}: the input is empty")
    rows = read_jsonl(Path(input_path) if input_path != "-" else None, text) if is_jsonl else None
    field = pick_field(rows, input_field, input_path) if rows is not None else None
    adapter = open_model(run, runs_dir, device, engine, lora)
    kept = None if output_path == "-" else answer_log(Path(output_path), adapter, engine, temperature, stop)
    options = {"max_new_tokens": max_new_tokens or adapter.max_length, "temperature": temperature,
               "batch_size": batch_size or default_batch_size(engine), "stop": stop, "kept": kept}
    try:
        result = _answer(adapter, text, rows, field, unit, input_path, no_chunking, options)
    except KeyboardInterrupt:
        if kept is not None:
            kept.say_kept()
        raise
    finally:
        if kept is not None:
            kept.close()  # a stop half way keeps every answer found so far for the same command run again
    if output_path == "-":
        click.echo(result, nl=not result.endswith("\n"))
    else:
        from lorakit.atomic import write_text_atomic

        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(output_path), result)  # a stop half way leaves the file as it was
        if kept is not None:
            kept.remove()  # the output holds every answer now
        click.echo(f"wrote {output_path}", err=True)


def _answer(adapter: Any, text: str, rows: list[dict] | None, field: str | None, unit: str, input_path: str,
            no_chunking: bool, options: dict[str, Any]) -> str:
    """The output's text: each JSONL row with its answer, or the input converted by its unit."""
    from lorakit.infer.convert import convert_lines, convert_rows, convert_tex, convert_text

    if rows is not None:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n"
                       for r in convert_rows(adapter, rows, field, input_path, **options))
    if (chosen := Unit.for_input(unit, input_path)) == Unit.DOCUMENT:
        document = convert_tex(adapter, text, **options)
        click.echo(document.summary(), err=True)
        return document.typst
    if chosen == Unit.LINE:
        return convert_lines(adapter, text, **options)
    return convert_text(adapter, text, chunking=not no_chunking, **options)


def answer_log(output: Path, adapter: Any, engine: str, temperature: float, stop: tuple[str, ...]) -> Any:
    """Where the answers for ``output`` are kept as they come (``infer.answer_log``)."""
    from lorakit.infer.answer_log import AnswerLog, model_fingerprint

    return AnswerLog(output, model_fingerprint(adapter, engine), {"temperature": temperature, "stop": list(stop)})


def check_output(output: Path, source: Path | None, force: bool) -> None:
    """Before any model loads: the output is not the input, and replaces an existing file only when asked.

    Raises:
        DataError: which, and what to do.
    """
    from lorakit.atomic import check_writable
    from lorakit.errors import DataError

    check_writable(output.parent, f"--output {output}", "choose another --output")
    if not output.exists():
        return
    if source is not None and os.path.samefile(output, source):
        raise DataError(f"--output {output} is the --input file: the answers would replace what they answer; "
                        "write them to another file")
    if not force:
        raise DataError(f"--output {output} exists; give --force to replace it, or another file")


@click.command("chat")
@click.argument("run")
@device_option
@click.option("--max-new-tokens", default=256, show_default=True)
@click.option("--temperature", default=0.0, show_default=True)
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
