"""The shape of an adapter continued with ``lora.init_from``, taken from its adapter_config.json where no layer of
the config sets it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.errors import ConfigError
from lorakit.textfile import read_json

# lora keys -> adapter_config.json keys: the shape an adapter continued with lora.init_from keeps.
ADAPTER_SHAPE = {"r": "r", "alpha": "lora_alpha", "use_dora": "use_dora", "use_rslora": "use_rslora"}


def inherit_adapter_shape(raw: dict[str, Any], key_sources: dict[str, str]) -> None:
    """The lora keys of ``ADAPTER_SHAPE`` no layer set are taken from ``lora.init_from``'s adapter_config.json, as
    PEFT and LLaMA-Factory continue an adapter in its own shape (a key a layer set must still match it: checked
    when the run starts). Anything unreadable is left to that check to report."""
    lora = raw.get("lora")
    if not isinstance(lora, dict) or not isinstance(lora.get("init_from"), str):
        return
    path = Path(lora["init_from"]) / "adapter_config.json"
    try:
        saved = read_json(path, ConfigError, dict)
    except (ConfigError, OSError):
        return
    for ours, theirs in ADAPTER_SHAPE.items():
        if f"lora.{ours}" not in key_sources and theirs in saved:
            lora[ours] = saved[theirs]
            key_sources[f"lora.{ours}"] = str(path)
