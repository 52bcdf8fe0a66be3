"""The shape of a run's prompts, so inference can ask the way training taught.

A run trained on ``{"prompt": "Convert this LaTeX math to Typst:\\n<tex>", ...}`` rows only
understands new input wrapped the same way. The shape is what every training prompt shares:
the system turn, and the text before and after the varying part of the last user turn (for
plain-text rows, of the prompt text). It is recorded in the manifest at training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lorakit.data.formats import Turn

SAMPLE = 200  # rows looked at: enough to find the shared wording, cheap on big sets
BOUNDARIES = "\n :"


@dataclass(frozen=True)
class PromptShape:
    chat: bool  # chat turns (rendered with the template) or plain text
    prefix: str = ""
    suffix: str = ""
    system: str | None = None

    def turns(self, text: str) -> list[Turn]:
        """The turns to render for a new input ``text``."""
        body = f"{self.prefix}{text}{self.suffix}"
        if not self.chat:
            return [Turn("text", body, train=False)]
        system = [Turn("system", self.system, train=False)] if self.system else []
        return [*system, Turn("user", body, train=False)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptShape:
        return cls(**data)


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    shared = first[:n]
    # Stop at a word boundary: inputs that happen to start alike ("\\frac...") are not wording.
    cut = max(shared.rfind(c) for c in BOUNDARIES) + 1
    return shared[:cut]


def _common_suffix(texts: list[str]) -> str:
    shared = _common_prefix([t[::-1] for t in texts])
    return shared[::-1]


def prompt_shape(conversations: Sequence[Any]) -> PromptShape:
    """What the prompts of ``conversations`` (``Conversation`` objects) have in common."""
    prompts: list[str] = []
    systems: set[str | None] = set()
    chat = True
    for conv in conversations[:SAMPLE]:
        first_trained = next((i for i, t in enumerate(conv.turns) if t.train), len(conv.turns))
        before = conv.turns[:first_trained]
        chat = any(t.role != "text" for t in conv.turns)
        users = [t for t in before if t.role in ("user", "text")]
        prompts.append(users[-1].content if users else "")
        systems.add(next((t.content for t in before if t.role == "system"), None))
    if not prompts:
        return PromptShape(chat=chat)
    prefix = _common_prefix(prompts) if len(prompts) > 1 else ""
    suffix = _common_suffix([p[len(prefix):] for p in prompts]) if len(prompts) > 1 else ""
    return PromptShape(chat=chat, prefix=prefix, suffix=suffix, system=systems.pop() if len(systems) == 1 else None)
