"""What to do with a row before its format reads it: refuse it, leave it out, or fill it in.

lorakit trains supervised fine-tuning on text. Rows made for other trainings are named for what
they are, once per file, instead of failing deep in a format or training as if they were SFT:
preference pairs (``chosen``/``rejected``), KTO or unpaired-preference ``label`` rows, media
(``images``, ``videos``, ``audios``), stepwise supervision. Settings turn some of them into SFT
on purpose: ``data.use: chosen`` trains the chosen side, ``data.label_field`` keeps only the rows
labelled desirable, ``data.replace`` fills ``{{name}}`` placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lorakit.errors import DataError, DataRefusal, LabelledRows, PreferenceRows

MEDIA_FIELDS = ("images", "videos", "audios", "image", "video", "audio")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PREFERENCE_HINT = ("set train.method: dpo to train on the pairs, or data.use: chosen to train the chosen answers "
                   "as supervised data")


@dataclass(frozen=True)
class RowPolicy:
    use: str | None = None  # "chosen": train the chosen side of preference pairs
    label_field: str | None = None  # keep only rows whose field is true
    replace: Mapping[str, str] = field(default_factory=dict)
    pairs: bool = False  # train.method dpo: preference pairs are what is trained

    @classmethod
    def of(cls, data: Any, pairs: bool = False) -> RowPolicy:
        """The policy a DataSection asks for (``None``: the defaults)."""
        if data is None:
            return cls(pairs=pairs)
        return cls(data.use, data.label_field, dict(data.replace), pairs)

    def prepare(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The row to convert, or None when ``label_field`` leaves it out.

        Raises:
            DataRefusal: the row is not supervised text as it stands (said once per file).
            DataError: a label that is not true or false.
        """
        for key in MEDIA_FIELDS:
            if row.get(key):
                raise DataRefusal(f"rows have {key!r}: lorakit trains text models, so media cannot be trained "
                                  f"(the placeholders such as <image> would be trained as text); train on a copy "
                                  f"of the data without the {key!r} field, or without the rows that have it")
            row.pop(key, None)  # empty: nothing is lost
        if "chosen_messages" in row and "rejected_messages" in row and not self.pairs:  # LLaMA-Factory's newer rows
            row = {**row, "chosen": row.pop("chosen_messages"), "rejected": row.pop("rejected_messages")}
        if "chosen" in row and "rejected" in row and not self.pairs:
            row = self._chosen(row)
        if "completions" in row and "labels" in row:
            raise DataRefusal("rows are stepwise supervision (completions/labels), which trains a process "
                              "reward model; lorakit trains supervised fine-tuning")
        if self.label_field is not None and self.label_field in row:
            if not self._desirable(row):
                return None
        elif isinstance(row.get("label"), bool):
            raise LabelledRows("rows carry a KTO / unpaired-preference 'label' (true/false): lorakit trains "
                              "supervised fine-tuning; set data.label_field: label to train only on the rows "
                              "labelled true")
        return fill_placeholders(row, self.replace) if self.replace else row

    def _chosen(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.use != "chosen":
            raise PreferenceRows(f"rows are preference pairs (chosen/rejected): {PREFERENCE_HINT}")
        chosen = row.pop("chosen")
        row.pop("rejected")
        if "conversations" in row or "messages" in row:  # LLaMA-Factory: the answer follows the conversation
            key = "conversations" if "conversations" in row else "messages"
            answer = chosen if isinstance(chosen, list) else [chosen]
            return {**row, key: [*row[key], *answer]}
        if "instruction" in row:
            return {**row, "output": chosen}
        if "prompt" in row:  # TRL explicit prompt: strings or message lists on both sides
            return {**row, "completion": chosen}
        if isinstance(chosen, list):  # TRL implicit prompt: the chosen side is the whole conversation
            return {**row, "messages": chosen}
        raise DataError("preference row: cannot tell the prompt of the chosen answer; expected prompt, "
                        "instruction, conversations or messages beside chosen/rejected")

    def _desirable(self, row: dict[str, Any]) -> bool:
        name = self.label_field
        value = row.pop(name)  # type: ignore[arg-type]
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise DataError(f"data.label_field: {name!r} must be true or false in every row (got {value!r})")
        return value


def fill_placeholders(value: Any, replace: Mapping[str, str]) -> Any:
    """Every ``{{key}}`` of ``replace`` filled in, in every string of a row (other placeholders stay)."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: str(replace.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [fill_placeholders(v, replace) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, replace) for k, v in value.items()}
    return value


def placeholders(texts: list[str]) -> set[str]:
    """The ``{{name}}`` placeholders left in some texts."""
    return {name for text in texts for name in PLACEHOLDER.findall(text)}
