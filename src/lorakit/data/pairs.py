"""Preference rows (``train.method: dpo``): each row as two dialogues, the prompt with its chosen answer and
with its rejected one.

The shapes the peers write, all read by turning each side into a supervised row that an SFT format already
reads, so templates, system prompts, tools and tags behave exactly as they do for SFT:

- TRL, explicit prompt: ``prompt`` beside ``chosen``/``rejected`` (strings, or lists of messages);
- TRL, implicit prompt: ``chosen``/``rejected`` whole conversations (or texts) whose shared start is the prompt;
- LLaMA-Factory ``ranking`` rows: ``chosen``/``rejected`` answers (a message, or a string) after
  ``conversations``/``messages`` (sharegpt) or ``instruction``/``input`` (alpaca), registry columns included;
- axolotl's ``chatml.intel`` (Intel's orca_dpo_pairs): ``question`` (and ``system``) beside ``chosen``/``rejected``;
- LLaMA-Factory's newer rows: ``chosen_messages``/``rejected_messages``, two whole conversations.

Only the chosen and rejected answers are scored: every turn before them, earlier assistant turns included,
is prompt.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lorakit.data.formats import Dialogue, FormatOptions, detect_format, get_format
from lorakit.errors import DataRefusal

PAIR_NEEDS = ("a preference pair needs 'chosen' and 'rejected' answers beside its prompt ('prompt', "
              "'instruction', 'question', 'conversations' or 'messages'), or 'chosen' and 'rejected' as two whole "
              "conversations that start alike")


def is_pair(row: dict[str, Any]) -> bool:
    return ("chosen" in row and "rejected" in row) or ("chosen_messages" in row and "rejected_messages" in row)


def pair_dialogues(row: dict[str, Any], options: FormatOptions) -> tuple[Dialogue, Dialogue]:
    """The chosen and the rejected dialogue of one preference row; only their last answers are trained.

    Raises:
        DataRefusal: the row is not a preference pair (said once per file, naming what a pair needs).
        DataError: a pair whose sides cannot be read (which field, what is wrong).
    """
    if not is_pair(row):
        raise DataRefusal(f"rows are not preference pairs (fields {sorted(row)}): train.method dpo trains on "
                          f"pairs; {PAIR_NEEDS}")
    row = dict(row)
    if "chosen_messages" in row and "rejected_messages" in row:  # LLaMA-Factory's newer DPO rows
        row["chosen"], row["rejected"] = row.pop("chosen_messages"), row.pop("rejected_messages")
    if "question" in row and not any(k in row for k in ("prompt", "instruction", "conversations", "messages")):
        row["instruction"] = row.pop("question")  # axolotl chatml.intel, Intel/orca_dpo_pairs
    if "prompt" not in row and isinstance(row["chosen"], list | str) and not _has_context(row):
        row = _implicit_prompt(row)
    sides = []
    for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
        sft = _side_row(row, side, other)
        dialogue = get_format(detect_format(sft))(sft, options)
        answers = _answer_count(row[side])
        sides.append(Dialogue([replace(t, train=False) for t in dialogue.turns[:-answers]]
                              + dialogue.turns[-answers:], dialogue.tools, dialogue.ignored))
    return sides[0], sides[1]


def _has_context(row: dict[str, Any]) -> bool:
    return any(k in row for k in ("instruction", "conversations", "messages"))


def _implicit_prompt(row: dict[str, Any]) -> dict[str, Any]:
    """TRL's implicit prompt: the shared start of the two sides (whole messages; for texts, up to the last
    space before they differ), as ``trl.extract_prompt`` takes it."""
    chosen, rejected = row["chosen"], row["rejected"]
    if type(chosen) is not type(rejected):
        raise DataRefusal(f"'chosen' and 'rejected' must both be texts or both message lists; {PAIR_NEEDS}")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if isinstance(chosen, str) and 0 < shared < min(len(chosen), len(rejected)) and chosen[shared - 1] == " ":
        shared -= 1  # the space starts the answer, as TRL splits it
    if shared == 0:
        raise DataRefusal(f"'chosen' and 'rejected' have no prompt and do not start alike; {PAIR_NEEDS}")
    return {**row, "prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def _side_row(row: dict[str, Any], side: str, other: str) -> dict[str, Any]:
    """The supervised row whose answer is ``side``'s."""
    answer = row[side]
    sft = {k: v for k, v in row.items() if k not in (side, other)}
    if "conversations" in row or "messages" in row:  # LLaMA-Factory: the answer follows the conversation
        key = "conversations" if "conversations" in row else "messages"
        return {**sft, key: [*row[key], *(answer if isinstance(answer, list) else [answer])]}
    if "instruction" in row:
        return {**sft, "output": answer}
    return {**sft, "completion": answer}  # TRL: strings or message lists on both sides


def _answer_count(answer: Any) -> int:
    """How many turns the answer adds (a message list's length, else one)."""
    return len(answer) if isinstance(answer, list) and answer else 1
