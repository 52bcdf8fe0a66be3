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
from functools import cached_property
from typing import Any

from lorakit.data.messages import REASONING, Turn
from lorakit.errors import DataError, DataRefusal

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

    def truncated(self, max_length: int) -> Example:
        return Example(self.input_ids[:max_length], self.labels[:max_length], self.where)


def untrained_common_start(examples: Sequence[Example]) -> int:
    """How many leading tokens all of ``examples`` share with none of them trained."""
    first, others = examples[0], examples[1:]
    for j, token in enumerate(first.input_ids):
        if first.labels[j] != IGNORE or any(len(e) <= j or e.input_ids[j] != token or e.labels[j] != IGNORE
                                            for e in others):
            return j
    return len(first)


@dataclass(frozen=True)
class Pair:
    """A preference pair (``train.method: dpo``): the prompt with the chosen answer and with the rejected one,
    each labelled on its answer only. The two always travel together: one item of a row, one after the other.
    ``reference`` holds the reference model's log-probabilities of the two answers once they are measured."""

    chosen: Example
    rejected: Example
    where: str = ""
    reference: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)

    @property
    def num_trained(self) -> int:
        return min(self.chosen.num_trained, self.rejected.num_trained)  # a side with nothing to score: no pair

    @cached_property  # read by every collate of the pair's micro-batch: computed once
    def shared_prompt(self) -> int:
        """Leading tokens both sides share and neither trains, less the last of them (each side keeps it to
        predict its own first answer token): what a batch can compute once for both. 0: nothing to share."""
        return max(0, untrained_common_start([self.chosen, self.rejected]) - 1)

    @property
    def longest(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    def truncated(self, max_length: int) -> Pair:
        """Each side cut to ``max_length`` tokens (TRL's max_length applies to each sequence)."""
        return Pair(self.chosen.truncated(max_length), self.rejected.truncated(max_length), self.where,
                    self.reference)


class Encoder:
    """Render and tokenise turns the same way for training, checking and inference."""

    def __init__(self, tokenizer: Any, template: str, system_prompt: str | None = None,
                 template_name: str = "tokenizer") -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.template_name = template_name
        self._tools_checked: set[str] = set()

    def _messages(self, turns: Sequence[Turn]) -> list[dict[str, Any]]:
        messages = [t.message() for t in turns]
        if self.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
               tools: list[dict[str, Any]] | None = None) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt,
            tools=tools,
        )

    def render_prompt(self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None = None) -> str:
        """The text a model is given at inference: the turns, then the assistant's opening."""
        if all(t.role == "text" for t in turns):
            return "".join(t.content for t in turns)
        return self.render(self._messages(turns), add_generation_prompt=True, tools=tools)

    def prompt_ids(self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the prompt for ``turns``, tokenised exactly as ``encode`` tokenises training rows."""
        raw = all(t.role == "text" for t in turns)
        return self._tokenize(self.render_prompt(turns, tools), add_special_tokens=raw)[0]

    def encode(self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None = None) -> tuple[list[int], list[int]]:
        """Token ids and labels for one conversation (no length limit applied).

        Raises:
            DataError: the chat template renders earlier turns differently once later ones follow,
                so the trained span cannot be located.
            DataRefusal: the conversation uses tools and the chat template cannot render them.
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
            self._check_tools(turns, tools)
            self._check_reasoning(turns)
            text, spans = self._chat_text(turns, tools)
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

    def _chat_text(self, turns: Sequence[Turn],
                   tools: list[dict[str, Any]] | None) -> tuple[str, list[tuple[int, int]]]:
        messages = self._messages(turns)
        offset = len(messages) - len(turns)  # a system prompt may have been inserted
        full = self.render(messages, tools=tools)
        spans = []
        for index, turn in enumerate(turns, offset):
            if not turn.train:
                continue
            before = self.render(messages[:index], add_generation_prompt=True, tools=tools)
            through = self.render(messages[: index + 1], tools=tools).rstrip()
            if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
                raise DataError("the chat template renders earlier turns differently once later turns follow, "
                                "so the assistant span cannot be found; choose another data.template")
            spans.append((len(before), len(through)))
        return full, spans

    def _check_tools(self, turns: Sequence[Turn], tools: list[dict[str, Any]] | None) -> None:
        """Refuse, once, tool-calling data the template would drop without a word."""
        needed = {"tool definitions": bool(tools), "tool calls": any(t.tool_calls for t in turns),
                  "tool results": any(t.role == "tool" for t in turns)}
        needed_now = {what for what, used in needed.items() if used} - self._tools_checked
        if not needed_now:
            return
        try:
            probe = self.render([t.message() for t in PROBE_TURNS], tools=[PROBE_TOOL])
        except Exception as e:  # templates raise their own errors for roles they do not know
            probe = f"(fails: {str(e)[:80]})"
        missing = sorted(what for what in needed_now if PROBE_MARKERS[what] not in probe)
        if missing:
            raise DataRefusal(
                f"the chat template ({self.template_name}) does not render {' or '.join(missing)}, so these "
                "tool-calling rows cannot be trained as written; set data.template: chatml, gemma or plain "
                "(lorakit's own templates render tools) or use a model whose chat template supports tools")
        self._tools_checked |= needed_now

    def _check_reasoning(self, turns: Sequence[Turn]) -> None:
        """Refuse, once, reasoning parts the template would drop without a word (it has no thinking block)."""
        if "reasoning" in self._tools_checked or not any(key == REASONING for t in turns for key, _ in t.extra):
            return
        probe = [{"role": "user", "content": "probe question"},
                 {"role": "assistant", "content": "probe answer", REASONING: "probe-reasoning"}]
        try:
            rendered = self.render(probe)
        except Exception as e:  # templates raise their own errors for what they do not know
            rendered = f"(fails: {str(e)[:80]})"
        if "probe-reasoning" not in rendered:
            raise DataRefusal(
                f"the chat template ({self.template_name}) has no thinking block, so assistant turns with "
                "reasoning parts cannot be trained as written; use a model whose chat template renders "
                "reasoning_content (Qwen3, DeepSeek-R1 and others), or train on a copy without the reasoning parts")
        self._tools_checked.add("reasoning")

    def _tokenize(self, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = self.tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


PROBE_TOOL = {"type": "function", "function": {"name": "probe_lookup", "description": "probe-tool-description",
                                              "parameters": {"type": "object", "properties": {}}}}
PROBE_TURNS = (
    Turn("user", "probe question", False),
    Turn("assistant", "", True, tool_calls=({"type": "function", "function": {
        "name": "probe_lookup", "arguments": {"query": "probe-call-argument"}}},)),
    Turn("tool", "probe-tool-result", False),
    Turn("assistant", "probe answer", True),
)
PROBE_MARKERS = {"tool definitions": "probe-tool-description", "tool calls": "probe-call-argument",
                 "tool results": "probe-tool-result"}


def _mark(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """A token is trained when its characters overlap a trained span."""
    return [any(start < span_end and end > span_start and end > start for span_start, span_end in spans)
            for start, end in offsets]
