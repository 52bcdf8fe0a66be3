"""An Ollama ``Modelfile`` that prompts the export the way the run was trained.

Ollama renders prompts with Go templates, not the Jinja of ``tokenizer.chat_template``, so the run's
dialect is written out again here; the run's prompt shape (the wording around every input) is part of
the user turn, so ``ollama run`` takes the bare input as ``lorakit infer`` does. A system text the run's prompts
carry without being given one (the run's ``data.system_prompt``, or the one a chat template writes by itself:
SmolLM2's, Qwen2.5's) is the Modelfile's ``SYSTEM``, which Ollama sends where the user sends none.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lorakit.data.prompt_shape import PromptShape

CHATML = (
    '{{- range .Messages }}<|im_start|>{{ .Role }}\n'
    '{{ if eq .Role "user" }}@PREFIX@{{ .Content }}@SUFFIX@{{ else }}{{ .Content }}{{ end }}<|im_end|>\n'
    '{{ end }}<|im_start|>assistant\n'
)
GEMMA = (  # no system role: the system text opens the next user turn, as in the run's template
    '{{- $system := "" }}{{- range .Messages }}'
    '{{- if eq .Role "system" }}{{ $system = printf "%s\\n\\n" .Content }}'
    '{{- else if eq .Role "user" }}<start_of_turn>user\n{{ $system }}@PREFIX@{{ .Content }}@SUFFIX@<end_of_turn>\n'
    '{{ $system = "" }}'
    '{{- else }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n{{ end }}'
    '{{- end }}<start_of_turn>model\n'
)
LLAMA3 = (
    '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
    '{{ if eq .Role "user" }}@PREFIX@{{ .Content }}@SUFFIX@{{ else }}{{ .Content }}{{ end }}<|eot_id|>'
    '{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n'
)
PLAIN = (  # no "{{-" after a turn: it would trim the blank line that ends the turn
    '{{- range .Messages }}'
    '{{ if eq .Role "assistant" }}### Assistant:\n{{ .Content }}@EOS@\n\n'
    '{{ else if eq .Role "system" }}### System:\n{{ .Content }}\n\n'
    '{{ else }}### User:\n@PREFIX@{{ .Content }}@SUFFIX@\n\n{{ end }}'
    '{{ end }}### Assistant:\n'
)
RAW = "@PREFIX@{{ .Prompt }}@SUFFIX@"  # a plain-text run: no turns at all
DIALECTS = {  # marker in the Jinja template -> (Go template, end-of-turn text)
    "<|im_start|>": (CHATML, "<|im_end|>"),
    "<start_of_turn>": (GEMMA, "<end_of_turn>"),
    "<|start_header_id|>": (LLAMA3, "<|eot_id|>"),
    "### Assistant:": (PLAIN, None),
}

SYSTEM_TURNS = {  # marker in the Jinja template -> its system turn as rendered, the text in group 1
    "<|im_start|>": re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", re.S),
    "<|start_header_id|>": re.compile(r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
}


def prompt_system(chat_template: str | None, given: str | None, rendered: str) -> str | None:
    """The system text of the run's prompts for a conversation that brings none: ``given`` (the run's own), else
    the one its chat template writes by itself, read from ``rendered`` (a one-turn prompt as the run renders it)."""
    if given:
        return given
    found = next((turn.search(rendered) for marker, turn in SYSTEM_TURNS.items() if marker in (chat_template or "")),
                 None)
    return found.group(1) if found else None


def go_literal(text: str) -> str:
    """``text`` as it must appear in a Go template: verbatim unless it holds a delimiter."""
    return text if "{{" not in text and "}}" not in text else "{{ " + json.dumps(text) + " }}"


def go_template(chat_template: str | None, shape: PromptShape, eos: str) -> tuple[str, str | None]:
    """(Ollama TEMPLATE, end-of-turn text); raw text when the run trained plain text.

    Raises:
        ValueError: a chat dialect this module does not know; the caller says so in one line.
    """
    if not shape.chat:
        template, stop = RAW, None
    else:
        found = next((d for marker, d in DIALECTS.items() if marker in (chat_template or "")), None)
        if found is None:
            raise ValueError("the run's chat template is none of chatml, gemma, llama3 or lorakit's plain one")
        template, stop = found
    filled = (template.replace("@PREFIX@", go_literal(shape.prefix)).replace("@SUFFIX@", go_literal(shape.suffix))
              .replace("@EOS@", go_literal(eos)))
    return filled, stop or eos


def beside(path: Path, where: Path) -> str:
    """``path`` relative to the Modelfile's folder (Ollama resolves it from there)."""
    relative = os.path.relpath(path.resolve(), where.resolve())
    return relative if relative.startswith("..") else f"./{relative}"


def modelfile_text(model: Path, adapter: Path | None, chat_template: str | None, shape: PromptShape,
                   eos: str, where: Path, system: str | None = None) -> str:
    """The Modelfile: FROM the merged file (or the base, with ADAPTER), TEMPLATE, SYSTEM (``system``, else the
    prompt shape's), stop."""
    template, stop = go_template(chat_template, shape, eos)
    lines = [f"FROM {beside(model, where)}"]
    if adapter is not None:
        lines.append(f"ADAPTER {beside(adapter, where)}")
    lines.append(f'TEMPLATE """{template}"""')
    if system or shape.system:
        lines.append(f'SYSTEM """{system or shape.system}"""')
    lines.append(f"PARAMETER stop {json.dumps(stop)}")
    lines.append("PARAMETER temperature 0")  # greedy, as lorakit infer and eval decode
    return "\n".join(lines) + "\n"
