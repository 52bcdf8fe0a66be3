"""Merge an adapter into its base model and write a plain Hugging Face model folder."""

from __future__ import annotations

import logging
from pathlib import Path

from lorakit.errors import RunError

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def export_merged(ref: str, out: Path, dtype: str = "float32", runs_dir: Path = Path("runs")) -> Path:
    """``out`` holds the merged model (safetensors) and the tokenizer, loadable with from_pretrained.

    Raises:
        RunError: ``out`` exists and is not empty, or no such run.
    """
    import torch

    from lorakit.infer.load import load_adapter

    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} exists and is not empty; choose a new folder")
    adapter = load_adapter(ref, runs_dir, device="cpu")
    merged = adapter.model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    adapter.tokenizer.save_pretrained(out)
    log.info("merged %s into its base model: %s (%s)", adapter.name, out, dtype)
    return out
