"""Chat templates: the tokenizer's own, or a named fallback for base models that ship none.

``auto`` picks the tokenizer's template when it has one. Otherwise it looks at the special
tokens the vocabulary already holds, because a base model's tokenizer usually carries those of
its instruction-tuned sibling (Gemma-3 base has ``<start_of_turn>``): using them means the
adapter speaks the same dialect as the official chat model. With none of those, ``plain`` is used:

    <bos>### System:
    {system}

    ### User:
    {user}

    ### Assistant:
    {assistant}<eos>
"""

from __future__ import annotations

from typing import Any

from lorakit.errors import DataError

# Tools, when a row has them, are described in the system text (Hermes style, as Qwen2.5 and many
# tool-calling datasets write them) and an assistant's calls follow its text as <tool_call> blocks.
# Without tools and calls every template renders exactly as before.
TOOLS = (
    "{% set ns.tools = '' %}"
    "{% if tools %}"
    "{% set ns.tools = 'You can call these tools. To call one, answer with <tool_call>{\"name\": ..., "
    "\"arguments\": {...}}</tool_call>.\\n<tools>' %}"
    "{% for tool in tools %}{% set ns.tools = ns.tools + '\\n' + (tool | tojson) %}{% endfor %}"
    "{% set ns.tools = ns.tools + '\\n</tools>' %}"
    "{% endif %}"
)
CALLS = (  # sets ns.content: the message text, then each of its tool calls
    "{% set ns.content = message['content'] %}"
    "{% for call in message['tool_calls'] or [] %}"
    "{% set fn = call['function'] if call['function'] is defined else call %}"
    "{% set ns.content = ns.content + ('\\n' if ns.content else '') + '<tool_call>\\n' + "
    "({'name': fn['name'], 'arguments': fn['arguments']} | tojson) + '\\n</tool_call>' %}"
    "{% endfor %}"
)

PLAIN = (
    "{{ bos_token }}"
    "{% set ns = namespace(tools='', content='') %}" + TOOLS +
    "{% if ns.tools and messages[0]['role'] != 'system' %}{{ '### System:\\n' + ns.tools + '\\n\\n' }}{% endif %}"
    "{% for message in messages %}" + CALLS +
    "{% if message['role'] == 'assistant' %}"
    "{{ '### Assistant:\\n' + ns.content + eos_token + '\\n\\n' }}"
    "{% else %}"
    "{% if loop.first and message['role'] == 'system' and ns.tools %}"
    "{% set ns.content = ns.content + '\\n\\n' + ns.tools %}{% endif %}"
    "{{ '### ' + message['role'] | capitalize + ':\\n' + ns.content + '\\n\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)

CHATML = (
    "{% set ns = namespace(tools='', content='') %}" + TOOLS +
    "{% if ns.tools and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n' + ns.tools + '<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}" + CALLS +
    "{% if loop.first and message['role'] == 'system' and ns.tools %}"
    "{% set ns.content = ns.content + '\\n\\n' + ns.tools %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + ns.content + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma has no system role: like Google's template, the system text opens the first user turn.
# Tool results are user turns, wrapped in <tool_response>.
GEMMA = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='', tools='', content='') %}" + TOOLS +
    "{% if ns.tools %}{% set ns.system = ns.tools + '\\n\\n' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' + ns.system %}"
    "{% else %}" + CALLS +
    "{% if message['role'] == 'tool' %}"
    "{% set ns.content = '<tool_response>\\n' + ns.content + '\\n</tool_response>' %}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' + (ns.system if role == 'user' else '') + ns.content"
    " + '<end_of_turn>\\n' }}"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

TEMPLATES = {"plain": PLAIN, "chatml": CHATML, "gemma": GEMMA}
# Special tokens that identify a dialect, checked in this order.
DIALECT_TOKENS = (("gemma", "<start_of_turn>"), ("chatml", "<|im_start|>"))


def resolve_template(name: str, tokenizer: Any) -> tuple[str, str]:
    """Choose the Jinja chat template for ``data.template``.

    Returns:
        (the template's name, its Jinja source); the name is ``tokenizer`` for the tokenizer's own.

    Raises:
        DataError: ``tokenizer`` was asked for but the tokenizer has no template, or the name is unknown.
    """
    own = getattr(tokenizer, "chat_template", None)
    if name == "tokenizer" or (name == "auto" and isinstance(own, str) and own):
        if not isinstance(own, str) or not own:
            raise DataError("data.template is 'tokenizer' but this tokenizer has no chat template; "
                            f"use one of {', '.join(TEMPLATES)} or auto")
        return "tokenizer", own
    if name == "auto":
        vocab = tokenizer.get_vocab()
        for dialect, token in DIALECT_TOKENS:
            if token in vocab:
                return dialect, TEMPLATES[dialect]
        return "plain", PLAIN
    if name not in TEMPLATES:
        raise DataError(f"unknown data.template {name!r}; choose auto, tokenizer, {', '.join(TEMPLATES)}")
    return name, TEMPLATES[name]
