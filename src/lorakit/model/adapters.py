"""Attach a LoRA adapter (or continue one) with PEFT, and save it in plain PEFT format."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lorakit.config.schema import LoraSection
from lorakit.errors import ModelError

log = logging.getLogger(__name__)


def build_lora_config(section: LoraSection) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=section.target_modules,
        use_dora=section.use_dora,
        use_rslora=section.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_adapter(model: Any, section: LoraSection) -> Any:
    """Wrap the base model with a trainable adapter: fresh, or loaded from ``lora.init_from``.

    Raises:
        ModelError: the adapter to start from is missing or does not fit this base model.
    """
    from peft import PeftModel, get_peft_model

    if section.init_from is None:
        peft_model = get_peft_model(model, build_lora_config(section))
    else:
        source = Path(section.init_from)
        if not (source / "adapter_config.json").is_file():
            raise ModelError(f"lora.init_from: no adapter_config.json in {source}; "
                             "point it at a run folder or a PEFT adapter folder")
        saved = json.loads((source / "adapter_config.json").read_text())
        if saved.get("r") != section.r:
            raise ModelError(f"lora.init_from: {source} has rank {saved.get('r')} but lora.r is {section.r}; "
                             "set lora.r to match the adapter you continue from")
        try:
            peft_model = PeftModel.from_pretrained(model, str(source), is_trainable=True)
        except Exception as e:
            raise ModelError(f"lora.init_from: cannot load the adapter in {source} onto this base model: {e}") from e
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info("adapter: %.2fM trainable parameters (r=%d, alpha=%d)", trainable / 1e6, section.r, section.alpha)
    return peft_model
