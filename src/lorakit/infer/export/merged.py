"""Merge an adapter into its base model and write a plain Hugging Face model folder."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from lorakit.atomic import check_writable, make_shared, save_shared, write_json_atomic
from lorakit.disk import disk_full_error
from lorakit.errors import RunError
from lorakit.model.tokenizer_files import save_tokenizer

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def export_merged(ref: str, out: Path, dtype: str = "float32", runs_dir: Path = Path("runs")) -> Path:
    """``out`` holds the merged model (safetensors) and the tokenizer, loadable with from_pretrained, and how the
    run wrapped its prompts (``lorakit.json``), so ``lorakit infer``, ``eval`` and ``chat`` ask it as the run.

    Raises:
        RunError: ``out`` is a file or a folder that is not empty, or no such run.
    """
    import torch

    from lorakit.infer.load import PROMPTING_FILE, load_adapter, prompting_record

    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; give a new folder for the merged model")
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out {out} exists and is not empty; choose a new folder")
    check_writable(out, f"--out {out}", "choose another folder")
    adapter = load_adapter(ref, runs_dir, device="cpu")
    merged = adapter.model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside ``out`` and renamed into place: a failed export leaves no half-written model.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        save_shared(merged, staging, safe_serialization=True)
        if adapter.encoder.template:  # the template the run trained with, for from_pretrained's users too
            adapter.tokenizer.chat_template = adapter.encoder.template
        save_tokenizer(adapter.tokenizer, staging)
        write_json_atomic(staging / PROMPTING_FILE, prompting_record(adapter))
        make_shared(staging)  # mkdtemp's folder is private; a model folder is meant to be shared
        if out.is_dir():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, Exception) and (full := disk_full_error(e, out)):
            raise full from e
        raise
    log.info("merged %s into its base model: %s (%s)", adapter.name, out, dtype)
    return out
