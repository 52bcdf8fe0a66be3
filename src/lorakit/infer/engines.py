"""Pick the engine that runs a model: transformers (a run or adapter folder) or llama.cpp (a run, a GGUF, or a
base GGUF with an adapter GGUF)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

from lorakit.errors import RunError


class Engine(str, Enum):
    """What runs a model for ``lorakit infer`` / ``eval`` (``--engine``)."""

    TRANSFORMERS = "transformers"  # a run or adapter folder, PyTorch on CPU or GPU
    LLAMA_CPP = "llama.cpp"  # a run's GGUF export, a GGUF, or a base GGUF with an adapter GGUF

    @classmethod
    def names(cls) -> list[str]:
        return [e.value for e in cls]


# Sequences per decode step when --batch-size is not given: the lane decoder's default for transformers;
# llama.cpp was measured at 32 (issue 19).
LLAMA_CPP_BATCH = 32


def default_batch_size(engine: str) -> int:
    from lorakit.infer.generate import GENERATE_LANES

    return LLAMA_CPP_BATCH if engine == Engine.LLAMA_CPP else GENERATE_LANES


def check_reference(ref: str, runs_dir: Path, engine: str, lora: Path | None) -> None:
    """Fail on a wrong model reference before any input is read or model loaded.

    Raises:
        RunError: no such run or file, a GGUF under transformers, or --lora without llama.cpp.
        ModelError: llama.cpp is not installed.
    """
    from lorakit.infer.load import adapter_folder, is_merged_folder

    if engine == Engine.LLAMA_CPP:
        from lorakit.infer.llamacpp import resolve_files
        from lorakit.infer.llamacpp_lib import require_llama_cpp

        require_llama_cpp("--engine llama.cpp")
        if ref.endswith(".gguf"):
            resolve_files(ref, lora, runs_dir)
            return
    elif ref.endswith(".gguf"):
        raise RunError(f"{ref}: a GGUF file runs with --engine llama.cpp")
    if lora is not None:
        raise RunError("--lora applies to a base GGUF under --engine llama.cpp")
    if not is_merged_folder(Path(ref)):
        adapter_folder(ref, runs_dir)
    elif engine == Engine.LLAMA_CPP:
        raise RunError(f"{ref}: a merged model folder runs with --engine transformers; for llama.cpp export the "
                       "run it came from with lorakit export --gguf")


def open_model(ref: str, runs_dir: Path, device: str, engine: str = Engine.TRANSFORMERS,
               lora: Path | None = None) -> Any:
    """A LoadedAdapter for ``ref`` on ``engine``."""
    if engine == Engine.LLAMA_CPP:
        from lorakit.infer.llamacpp import load_llamacpp

        return load_llamacpp(ref, runs_dir, lora)
    from lorakit.infer.load import load_adapter

    return load_adapter(ref, runs_dir, device)
