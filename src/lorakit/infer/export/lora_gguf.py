"""A LoRA adapter as llama.cpp's adapter GGUF: applied at load time on the base model's GGUF."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from lorakit.errors import ModelError
from lorakit.infer.export.arch import Architecture
from lorakit.infer.export.gguf_model import GgufMetadata, write_metadata

_LAYER = re.compile(r"(?:^|\.)(model\.layers\.\d+\..+)$")


def lora_pairs(peft_model: Any) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """{Hugging Face weight name: (A, B)} and the alpha llama.cpp needs (its scale is alpha / rank).

    Raises:
        ModelError: an adapter llama.cpp cannot apply (DoRA, LoRA on embeddings or the head, mixed scales).
    """
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    alphas: set[float] = set()
    for module_name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        if getattr(module, "use_dora", {}).get("default"):
            raise ModelError("GGUF adapter export: DoRA adapters cannot be applied by llama.cpp; "
                             "export merged (without --adapter-only)")
        match = _LAYER.search(module_name)
        if match is None:
            raise ModelError(f"GGUF adapter export: LoRA on {module_name.split('.')[-1]} is outside the "
                             f"transformer layers; export merged (without --adapter-only)")
        a = module.lora_A["default"].weight.detach().float().cpu().numpy()
        b = module.lora_B["default"].weight.detach().float().cpu().numpy()
        pairs[f"{match.group(1)}.weight"] = (a, b)
        alphas.add(round(float(module.scaling["default"]) * a.shape[0], 6))
    if not pairs:
        raise ModelError("GGUF adapter export: the adapter has no LoRA layers")
    if len(alphas) > 1:
        raise ModelError("GGUF adapter export: layers use different LoRA scales (rank_pattern/alpha_pattern); "
                         "llama.cpp applies one alpha to all; export merged instead")
    return pairs, alphas.pop()


def write_adapter_gguf(path: Path, peft_model: Any, config: Any, arch: Architecture, meta: GgufMetadata) -> Path:
    """``path``: every LoRA pair as ``<tensor>.lora_a``/``.lora_b`` in float32, with ``adapter.lora.alpha``."""
    import gguf

    pairs, alpha = lora_pairs(peft_model)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name.upper()], int(config.num_hidden_layers))
    writer = gguf.GGUFWriter(path, arch.name)
    write_metadata(writer, meta, "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for hf_name, (a, b) in pairs.items():
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise ModelError(f"GGUF adapter export: no llama.cpp name for {hf_name}")
        # The row order llama.cpp wants for a weight is the row order of B (W + B @ A).
        writer.add_tensor(f"{name}.lora_a", a.astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", arch.transform(hf_name, b, config).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
