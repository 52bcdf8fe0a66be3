"""Run names from ``output.name`` templates: ``{data}-{variant}-s{steps}`` and friends.

sd-scripts users name their runs after the dataset, the variant and the step count; a template
keeps that habit without editing the name by hand for every run.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from lorakit.config.schema import RunConfig
from lorakit.errors import ConfigError

PLACEHOLDERS = ("model", "data", "variant", "steps", "date")
_FIELD = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def model_label(name_or_path: str) -> str:
    """``google/gemma-3-270m`` -> ``gemma-3-270m``; ``/m/SmolLM2.gguf`` -> ``SmolLM2``."""
    last = Path(name_or_path.rstrip("/")).name
    return last[: -len(".gguf")] if last.lower().endswith(".gguf") else last


def steps_label(config: RunConfig) -> str:
    """train.max_steps when set; otherwise the epochs, as ``2ep`` (the step count needs the data)."""
    train = config.train
    return str(train.max_steps) if train.max_steps else f"{train.epochs:g}ep"


def data_label(ref: str) -> str:
    """``train`` for data/train.jsonl; the first dataset's name for a registry's ``dataset_info.json#identity,...``."""
    path, _, names = ref.partition("#")
    return names.split(",")[0].strip() or Path(path).stem if names else Path(path).stem


def expand_run_name(template: str, config: RunConfig, overlay_stems: list[str], today: date | None = None) -> str:
    """Fill the placeholders of ``template``; overlay stems are appended unless ``{variant}`` places them.

    Raises:
        ConfigError: an unknown placeholder.
    """
    values = {
        "model": model_label(config.model.name_or_path),
        "data": data_label(config.data.train[0]) if config.data.train else "data",
        "variant": "-".join(overlay_stems) or "base",
        "steps": steps_label(config),
        "date": (today or date.today()).strftime("%Y%m%d"),
    }
    unknown = [f for f in _FIELD.findall(template) if f not in values]
    if unknown:
        raise ConfigError(f"output.name: unknown placeholder {{{unknown[0]}}} in {template!r}; "
                          f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    name = _FIELD.sub(lambda m: _UNSAFE.sub("-", values[m.group(1)]), template)
    if "{variant}" in template:
        return name
    return "-".join([name, *overlay_stems])
