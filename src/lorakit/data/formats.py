"""Dataset formats: each turns one raw row into the turns of a conversation.

A format decides *what is said and what is trained on*; templates, tokenisation, truncation and
packing live elsewhere. Roles are ``system``, ``user``, ``assistant`` and ``tool`` for chat rows,
and ``text`` for raw segments that are concatenated without a chat template (plain text, and
prompt/completion pairs given as strings, as TRL treats them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lorakit.errors import DataError

CHAT_ROLES = ("system", "user", "assistant", "tool")
# ShareGPT speaker names, mapped to chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "observation": "tool"}


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant" | "tool" | "text"
    content: str
    train: bool  # do this turn's tokens count towards the loss?


Format = Callable[[Mapping[str, Any]], list[Turn]]
FORMATS: dict[str, Format] = {}


def register(name: str) -> Callable[[Format], Format]:
    def deco(fn: Format) -> Format:
        FORMATS[name] = fn
        return fn

    return deco


def _require(row: Mapping[str, Any], fmt: str, *keys: str) -> None:
    if missing := [k for k in keys if not isinstance(row.get(k), str)]:
        raise DataError(f"{fmt} row needs string fields {missing}; it has {sorted(row)}")


def _chat_turns(messages: object, fmt: str, field: str, role_key: str = "role",
                content_key: str = "content", roles: Mapping[str, str] | None = None) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{fmt} row needs a non-empty '{field}' list")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise DataError(f"{field}[{index}] must be an object with {role_key!r} and {content_key!r}")
        role, content = message.get(role_key), message.get(content_key)
        role = roles.get(role, role) if roles and isinstance(role, str) else role
        if role not in CHAT_ROLES:
            raise DataError(f"{field}[{index}].{role_key} must be one of {', '.join(CHAT_ROLES)} (got {role!r})")
        if not isinstance(content, str):
            raise DataError(f"{field}[{index}].{content_key} must be a string (got {type(content).__name__})")
        turns.append(Turn(role, content, train=role == "assistant"))
    return turns


@register("alpaca")
def alpaca(row: Mapping[str, Any]) -> list[Turn]:
    _require(row, "alpaca", "instruction", "output")
    prompt = f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]
    turns = [Turn("system", row["system"], train=False)] if row.get("system") else []
    return [*turns, Turn("user", prompt, train=False), Turn("assistant", row["output"], train=True)]


@register("messages")
def messages(row: Mapping[str, Any]) -> list[Turn]:
    if "messages" in row:
        turns = _chat_turns(row["messages"], "messages", "messages")
    elif "conversations" in row:  # ShareGPT
        turns = _chat_turns(row["conversations"], "sharegpt", "conversations", "from", "value", SHAREGPT_ROLES)
    else:
        raise DataError(f"messages row needs a 'messages' or 'conversations' list; it has {sorted(row)}")
    if not any(t.train for t in turns):
        raise DataError("messages row has no assistant turn to train on")
    return turns


@register("prompt_completion")
def prompt_completion(row: Mapping[str, Any]) -> list[Turn]:
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return [Turn("text", prompt, train=False), Turn("text", completion, train=True)]
    if isinstance(prompt, list) and isinstance(completion, list):
        context = [Turn(t.role, t.content, train=False) for t in _chat_turns(prompt, "prompt_completion", "prompt")]
        answer = _chat_turns(completion, "prompt_completion", "completion")
        if not any(t.train for t in answer):
            raise DataError("completion must hold at least one assistant message")
        return context + answer
    raise DataError(
        "prompt_completion row needs 'prompt' and 'completion', both strings or both lists of messages "
        f"(got {type(prompt).__name__} and {type(completion).__name__})"
    )


@register("text")
def text(row: Mapping[str, Any]) -> list[Turn]:
    _require(row, "text", "text")
    return [Turn("text", row["text"], train=True)]


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
    if "text" in row:
        return "text"
    raise DataError(
        f"cannot tell the format from fields {sorted(row)}; expected instruction/output (alpaca), "
        "messages or conversations (chat), prompt/completion, or text; set data.format to say which"
    )


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(f"unknown data format {name!r}; known formats: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]
