"""Optional torch.compile of the hot, shape-stable part of the decoder: the MLP of every layer.

Attention is left eager: the per-example attention loops over a batch's example borders, which
change every step and would make a compiled graph recompile on every batch. The MLPs (with their
LoRA adapters) only see a varying token count, which ``dynamic=True`` absorbs.
"""

from __future__ import annotations

from typing import Any


def compile_mlps(model: Any) -> int:
    """Compile each decoder layer's ``mlp`` in place; returns how many were compiled."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    count = 0
    for layer in getattr(lm.get_decoder(), "layers", []):
        if hasattr(layer, "mlp"):
            layer.mlp.compile(dynamic=True)
            count += 1
    return count
