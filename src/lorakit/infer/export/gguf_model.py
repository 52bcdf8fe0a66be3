"""Write a whole model (an adapter merged into its base, or the base alone) as one GGUF file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorakit.errors import ModelError
from lorakit.infer.export.arch import Architecture
from lorakit.infer.export.vocab import build_tokenizer, copy_tokenizer

QUANTS = ("f16", "q8_0", "q4_k_m")
Q8_BLOCK = 32  # values per Q8_0 block: a row whose length is not a multiple stays f16


@dataclass
class GgufMetadata:
    """What a GGUF says about where it came from, and how to prompt it as the run was trained."""

    name: str
    base_model: str
    chat_template: str | None
    tokenizer_dir: Path
    source_gguf: Path | None = None  # the base model's own GGUF, whose tokenizer fields are copied exactly
    extra: dict[str, str] = field(default_factory=dict)  # lorakit.* keys: run, prompt shape, base identity


def tensor_type(weight: np.ndarray, quant: str) -> Any:
    """GGML type for one tensor: norms and other vectors stay f32, matrices follow ``quant``."""
    import gguf

    if weight.ndim < 2:
        return gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and weight.shape[-1] % Q8_BLOCK == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def encode_tensor(weight: np.ndarray, kind: Any) -> np.ndarray:
    import gguf

    if kind == gguf.GGMLQuantizationType.F32:
        return weight.astype(np.float32)
    if kind == gguf.GGMLQuantizationType.F16:
        return weight.astype(np.float16)
    return gguf.quants.quantize(weight.astype(np.float32), kind)


def gguf_tensors(state: dict[str, Any], config: Any, arch: Architecture) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 array in llama.cpp's layout.

    Raises:
        ModelError: a weight with no llama.cpp name (the export would silently drop it).
    """
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name.upper()], int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out: dict[str, np.ndarray] = {}
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when there is no output tensor
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"GGUF export: no llama.cpp name for {hf_name}")
        out[name] = arch.transform(hf_name, tensor.detach().float().cpu().numpy(), config)
    return {**out, **arch.extra_tensors(config)}


def write_metadata(writer: Any, meta: GgufMetadata, general_type: str) -> None:
    from lorakit import __version__

    writer.add_type(general_type)
    writer.add_name(meta.name)
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, meta.base_model)
    writer.add_string("lorakit.version", __version__)
    for key, value in meta.extra.items():
        writer.add_string(f"lorakit.{key}", value)


def write_model_gguf(path: Path, state: dict[str, Any], config: Any, arch: Architecture, meta: GgufMetadata,
                     quant: str = "f16") -> Path:
    """``path``: hyper-parameters, tokenizer, chat template, metadata and every tensor; f16 or q8_0."""
    import gguf

    writer = gguf.GGUFWriter(path, arch.name)
    arch.write_hparams(writer, config)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_metadata(writer, meta, "model")
    vocab_size = int(config.vocab_size)
    if meta.source_gguf is None or not copy_tokenizer(writer, meta.source_gguf, vocab_size):
        build_tokenizer(writer, meta.tokenizer_dir)
    if meta.chat_template:
        writer.add_chat_template(meta.chat_template)
    for name, weight in gguf_tensors(state, config, arch).items():
        kind = tensor_type(weight, quant)
        writer.add_tensor(name, encode_tensor(weight, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_lorakit_fields(path: Path) -> dict[str, Any]:
    """The ``lorakit.*``, ``general.*`` and chat template fields of a GGUF written by lorakit (or any GGUF)."""
    from lorakit.infer.export.gguf_fields import read_fields

    wanted = ("lorakit.", "general.", "tokenizer.chat_template")
    fields = {key: field.value for key, field in read_fields(path, lambda key: key.startswith(wanted)).items()}
    if "lorakit.prompt_shape" in fields:
        fields["lorakit.prompt_shape"] = json.loads(fields["lorakit.prompt_shape"])
    return fields
