"""Evaluate adapters (and their base models) on a held-out file: loss, exact match, chrF, Typst compile rate.

The eval file is either in a training format (the prompt is everything before the last
assistant turn, the reference is that turn) or plain rows with an input and a target field
(``tex``/``typst`` in the LaTeX->Typst set), wrapped the way the run's training prompts were.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorakit.config.schema import EVAL_METRICS, GENERATED_METRICS
from lorakit.data.dataset import Conversation
from lorakit.data.formats import Turn
from lorakit.errors import DataError, LabelledRows, ModelError, PreferenceRows, RunError
from lorakit.infer import metrics as m
from lorakit.infer.convert import read_jsonl
from lorakit.infer.engines import Engine
from lorakit.infer.generate import GENERATE_LANES, check_context, generate_turns
from lorakit.infer.load import LoadedAdapter, is_merged_folder
from lorakit.infer.row_prompts import is_conversation_row, split_at_answer
from lorakit.textfile import read_json

if TYPE_CHECKING:
    from lorakit.infer.drafts import GreedyStarts

log = logging.getLogger(__name__)

LENGTH_RATIO = 1.5  # a reference is rarely longer than 1.5x its prompt (template included)
# An answer twice its reference's tokens (+16) is wrong by exact match whatever follows; any tokenizer writes
# a text in well under twice the tokens of its own encoding of it.
REFERENCE_CAP = 1.0
LOSS_BATCH = 8  # the loss pass's forwards hold the tokens of this many rows of the run's max_length
FIELD_PAIRS = (("input", "output"), ("tex", "typst"), ("source", "target"), ("question", "answer"))


@dataclass(frozen=True)
class EvalCase:
    prompt: list[Turn] | str  # turns of a training-format row, or the text to wrap with the run's prompt shape
    reference: str
    tools: list[dict[str, Any]] | None = None  # the row's tool definitions, rendered with its prompt


def load_cases(path: Path, input_field: str | None = None, target_field: str | None = None,
               limit: int | None = None) -> list[EvalCase]:
    """The cases of an eval file, first ``limit`` only.

    Raises:
        DataError: the file is missing, empty or has rows of neither kind.
    """
    from lorakit.data.registry import is_registry_ref

    if is_registry_ref(str(path)):  # datasets of a LLaMA-Factory registry, read as training would
        return cases_from_conversations(_scored_conversations(str(path))[:limit])
    if not path.is_file():
        raise DataError(f"--data: file not found: {path}")
    rows = read_jsonl(path)[:limit] if path.suffix == ".jsonl" else None
    pair = (input_field, target_field) if input_field and target_field else None
    if rows is not None and pair is None and not any(map(is_conversation_row, rows)):  # alpaca has input/output
        pair = next(((i, t) for i, t in FIELD_PAIRS if all(isinstance(r.get(i), str) and isinstance(r.get(t), str)
                                                            for r in rows)), None)
    if rows is not None and pair is not None:
        for number, row in enumerate(rows, 1):
            if not (isinstance(row.get(pair[0]), str) and isinstance(row.get(pair[1]), str)):
                raise DataError(f"{path}:{number}: needs text fields {pair[0]!r} and {pair[1]!r}")
        return [EvalCase(r[pair[0]], r[pair[1]]) for r in rows]
    return cases_from_conversations(_scored_conversations(str(path))[:limit])


def _scored_conversations(path: str) -> list[Conversation]:
    """The file's conversations as training reads them; preference pairs against their chosen answer, and KTO's
    labelled rows only where the label is true (training refuses both without a setting; an evaluation has
    one reading that makes sense, and says which)."""
    from lorakit.config.data_section import DataSection
    from lorakit.data.dataset import load_conversations

    try:
        return load_conversations([path])
    except PreferenceRows:
        log.info("%s: preference pairs; each is scored against its chosen answer", path)
        return load_conversations([path], DataSection(train=[path], use="chosen"))
    except LabelledRows:
        log.info("%s: rows labelled true/false; those labelled true are scored, their answer the reference", path)
        return load_conversations([path], DataSection(train=[path], label_field="label"))


def cases_from_conversations(conversations: Sequence[Conversation]) -> list[EvalCase]:
    """Each conversation as a case: everything before its last trained turn is the prompt, that turn the reference."""
    return [EvalCase(*split_at_answer(conv.turns), conv.tools) for conv in conversations]


def case_turns(adapter: LoadedAdapter, case: EvalCase) -> list[Turn]:
    """The turns a case asks: its own, or its text wrapped as the run's training prompts were."""
    return adapter.shape.turns(case.prompt) if isinstance(case.prompt, str) else case.prompt


def eval_loss(adapter: LoadedAdapter, cases: Sequence[EvalCase], use_adapter: bool = True,
              with_starts: bool = False) -> tuple[float, GreedyStarts | None]:
    """Mean next-token loss of the references given their prompts (teacher forcing), and with ``with_starts``
    the greedy answers' starts the same pass proves (``infer.drafts``)."""
    from contextlib import nullcontext

    from lorakit.data.packing import evaluation_groups
    from lorakit.data.tokenize import Example
    from lorakit.infer.drafts import loss_and_greedy_starts
    from lorakit.train.evaluate import evaluate_loss

    examples = []
    for case in cases:
        turns = case_turns(adapter, case)
        answer = Turn("text" if turns[-1].role == "text" else "assistant", case.reference, train=True)
        ids, labels = adapter.encoder.encode([*turns, answer], case.tools)
        examples.append(Example(ids[: adapter.max_length], labels[: adapter.max_length]))
    pad = adapter.tokenizer.pad_token_id if adapter.tokenizer.pad_token_id is not None else adapter.stop_ids[0]
    groups = evaluation_groups(examples, LOSS_BATCH, adapter.max_length)
    with nullcontext() if use_adapter else adapter.model.disable_adapter():
        if with_starts:
            return loss_and_greedy_starts(adapter.model, groups, pad, 256, adapter.device, keep_states=len(examples))
        return evaluate_loss(adapter.model, groups, pad, 256, adapter.device), None


def score(adapter: LoadedAdapter, cases: Sequence[EvalCase], wanted: Sequence[str], use_adapter: bool = True,
          max_new_tokens: int = 256, batch_size: int = GENERATE_LANES,
          cap_at_reference: bool = False, starts: GreedyStarts | None = None,
          earlier: Sequence[str] | None = None) -> tuple[dict[str, float], list[str]]:
    """The metrics in ``wanted`` for one model (the adapter, or its base alone), and its predictions.

    ``cap_at_reference`` (in-training evaluations) stops an answer at ``REFERENCE_CAP`` times its reference's
    tokens + 16: an answer that long cannot equal its reference, and an untrained adapter's answers that run
    on no longer decide how long an evaluation takes. ``starts``: the answers' starts a loss pass of the same
    model proved (``infer.drafts``), decoded from where they end. ``earlier``: the cases' answers of an earlier
    evaluation, drafted from (``generate_turns``)."""
    results: dict[str, float] = {"cases": len(cases)}
    generating = any(name in wanted for name in GENERATED_METRICS)
    turns = [case_turns(adapter, c) for c in cases]
    if generating and "loss" in wanted:  # said before the loss pass (which cuts its cases at max_length and
        # always fits), not after it; without one, generate_turns says it first
        check_context(adapter, [adapter.encoder.prompt_ids(t, c.tools) for t, c in zip(turns, cases, strict=True)],
                      "case", "give shorter cases")
    if "loss" in wanted:  # the transformers engine's pass also proves where greedy answers follow the references
        loss, proved = eval_loss(adapter, cases, use_adapter,
                                 with_starts=generating and not hasattr(adapter.model, "generate_all"))
        results.update(loss=round(loss, 4), perplexity=round(m.perplexity(loss), 3))
        starts = starts or proved
    predictions: list[str] = []
    if generating:
        label = adapter.name if use_adapter else "base model"
        predictions = generate_turns(adapter, turns, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, use_adapter=use_adapter, length_ratio=LENGTH_RATIO,
                                     on_batch=lambda done: log.info("%s: %d/%d generated", label, done, len(cases)),
                                     tools=[c.tools for c in cases],
                                     caps=_reference_caps(adapter, cases) if cap_at_reference else None,
                                     starts=starts, earlier=earlier)
        references = [c.reference for c in cases]
        if "exact" in wanted:
            results["exact"] = round(m.exact_match(predictions, references), 4)
        if "chrf" in wanted:
            results["chrf"] = round(m.chrf(predictions, references), 2)
        if "typst" in wanted:
            results["typst"] = round(m.typst_compile_rate(predictions), 4)
    return results, predictions


def _reference_caps(adapter: LoadedAdapter, cases: Sequence[EvalCase]) -> list[int]:
    return [int(REFERENCE_CAP * len(adapter.tokenizer(c.reference, add_special_tokens=False)["input_ids"])) + 16
            for c in cases]


def _earlier_results(path: Path) -> dict[str, Any]:
    """What eval_results.json holds already (another trainer's keys too, kept). One that is not a JSON object is
    moved aside, not written over: the evaluation just made is not lost to it, and neither is the file."""
    if not path.is_file():
        return {}
    try:
        return read_json(path, RunError, dict)
    except RunError:  # not a JSON object: kept aside below
        pass
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    log.warning("%s is not a JSON object; kept as %s and a new one written", path, aside.name)
    return {}


def record(adapter: LoadedAdapter, data: Path, results: dict[str, dict[str, float]],
           predictions: dict[str, list[str]], cases: Sequence[EvalCase], engine: str = Engine.TRANSFORMERS,
           limit: int | None = None) -> None:
    """Save results into the run's eval_results.json, manifest and model card, and predictions beside them
    (under their own names for llama.cpp, so they sit next to the transformers figures, and for ``--limit N``,
    ``<file>.firstN``, so a quick look at a few cases never replaces the whole file's figures). An evaluation that
    generated nothing (``--metrics loss``) leaves the predictions an earlier one wrote as they are."""
    from lorakit.runs.catalog import is_run
    from lorakit.runs.folder import RunFolder
    from lorakit.runs.manifest import write_json_atomic

    folder = adapter.path
    stem = data.stem if engine == Engine.TRANSFORMERS else f"{data.stem}.llamacpp"
    stem += f".first{limit}" if limit is not None else ""
    key = f"eval_{stem}"
    path = folder / "eval_results.json"
    write_json_atomic(path, {**_earlier_results(path), key: results})
    generated = {label: preds for label, preds in predictions.items() if preds}
    if generated:
        out = folder / "eval" / f"{stem}.jsonl"
        out.parent.mkdir(exist_ok=True)
        lines = [{"reference": c.reference, **{label: preds[i] for label, preds in generated.items()}}
                 for i, c in enumerate(cases)]
        out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    if is_run(folder):
        RunFolder.open(folder).add_evaluation(str(data), engine, results, limit)


def _record_if_writable(adapter: LoadedAdapter, data: Path, results: dict[str, dict[str, float]],
                        predictions: dict[str, list[str]], cases: Sequence[EvalCase], engine: str,
                        limit: int | None) -> None:
    """``record``; a folder that cannot take them (a colleague's runs, mounted read-only; a full disk) loses
    nothing: the minutes of scoring reach the table, and the warning says they were not recorded."""
    try:
        record(adapter, data, results, predictions, cases, engine, limit)
    except OSError as e:
        log.warning("%s: results not recorded in %s (%s); the table has them", adapter.name, adapter.path, e)


@dataclass(frozen=True)
class EvalOptions:
    base: bool = False  # also the base model alone, on the same prompts
    limit: int | None = None
    input_field: str | None = None
    target_field: str | None = None
    max_new_tokens: int = 256
    batch_size: int = GENERATE_LANES
    device: str = "auto"
    engine: str = Engine.TRANSFORMERS
    lora: Path | None = None  # llama.cpp: an adapter GGUF on the base GGUF given as the run


def evaluate_runs(refs: Sequence[str], data: Path, wanted: Sequence[str], options: EvalOptions = EvalOptions(),
                  runs_dir: Path = Path("runs")) -> dict[str, dict[str, float]]:
    """{model label: metrics} for each run (and, with ``base``, each distinct base model), recorded in each run.

    Raises:
        DataError: an unknown metric, or an unusable eval file. ModelError: loss or --base under llama.cpp.
    """
    unknown = [w for w in wanted if w not in EVAL_METRICS]
    if unknown:
        raise DataError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(EVAL_METRICS)}")
    from lorakit.infer.metrics import METRIC_PACKAGES, missing_packages

    missing = missing_packages(wanted)  # before minutes of generation, not after
    if missing:
        raise DataError(f"--metrics: {missing[0]} needs the {METRIC_PACKAGES[missing[0]]} package: "
                        "pip install 'lorakit[eval]'")
    if options.engine == Engine.LLAMA_CPP and ("loss" in wanted or options.base):
        raise ModelError("--engine llama.cpp scores generated answers (exact, chrf, typst); loss and --base need "
                         "--engine transformers")
    from lorakit.infer.engines import check_reference, open_model

    for ref in refs:
        check_reference(ref, runs_dir, options.engine, options.lora)
        if options.base and is_merged_folder(Path(ref)):
            raise ModelError(f"--base: {ref} is a model with its adapter merged in, so there is no base apart from "
                             "it; evaluate the run it came from with --base")
    cases = load_cases(data, options.input_field, options.target_field, options.limit)
    table: dict[str, dict[str, float]] = {}
    bases_done: set[str] = set()
    for ref in refs:
        adapter = open_model(ref, runs_dir, options.device, options.engine, options.lora)
        results, predictions = {}, {}
        results["adapter"], predictions["adapter"] = score(adapter, cases, wanted, True, options.max_new_tokens,
                                                           options.batch_size)
        label = adapter.name if options.engine == Engine.TRANSFORMERS else f"{adapter.name} (llama.cpp)"
        table[label] = results["adapter"]
        base_name = str((adapter.manifest or {}).get("base_model", {}).get("name", "base"))
        if options.base:
            results["base"], predictions["base"] = score(adapter, cases, wanted, False, options.max_new_tokens,
                                                         options.batch_size)
            if base_name not in bases_done:
                table[f"base: {base_name}"] = results["base"]
                bases_done.add(base_name)
        if (adapter.path / "adapter_config.json").is_file() or is_merged_folder(adapter.path):
            # a run, an adapter or lorakit's merged export; not a bare GGUF's folder, which is someone else's
            _record_if_writable(adapter, data, results, predictions, cases, options.engine, options.limit)
        del adapter
    return table
