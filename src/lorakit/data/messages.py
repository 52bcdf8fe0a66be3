"""Chat messages as people bring them, turned into ``Turn`` objects.

Three shapes meet here: OpenAI/TRL messages (``role``/``content``, assistant ``tool_calls``,
``tool`` results, content as a list of parts), ShareGPT as LLaMA-Factory writes it
(``from``/``value``, with ``function_call`` and ``observation`` turns), and any other key names a
LLaMA-Factory registry declares through its ``tags``. Assistant turns are trained, their tool calls
included; tool results never are. axolotl's per-message ``training`` (or ``weight: 0``) and
LLaMA-Factory's ``loss_weight: 0`` switch an assistant turn off.

LLaMA-Factory's newer message format writes content as parts with a ``value``: ``text``, ``reasoning``
(an assistant's thinking, handed to the chat template as ``reasoning_content``) and ``tool_call`` (a JSON
call), tool results as ``tool`` messages of text parts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lorakit.errors import DataError, DataRefusal

CHAT_ROLES = ("system", "user", "assistant", "tool")
CALL = "call"  # LLaMA-Factory's function_call turn: an assistant turn that holds tool calls
# Speaker names seen in the wild, mapped to chat roles.
ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
              "system": "system", "developer": "system", "tool": "tool", "function": "tool", "observation": "tool",
              "ipython": "tool", "function_call": CALL}
MEDIA_PARTS = ("image", "image_url", "input_image", "audio", "input_audio", "audio_url", "video", "video_url",
               "file")
# Message keys handed to the chat template as they are; the template decides whether to show them.
PASSED_KEYS = ("name", "tool_call_id")
TRAINING_KEYS = ("training", "weight", "loss_weight")
REASONING = "reasoning_content"  # where chat templates with a thinking block read an assistant's reasoning
CALL_PARTS = ("tool_call", "tool_calls", "function_call")


@dataclass(frozen=True)
class Tags:
    """Where a message keeps its speaker and text, and extra speaker names (a registry's ``tags``)."""

    role: str = "role"
    content: str = "content"
    roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def sharegpt(cls, roles: Mapping[str, str] | None = None) -> Tags:
        return cls("from", "value", roles or {})


def tags_of(messages: object, usual: Tags) -> Tags:
    """The tags a list of messages is written with: ``usual`` (role/content for ``messages``, from/value for
    ``conversations``), or the other pair where its first message has that one instead, as axolotl's
    ``message_property_mappings`` and many hub datasets write them."""
    first = messages[0] if isinstance(messages, list) and messages else None
    if isinstance(first, Mapping) and usual.role not in first:
        for tags in (Tags(), Tags.sharegpt()):
            if tags.role in first and tags.content in first:
                return tags
    return usual


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant" | "tool" | "text"
    content: str
    train: bool  # do this turn's tokens count towards the loss?
    tool_calls: tuple[Mapping[str, Any], ...] = ()  # assistant turns: {"type": "function", "function": {...}}
    extra: tuple[tuple[str, str], ...] = ()  # name, tool_call_id: passed to the template

    def message(self) -> dict[str, Any]:
        """The turn as a chat-template message."""
        message: dict[str, Any] = {"role": self.role, "content": self.content, **dict(self.extra)}
        if self.tool_calls:
            message["tool_calls"] = [dict(call) for call in self.tool_calls]
        return message


def chat_turns(messages: object, field_name: str, tags: Tags, ignored: set[str]) -> list[Turn]:
    """Turns for a list of messages; message keys nothing reads are added to ``ignored``.

    Raises:
        DataError: a message lacks a known role or text, naming it as ``field[index].key``.
        DataRefusal: a message holds an image, audio or video.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"row needs a non-empty '{field_name}' list")
    turns = []
    for index, message in enumerate(messages):
        where = f"{field_name}[{index}]"
        if not isinstance(message, Mapping):
            raise DataError(f"{where} must be an object with {tags.role!r} and {tags.content!r}")
        turns.append(_turn(message, where, tags))
        known = {tags.role, tags.content, "tool_calls", *PASSED_KEYS, *TRAINING_KEYS}
        ignored.update(f"{field_name}[].{key}" for key in message if key not in known)
    return turns


def _turn(message: Mapping[str, Any], where: str, tags: Tags) -> Turn:
    raw_role = message.get(tags.role)
    role = tags.roles.get(raw_role, ROLE_NAMES.get(raw_role)) if isinstance(raw_role, str) else None
    if role not in (*CHAT_ROLES, CALL):
        known = sorted({*ROLE_NAMES, *tags.roles})
        raise DataError(f"{where}.{tags.role} must be one of {', '.join(known)} (got {raw_role!r})")
    content = message.get(tags.content)
    calls = tool_calls(message.get("tool_calls"), f"{where}.tool_calls")
    if role == CALL:  # the value is the call itself: {"name": ..., "arguments": ...} or a list of them
        role, calls, content = "assistant", _call_value(content, f"{where}.{tags.content}"), ""
    reasoning = ""
    if isinstance(content, list) and any(_kind(p) in ("reasoning", *CALL_PARTS) for p in content):
        content, reasoning, part_calls = _value_parts(content, f"{where}.{tags.content}", role)
        calls += part_calls
    text = _text(content, f"{where}.{tags.content}", allow_empty=bool(calls))
    extra = tuple((key, str(message[key])) for key in PASSED_KEYS if message.get(key) is not None)
    extra += ((REASONING, reasoning),) if reasoning else ()
    return Turn(role, text, train=_trained(role, message, where), tool_calls=calls, extra=extra)


def _kind(part: object) -> object:
    return part.get("type") if isinstance(part, Mapping) else None


def _value_parts(parts: list[Any], where: str, role: str) -> tuple[list[Any], str, tuple[Mapping[str, Any], ...]]:
    """LLaMA-Factory's parts split: the text parts (read as any text part), the reasoning, the tool calls."""
    text, reasoning, calls = [], "", []
    for index, part in enumerate(parts):
        kind, value = _kind(part), part.get("value") if isinstance(part, Mapping) else None
        if kind == "reasoning" or kind in CALL_PARTS:
            if role != "assistant":
                raise DataError(f"{where}[{index}] is a {kind} part in a {role} turn; only assistant turns "
                                "reason or call tools")
            if not isinstance(value, str):
                raise DataError(f"{where}[{index}].value must be a string")
        if kind == "reasoning":
            reasoning += value
        elif kind in CALL_PARTS:
            calls += _call_value(value, f"{where}[{index}].value")
        else:
            text.append(part)
    return text, reasoning, tuple(calls)


def _trained(role: str, message: Mapping[str, Any], where: str) -> bool:
    weight = message.get("loss_weight")
    if weight is not None and weight not in (0, 1):  # True and False are 1 and 0
        raise DataError(f"{where}.loss_weight must be 0 (not trained) or 1 (trained) (got {weight!r}); "
                        "lorakit trains a turn or leaves it out, it does not weight turns")
    flags = [bool(message[key]) for key in TRAINING_KEYS if key in message]
    if role != "assistant":
        if any(flags):
            raise DataError(f"{where}: only assistant turns can be trained (this one is {role}); "
                            "remove its training, weight or loss_weight key")
        return False
    return all(flags)  # no flag: trained


def _text(content: object, where: str, allow_empty: bool) -> str:
    if isinstance(content, str):
        return content
    if content is None and allow_empty:
        return ""
    if isinstance(content, list):
        return "".join(_part_text(part, f"{where}[{i}]") for i, part in enumerate(content))
    raise DataError(f"{where} must be a string or a list of text parts (got {type(content).__name__})")


def _part_text(part: object, where: str) -> str:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return part["text"]
    if kind == "text" and isinstance(part.get("value"), str):  # LLaMA-Factory's parts
        return part["value"]
    if kind in MEDIA_PARTS:
        raise DataRefusal(f"{where} is an {kind} part: lorakit trains text models, so media cannot be trained; "
                          "train on a copy of the data without the media parts (or without the rows that have "
                          "them)")
    raise DataError(f"{where} must be a text part {{\"type\": \"text\", \"text\": ...}} (got {part!r:.80})")


def tool_calls(value: object, where: str) -> tuple[Mapping[str, Any], ...]:
    """OpenAI-shaped tool calls, arguments parsed from JSON text as chat templates expect a mapping."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DataError(f"{where} must be a list of calls (got {type(value).__name__})")
    calls = []
    for index, call in enumerate(value):
        inner = call.get("function", call) if isinstance(call, Mapping) else None
        if not isinstance(inner, Mapping) or not isinstance(inner.get("name"), str):
            raise DataError(f"{where}[{index}] must name a function: "
                            '{"type": "function", "function": {"name": ..., "arguments": {...}}}')
        function = {"name": inner["name"], "arguments": _arguments(inner.get("arguments", {}))}
        ident = {"id": call["id"]} if isinstance(call, Mapping) and call.get("id") else {}
        calls.append({"type": "function", "function": function, **ident})
    return tuple(calls)


def _arguments(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # kept as written: some datasets call tools with free text
    return value


def _call_value(content: object, where: str) -> tuple[Mapping[str, Any], ...]:
    try:
        parsed = json.loads(content) if isinstance(content, str) else content
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: a function_call turn must hold JSON like "
                        f'{{"name": ..., "arguments": {{...}}}} ({e.msg} at column {e.colno})') from None
    return tool_calls(parsed if isinstance(parsed, list) else [parsed], where)


def parse_tools(value: object, where: str = "tools") -> list[dict[str, Any]] | None:
    """A row's tool definitions as JSON schemas (``{"type": "function", "function": {...}}``), or None."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} must be a JSON list of tool definitions ({e.msg})") from None
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise DataError(f"{where} must be a list of tool definitions (got {type(value).__name__})")
    tools = []
    for index, tool in enumerate(value):
        schema = tool if "function" in tool else {"type": "function", "function": dict(tool)}
        if not isinstance(schema["function"], Mapping) or "name" not in schema["function"]:
            raise DataError(f"{where}[{index}] must have a name: {{\"name\": ..., \"parameters\": {{...}}}}")
        tools.append(dict(schema))
    return tools
