"""Dataset formats: each turns one raw row into a dialogue (its turns and tool definitions).

A format decides *what is said and what is trained on*; templates, tokenisation, truncation and
packing live elsewhere. Roles are ``system``, ``user``, ``assistant`` and ``tool`` for chat rows,
and ``text`` for raw segments that are concatenated without a chat template (plain text, and
prompt/completion pairs given as strings, as TRL treats them). Every field a format does not read
is reported back as ignored, so nothing is dropped without a word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lorakit.data.messages import Tags, Turn, chat_turns, parse_tools, tags_of
from lorakit.errors import DataError

__all__ = ["Dialogue", "FormatOptions", "Turn", "detect_format", "get_format"]


@dataclass(frozen=True)
class FormatOptions:
    train_history: bool = True  # alpaca history answers are trained, as LLaMA-Factory trains them
    tags: Tags | None = None  # message keys and speaker names, when a registry declares them


@dataclass(frozen=True)
class Dialogue:
    turns: list[Turn]
    tools: list[dict[str, Any]] | None = None
    ignored: frozenset[str] = frozenset()  # row fields (and message keys) nothing reads


DEFAULT = FormatOptions()
Format = Callable[[Mapping[str, Any], FormatOptions], Dialogue]
FORMATS: dict[str, Format] = {}


def register(name: str) -> Callable[[Format], Format]:
    def deco(fn: Format) -> Format:
        FORMATS[name] = fn
        return fn

    return deco


def _require(row: Mapping[str, Any], fmt: str, *keys: str) -> None:
    if missing := [k for k in keys if k not in row]:
        raise DataError(f"{fmt} row needs string fields {missing}; it has {sorted(row)}")
    if wrong := [k for k in keys if not isinstance(row[k], str)]:
        kinds = ", ".join(f"{k} is {_kind(row[k])}" for k in wrong)
        raise DataError(f"{fmt} row needs string fields {wrong}; {kinds}")


def _kind(value: Any) -> str:
    """What a JSON value is, in a message: null, int 5, list [1, 2]..."""
    if value is None:
        return "null"
    shown = repr(value)
    return f"{type(value).__name__} {shown if len(shown) <= 40 else shown[:37] + '...'}"


def _unread(row: Mapping[str, Any], read: set[str]) -> set[str]:
    return {key for key in row if key not in read}


def _with_system(turns: list[Turn], row: Mapping[str, Any]) -> list[Turn]:
    """A row-level ``system`` field opens the conversation (unless a system message already does)."""
    system = row.get("system")
    if system in (None, ""):
        return turns
    if not isinstance(system, str):
        raise DataError(f"system must be a string (got {type(system).__name__})")
    if turns and turns[0].role == "system":
        if turns[0].content != system:
            raise DataError("row has both a 'system' field and a different system message; keep one")
        return turns
    return [Turn("system", system, train=False), *turns]


@register("alpaca")
def alpaca(row: Mapping[str, Any], options: FormatOptions = DEFAULT) -> Dialogue:
    _require(row, "alpaca", "instruction", "output")
    history = row.get("history") or []
    if not isinstance(history, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in history):
        raise DataError("history must be a list of [instruction, answer] pairs")
    turns = []
    for index, (question, answer) in enumerate(history):
        if not (isinstance(question, str) and isinstance(answer, str)):
            raise DataError(f"history[{index}] must hold two strings")
        turns += [Turn("user", question, False), Turn("assistant", answer, options.train_history)]
    prompt = f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]
    turns += [Turn("user", prompt, train=False), Turn("assistant", row["output"], train=True)]
    read = {"instruction", "input", "output", "system", "history", "tools"}
    return Dialogue(_with_system(turns, row), parse_tools(row.get("tools")), frozenset(_unread(row, read)))


@register("messages")
def messages(row: Mapping[str, Any], options: FormatOptions = DEFAULT) -> Dialogue:
    ignored: set[str] = set()
    if "messages" in row:
        turns = chat_turns(row["messages"], "messages", options.tags or tags_of(row["messages"], Tags()), ignored)
        read = {"messages"}
    elif "conversations" in row:  # ShareGPT
        tags = options.tags or tags_of(row["conversations"], Tags.sharegpt())
        turns = chat_turns(row["conversations"], "conversations", tags, ignored)
        read = {"conversations"}
    else:
        raise DataError(f"messages row needs a 'messages' or 'conversations' list; it has {sorted(row)}")
    if not any(t.train for t in turns):
        raise DataError("messages row has no assistant turn to train on")
    ignored |= _unread(row, read | {"system", "tools"})
    return Dialogue(_with_system(turns, row), parse_tools(row.get("tools")), frozenset(ignored))


@register("prompt_completion")
def prompt_completion(row: Mapping[str, Any], options: FormatOptions = DEFAULT) -> Dialogue:
    prompt, completion = row.get("prompt"), row.get("completion")
    ignored = _unread(row, {"prompt", "completion", "system", "tools"})
    if isinstance(prompt, str) and isinstance(completion, str):
        unread = {"system", "tools"} & set(row)  # plain text has no system turn and no tool definitions
        return Dialogue([Turn("text", prompt, train=False), Turn("text", completion, train=True)],
                        ignored=frozenset(ignored | unread))
    if isinstance(prompt, list) and isinstance(completion, list):
        tags = options.tags or Tags()
        context = [replace(t, train=False) for t in chat_turns(prompt, "prompt", tags, ignored)]
        answer = chat_turns(completion, "completion", tags, ignored)
        if not any(t.train for t in answer):
            raise DataError("completion must hold at least one assistant message")
        return Dialogue(_with_system(context + answer, row), parse_tools(row.get("tools")), frozenset(ignored))
    raise DataError(
        "prompt_completion row needs 'prompt' and 'completion', both strings or both lists of messages "
        f"(got {type(prompt).__name__} and {type(completion).__name__})"
    )


@register("text")
def text(row: Mapping[str, Any], options: FormatOptions = DEFAULT) -> Dialogue:
    _require(row, "text", "text")
    return Dialogue([Turn("text", row["text"], train=True)], ignored=frozenset(_unread(row, {"text"})))


@register("segments")
def segments(row: Mapping[str, Any], options: FormatOptions = DEFAULT) -> Dialogue:
    """axolotl's template-free ``input_output``: text segments, each with ``label`` true (trained) or false."""
    parts = row.get("segments")
    if not isinstance(parts, list) or not parts:
        raise DataError("segments row needs a non-empty 'segments' list")
    turns = []
    for index, part in enumerate(parts):
        if not (isinstance(part, Mapping) and isinstance(part.get("text"), str)):
            raise DataError(f"segments[{index}] must be an object with 'text' (and 'label': true/false)")
        turns.append(Turn("text", part["text"], train=bool(part.get("label", True))))
    if not any(t.train for t in turns):
        raise DataError("segments row has no segment with label true to train on")
    return Dialogue(turns, ignored=frozenset(_unread(row, {"segments"})))


def detect_format(row: Mapping[str, Any]) -> str:
    """Name the format a row's fields imply.

    Raises:
        DataError: no known format matches the fields.
    """
    if "messages" in row or "conversations" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "segments" in row:
        return "segments"
    if "text" in row:
        return "text"
    if "input_ids" in row:
        raise DataError("rows hold token ids (input_ids): lorakit tokenizes with the model's own tokenizer, so "
                        "give the text instead (messages, prompt/completion, alpaca or text)")
    if "prompt" in row:
        raise DataError("prompt-only rows have no answer to train on (that shape is for RL trainers such as "
                        "GRPO); add a completion, output or assistant message")
    raise DataError(
        f"cannot tell the format from fields {sorted(row)}; expected instruction/output (alpaca), "
        "messages or conversations (chat), prompt/completion, segments, or text; set data.format to say which"
    )


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(f"unknown data format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]
