"""Rows in a training format read as questions to answer: what ``infer``, ``eval`` and ``data pairs`` ask.

An alpaca row's question is its instruction with its input, its system turn and history; a chat row's is the
conversation before its last answer (that answer, when there is one, is the reference). Reading such a row by a
single field would ask the wrong question: an alpaca row's ``input`` alone leaves out the instruction, and is
empty in most rows. The rows are read by the training formats' own readers, so a question is put exactly as
training put it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lorakit.data.formats import Dialogue, Turn, detect_format, get_format

CONVERSATION_KEYS = ("instruction", "messages", "conversations")
ASSISTANT_ROLES = ("assistant", "gpt")  # OpenAI/TRL's role, ShareGPT's ``from``


def is_conversation_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is in a training format that carries its own whole question (not one text to wrap)."""
    return (any(key in row for key in CONVERSATION_KEYS) or isinstance(row.get("prompt"), list)
            or ("prompt" in row and "completion" in row))  # TRL's: the prompt is whole, never wrapped again


def question_of(row: Mapping[str, Any]) -> tuple[list[Turn], str | None, list[dict[str, Any]] | None]:
    """The turns ``row`` asks the model to answer, its reference answer (None when it ends in a question), and its
    tool definitions.

    Raises:
        DataError: the row does not read in its format (the reader's words).
    """
    answered = _with_answer(row)
    dialogue: Dialogue = get_format(detect_format(answered))(answered)
    prompt, reference = split_at_answer(dialogue.turns)
    return prompt, (reference if answered is row else None), dialogue.tools


def split_at_answer(turns: list[Turn]) -> tuple[list[Turn], str]:
    """Everything before the last trained answer (as context), and that answer's text. A turn that only calls a
    tool has no text to compare with, so the last one with text is the answer where there is one."""
    trained = [i for i, t in enumerate(turns) if t.train]
    last = max((i for i in trained if turns[i].content or not turns[i].tool_calls), default=trained[-1])
    return [replace(t, train=False) for t in turns[:last]], turns[last].content


def _with_answer(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """``row`` itself when it holds an answer; else a copy with an empty answer where its format reads one, so
    its reader (which wants something to train on) reads the question."""
    if "instruction" in row:
        return row if "output" in row else {**row, "output": ""}
    for key in ("messages", "conversations"):
        chat = row.get(key)
        if isinstance(chat, list) and chat and isinstance(chat[-1], Mapping):
            last = chat[-1]
            if (last.get("role") or last.get("from")) in ASSISTANT_ROLES:
                return row
            answer = {"from": "gpt", "value": ""} if "from" in last else {"role": "assistant", "content": ""}
            return {**row, key: [*chat, answer]}
    if isinstance(row.get("prompt"), list) and "completion" not in row:
        return {**row, "completion": [{"role": "assistant", "content": ""}]}
    return row
