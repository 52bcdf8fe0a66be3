"""``lorakit infer``: a file (or stdin) in, the adapter's answers out, checked before any model loads and written
whole at the end, each answer kept as it comes (``answer_log``) so a stop half way loses none."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import DataError
from lorakit.infer.convert import InputRows, Unit
from lorakit.infer.engines import Engine

STDIO = "-"


@dataclass(frozen=True)
class InferJob:
    run: str  # a run folder or name, a PEFT adapter folder, a merged model folder, or a GGUF (llama.cpp)
    input_path: str = STDIO  # a text/.tex file, a table of rows (.jsonl, .json, .csv, .parquet), or "-"
    output_path: str = STDIO
    device: str = "auto"
    unit: str = "auto"  # Unit's names
    chunking: bool = True
    max_new_tokens: int | None = None  # default: the run's max_length
    temperature: float = 0.0
    input_field: str | None = None
    batch_size: int | None = None
    stop: tuple[str, ...] = ()
    force: bool = False  # replace an existing output file
    engine: str = Engine.TRANSFORMERS
    lora: Path | None = None
    runs_dir: Path = Path("runs")

    @property
    def input_name(self) -> str:
        """The input as its messages name it."""
        return "stdin" if self.input_path == STDIO else self.input_path


def answer_file(job: InferJob, read_stdin: Callable[[], str], say: Callable[[str], None]) -> str | None:
    """The answers as text when ``job`` writes to stdout; else they are written to its output file (None).
    ``say`` gets what a person reads beside them (a document's summary, the file written).

    Raises:
        DataError, RunError, ModelError: a missing or empty input, an output that cannot be written or exists, a
            row without its field, a model that is not there; all before any model loads where they can be.
    """
    from lorakit.infer.convert import input_field, read_input_rows, stdin_rows
    from lorakit.infer.engines import check_reference, default_batch_size, open_model
    from lorakit.textfile import read_text

    check_reference(job.run, job.runs_dir, job.engine, job.lora)  # before the input is read or a model loaded
    source = None if job.input_path == STDIO else Path(job.input_path)
    if source is not None and source.is_dir():
        raise DataError(f"--input {job.input_path} is a folder; give a file in it")
    if source is not None and not source.is_file():
        raise DataError(f"--input: file not found: {job.input_path}")
    output = None if job.output_path == STDIO else Path(job.output_path)
    if output is not None:
        check_output(output, source, job.force)
    rows = read_input_rows(source) if source is not None else None  # a table of rows, else text
    text = "" if rows is not None else read_stdin() if source is None else read_text(source, DataError)
    if rows is None and not text.strip():
        raise DataError(f"{job.input_name}: the input is empty")
    if source is None and job.unit == Unit.AUTO:  # JSONL piped in is rows, as a .jsonl file's; --unit: text
        rows = stdin_rows(text)
    field = input_field(rows.rows, job.input_field, job.input_name, rows.places) if rows is not None else None
    adapter = open_model(job.run, job.runs_dir, job.device, job.engine, job.lora)
    kept = None if output is None else _answer_log(output, adapter, job)
    options = {"max_new_tokens": job.max_new_tokens or adapter.max_length, "temperature": job.temperature,
               "batch_size": job.batch_size or default_batch_size(job.engine), "stop": job.stop, "kept": kept}
    with kept or contextlib.nullcontext():  # a stop half way keeps every answer found so far
        result = _answers(adapter, job, text, rows, field, options, say)
    if output is None:
        return result
    from lorakit.atomic import write_text_atomic

    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, result)  # a stop half way leaves the file as it was
    if kept is not None:
        kept.remove(output, result)  # the output holds every answer now
    say(f"wrote {output}")
    return None


def check_output(output: Path, source: Path | None, force: bool) -> None:
    """Before any model loads: the output is not the input, and replaces an existing file only when asked.

    Raises:
        DataError: which, and what to do.
    """
    from lorakit.atomic import check_writable

    check_writable(output.parent, f"--output {output}", "choose another --output")
    if output.is_dir():
        raise DataError(f"--output {output} is a folder; give a file (in it, or elsewhere)")
    if not output.exists():
        return
    if source is not None and os.path.samefile(output, source):
        raise DataError(f"--output {output} is the --input file: the answers would replace what they answer; "
                        "write them to another file")
    if not force:
        raise DataError(f"--output {output} exists; give --force to replace it, or another file")


def _answers(adapter: Any, job: InferJob, text: str, rows: InputRows | None, field: str | None,
             options: dict[str, Any], say: Callable[[str], None]) -> str:
    """The output's text: each JSONL row with its answer, or the input converted by its unit."""
    from lorakit.infer.convert import convert_lines, convert_rows, convert_tex, convert_text

    if rows is not None:
        answered = convert_rows(adapter, rows.rows, field, job.input_name, rows.places, **options)
        if job.output_path.endswith(".json"):  # a list as the input's, else one row a line
            return json.dumps(answered, ensure_ascii=False, indent=2) + "\n"
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in answered)
    if (unit := Unit.for_input(job.unit, job.input_path)) == Unit.DOCUMENT:
        document = convert_tex(adapter, text, **options)
        say(document.summary())
        return document.typst
    if unit == Unit.LINE:
        return convert_lines(adapter, text, **options)
    return convert_text(adapter, text, chunking=job.chunking, **options)


def _answer_log(output: Path, adapter: Any, job: InferJob) -> Any:
    """Where the answers for ``output`` are kept as they come (``infer.answer_log``)."""
    from lorakit.infer.answer_log import AnswerLog, model_fingerprint

    return AnswerLog(output, model_fingerprint(adapter, job.engine),
                     {"temperature": job.temperature, "stop": list(job.stop)})
