"""A conversation with an adapter (``lorakit chat``): each message wrapped as the run's training prompts were, the
answers kept as the conversation goes on, and the few commands a chat prompt takes (Ollama's words)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from lorakit.data.formats import Turn
from lorakit.infer.load import LoadedAdapter


class Command(str, Enum):
    """What a message that is a command asks for; a message that is none of them is said to the model."""

    END = "end"  # /bye, /exit, /quit (Ctrl+D too)
    CLEAR = "clear"  # /clear: start a new conversation
    HELP = "help"  # /? or /help


COMMANDS = {"/bye": Command.END, "/exit": Command.END, "/quit": Command.END, "/clear": Command.CLEAR,
            "/?": Command.HELP, "/help": Command.HELP}
HELP = "/clear starts a new conversation; /bye (or /exit, /quit, Ctrl+D) ends; anything else is said to the model"


def command_in(message: str) -> Command | None:
    """The command a message is, if it is one word of ``COMMANDS`` (a message that only starts with / is text)."""
    return COMMANDS.get(message.strip().lower())


@dataclass
class Conversation:
    adapter: LoadedAdapter
    max_new_tokens: int = 256
    temperature: float = 0.0
    history: list[Turn] = field(default_factory=list)

    def reply(self, message: str) -> str:
        """The adapter's answer to ``message``, after everything said so far."""
        from lorakit.infer.generate import generate_turns

        turns = self.adapter.shape.turns(message)  # the system prompt, if any, opens the conversation only
        asked = [*self.history, *(turns if not self.history else turns[-1:])]
        # history changes only once the answer is there: a reply stopped with Ctrl+C leaves no unanswered turn
        answer = generate_turns(self.adapter, [asked], max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature)[0]
        self.history = [*asked, Turn("assistant", answer, train=False)]
        return answer

    def clear(self) -> None:
        self.history = []
