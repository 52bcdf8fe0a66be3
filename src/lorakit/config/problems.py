"""What is wrong with a config, said for people: each problem on one line with the layer that set its key, an
unknown key with the name the user probably meant (a typo, a peer trainer's name, another section's key), a peer
trainer's whole config pointed at ``lorakit config import``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from lorakit.config.peers import hint as peer_hint
from lorakit.config.peers import looks_like
from lorakit.config.peers.keys import aliases
from lorakit.config.schema import RunConfig
from lorakit.errors import ConfigError

# A key as a message names it: train.keep, data.val_size, train.early_stopping.metric.
CONFIG_KEY = re.compile(r"\b(?:model|lora|data|train|dpo|output|tracking|launch)(?:\.[a-z_]+)+")

# Names users bring from TRL, PEFT and LLaMA-Factory configs, and what lorakit calls them.
# A key's other names -> lorakit's field name: the peers' (from the one table) and two generic ones.
ALIASES = {**aliases(), "rank": "r", "batch_size": "micro_batch_size"}


def _suggest(loc: Sequence[str]) -> str | None:
    """The key the user probably meant: a peer trainer's name for it, the same section's, or another section's."""
    if peer_hint(loc[-1]):
        return None  # said with the peer's hint instead
    if len(loc) == 1 and (other := _other_section(loc[0])):
        return other
    section: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        annotation = section.model_fields[part].annotation if part in section.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        section = annotation
    names = list(section.model_fields)
    typo = loc[-1]
    if ALIASES.get(typo) in names:
        return ALIASES[typo]
    guess = difflib.get_close_matches(typo, names, n=1, cutoff=0.6)
    return guess[0] if guess else None


def _other_section(key: str) -> str | None:
    """``lora.r`` for a top-level ``r`` (or ``rank``): the section a stray key belongs to."""
    name = ALIASES.get(key, key)
    for section_name, info in RunConfig.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name in annotation.model_fields:
            return f"{section_name}.{name}"
    return None


def _unknown_key_message(loc: Sequence[str]) -> str:
    said = peer_hint(loc[-1])
    if said:
        return f"unknown key, {said}"
    guess = _suggest(loc)
    return "unknown key" + (f", did you mean {guess!r}?" if guess else "")


def refuse_peer_config(raw: dict[str, Any], key_sources: dict[str, str]) -> None:
    """A whole LLaMA-Factory or axolotl file given to lorakit: one line pointing at the import.

    Raises:
        ConfigError: the top-level keys are a peer trainer's flat config.
    """
    unknown = [key for key in raw if key not in RunConfig.model_fields]
    peer = looks_like(unknown)
    if peer is None:
        return
    origin = _source_of(unknown[0], key_sources)
    name = {"llamafactory": "LLaMA-Factory", "axolotl": "axolotl"}[peer]
    raise ConfigError(f"{origin}: this looks like a {name} config (flat keys such as {', '.join(unknown[:3])}); "
                      f"lorakit's config is nested in sections (model, lora, data, train); try: lorakit config "
                      f"import {origin} --from {peer}")


def _source_of(dotted: str, key_sources: dict[str, str]) -> str:
    """The layer that set ``dotted``, one of its parents, or (for a whole section) the first of its keys."""
    probe = dotted
    while probe:
        if probe in key_sources:
            return key_sources[probe]
        probe = probe.rpartition(".")[0]
    below = [source for key, source in key_sources.items() if key.startswith(f"{dotted}.")]
    return below[0] if below else "defaults"


def problem_list(header: str, problems: Sequence[str]) -> str:
    """One problem on one line (``header: problem``); several listed below the header, one a line."""
    if len(problems) == 1:
        return f"{header}: {problems[0]}"
    return "\n".join([f"{header}:", *(f"  {p}" for p in problems)])


def config_problem(err: Any) -> tuple[list[str], str]:
    """One pydantic error of a run config: the key's parts (list positions left out) and the message, without
    pydantic's "Value error, " before the words of lorakit's own checks. A rule between keys (a section's own
    check, whose input is the whole section) has no one key: its parts are empty and its words name the keys."""
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and isinstance(err["input"], dict):
        return [], message
    return [str(p) for p in err["loc"] if not isinstance(p, int)], message


def _rule_problem(message: str, key_sources: dict[str, str]) -> str:
    """A rule between keys (keep: best and no validation data): its message, then where the keys it names were
    set."""
    origins = {key: _source_of(key, key_sources) for key in CONFIG_KEY.findall(message)}
    set_by = [f"{key} from {origin}" for key, origin in origins.items() if origin != "defaults"]
    return message + (f" [{'; '.join(set_by)}]" if set_by else "")


def validate(raw: dict[str, Any], key_sources: dict[str, str], sources: Sequence[str]) -> RunConfig:
    """Validate a merged config dict; on failure list every problem at once, with its origin."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc, msg = config_problem(err)
            key = ".".join(loc) or "<top level>"
            origin = _source_of(key, key_sources)
            if err["type"] == "extra_forbidden":
                msg = _unknown_key_message(loc)
            elif err["type"] == "missing":
                msg = "required key is missing"
                origin = "not set in any layer"
            elif not loc:  # a rule across keys: its words name them, not the whole section
                lines.append(_rule_problem(msg, key_sources))
                continue
            elif "(got " not in msg:  # a validator of ours names what it got already
                msg += f" (got {err['input']!r})"
            lines.append(f"{key}: {msg} [{origin}]")
        raise ConfigError(problem_list(f"invalid config (merged from {', '.join(sources) or 'defaults'})", lines)) \
            from None
