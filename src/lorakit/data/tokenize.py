"""Turn a conversation into token ids and labels (-100 wherever the loss must not look).

The whole conversation is rendered once and tokenised once. The trained spans are found as
character ranges of that rendering (the text the template adds for an assistant turn: its
content and end-of-turn token, without the trailing newline), then mapped to tokens through the
tokenizer's offsets. Tokenising once means prompt and answer can never tokenise differently at
their border, which per-piece tokenisation gets wrong for many vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lorakit.data.formats import Turn
from lorakit.errors import DataError

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where not trained
    where: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class Encoder:
    """Render and tokenise turns the same way for training, checking and inference."""

    def __init__(self, tokenizer: Any, template: str, system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt

    def _messages(self, turns: Sequence[Turn]) -> list[dict[str, str]]:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        if self.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def render_prompt(self, turns: Sequence[Turn]) -> str:
        """The text a model is given at inference: the turns, then the assistant's opening."""
        if all(t.role == "text" for t in turns):
            return "".join(t.content for t in turns)
        return self.render(self._messages(turns), add_generation_prompt=True)

    def prompt_ids(self, turns: Sequence[Turn]) -> list[int]:
        """Token ids of the prompt for ``turns``, tokenised exactly as ``encode`` tokenises training rows."""
        raw = all(t.role == "text" for t in turns)
        return self._tokenize(self.render_prompt(turns), add_special_tokens=raw)[0]

    def encode(self, turns: Sequence[Turn]) -> tuple[list[int], list[int]]:
        """Token ids and labels for one conversation (no length limit applied).

        Raises:
            DataError: the chat template renders earlier turns differently once later ones follow,
                so the trained span cannot be located.
        """
        if all(t.role == "text" for t in turns):
            text, spans = self._raw_text(turns)
            ids, offsets = self._tokenize(text, add_special_tokens=True)
            trained = _mark(offsets, spans)
            eos = self.tokenizer.eos_token_id
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
                trained.append(turns[-1].train)  # the end token belongs to the last segment
        else:
            text, spans = self._chat_text(turns)
            ids, offsets = self._tokenize(text, add_special_tokens=False)
            trained = _mark(offsets, spans)
        labels = [i if t else IGNORE for i, t in zip(ids, trained, strict=True)]
        return ids, labels

    def _raw_text(self, turns: Sequence[Turn]) -> tuple[str, list[tuple[int, int]]]:
        text, spans = "", []
        for turn in turns:
            if turn.train:
                spans.append((len(text), len(text) + len(turn.content)))
            text += turn.content
        return text, spans

    def _chat_text(self, turns: Sequence[Turn]) -> tuple[str, list[tuple[int, int]]]:
        messages = self._messages(turns)
        offset = len(messages) - len(turns)  # a system prompt may have been inserted
        full = self.render(messages)
        spans = []
        for index, turn in enumerate(turns, offset):
            if not turn.train:
                continue
            before = self.render(messages[:index], add_generation_prompt=True)
            through = self.render(messages[: index + 1]).rstrip()
            if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
                raise DataError("the chat template renders earlier turns differently once later turns follow, "
                                "so the assistant span cannot be found; choose another data.template")
            spans.append((len(before), len(through)))
        return full, spans

    def _tokenize(self, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = self.tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _mark(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """A token is trained when its characters overlap a trained span."""
    return [any(start < span_end and end > span_start and end > start for span_start, span_end in spans)
            for start, end in offsets]
