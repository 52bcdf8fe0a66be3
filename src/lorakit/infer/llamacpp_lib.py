"""Reaching llama-cpp-python: the module (or the install line when it is missing), its quantiser, a model."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from lorakit.errors import ModelError

INSTALL = "pip install 'lorakit[llamacpp]'  (builds llama.cpp with cmake and a C++ compiler: a few minutes)"
QUANT_FTYPES = {"q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M


def has_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def require_llama_cpp(what: str) -> Any:
    """The llama_cpp module.

    Raises:
        ModelError: it is not installed; the message has the install line.
    """
    try:
        import llama_cpp
    except ImportError:
        raise ModelError(f"{what} needs llama-cpp-python, which is not installed: {INSTALL}") from None
    return llama_cpp


def quantize(source: Path, target: Path, quant: str) -> None:
    """``target``: ``source`` (an f16 GGUF) requantised by llama.cpp's own quantiser."""
    llama_cpp = require_llama_cpp(f"--quant {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise ModelError(f"llama.cpp could not quantise {source.name} to {quant}")


def open_gguf(model: Path, lora: Path | None = None, context: int = 2048, logits_all: bool = False) -> Any:
    """A llama_cpp.Llama on ``model`` (with the adapter GGUF ``lora`` applied), quiet, on every core."""
    llama_cpp = require_llama_cpp("--engine llama.cpp")
    return llama_cpp.Llama(model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=context,
                           n_batch=min(512, context), n_threads=os.cpu_count(), logits_all=logits_all,
                           verbose=False)


