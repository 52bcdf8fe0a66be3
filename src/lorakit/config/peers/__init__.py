"""Configs from other trainers: recognise them, point at lorakit's keys, import them.

LLaMA-Factory and axolotl write one flat list of keys; lorakit's config is nested in sections.
``HINTS`` (from ``peers.keys``, the one table of peers' keys) names, for the peer keys people carry over
by hand, the lorakit key and how to write the value; ``looks_like`` tells a whole flat peer config from a few
stray keys, so ``lorakit train`` can say "try: lorakit config import" instead of listing thirty unknown keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from lorakit.config.peers.keys import hints

# A peer's key -> (lorakit's key, how to write the value there; "" when it is the same): from the one table.
HINTS: dict[str, tuple[str, str]] = hints()

LLAMAFACTORY_MARKERS = {"model_name_or_path", "stage", "finetuning_type", "lora_target", "dataset", "cutoff_len",
                        "do_train", "lora_rank", "template", "dataset_dir"}
AXOLOTL_MARKERS = {"base_model", "datasets", "adapter", "sequence_len", "lora_target_linear", "num_epochs",
                   "sample_packing", "micro_batch_size", "val_set_size", "lora_r"}


def looks_like(keys: Iterable[str]) -> str | None:
    """``llamafactory`` or ``axolotl`` when top-level keys are a flat config of that trainer, else None."""
    keys = set(keys)
    scores = {"llamafactory": len(keys & LLAMAFACTORY_MARKERS), "axolotl": len(keys & AXOLOTL_MARKERS)}
    best = max(scores, key=lambda name: scores[name])
    return best if scores[best] >= 3 else None


def hint(key: str) -> str | None:
    """``did you mean 'lora.r'?`` and how to write the value, for a key a peer trainer uses; or why lorakit
    needs no such key."""
    if key in HINTS:
        target, how = HINTS[key]
        return f"did you mean {target!r}?" + (f" ({how})" if how else "")
    from lorakit.config.peers import axolotl, llamafactory

    for name, module in (("LLaMA-Factory", llamafactory), ("axolotl", axolotl)):
        if key in module.DROPPED:
            return f"a {name} key lorakit does not need: {module.DROPPED[key]}"
    return None
