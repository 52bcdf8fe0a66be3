"""What llama.cpp needs to know about each architecture: its hyper-parameters and how its tensors differ
from the Hugging Face layout.

Two differences matter, and each is the classic cause of an export that loads but answers wrongly:
- llama: llama.cpp rotates query/key pairs that sit next to each other, Hugging Face rotates the two
  halves of each head, so the rows of ``q_proj``/``k_proj`` (and of a LoRA ``B`` on them) are reordered;
- gemma3: Hugging Face's RMSNorm multiplies by ``1 + weight``, llama.cpp by ``weight``, so every norm
  weight is written plus one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lorakit.errors import ModelError

GEMMA3_SLIDING_PATTERN = 6  # llama.cpp's gemma3: five sliding-window layers, then one global


@dataclass(frozen=True)
class Architecture:
    name: str  # llama.cpp's architecture name
    write_hparams: Callable[[Any, Any], None]  # (GGUFWriter, HF config)
    transform: Callable[[str, np.ndarray, Any], np.ndarray]  # (HF tensor name, weight, HF config)
    extra_tensors: Callable[[Any], dict[str, np.ndarray]]  # tensors llama.cpp wants that HF computes


def rope_parameters(config: Any, layer_type: str | None = None) -> dict[str, Any]:
    params = dict(getattr(config, "rope_parameters", None) or {})
    if layer_type is not None and layer_type in params:
        params = dict(params[layer_type])
    return params


def head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def interleave_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a query/key projection reordered from half-split rotary pairs to adjacent ones."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _common_hparams(writer: Any, config: Any) -> None:
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))


def _llama_hparams(writer: Any, config: Any) -> None:
    import gguf

    _common_hparams(writer, config)
    dim = head_dim(config)
    writer.add_rope_dimension_count(dim)
    if dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(dim)
        writer.add_value_length(dim)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", "default")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind not in ("default", "llama3"):
        raise ModelError(f"rope scaling {kind!r} is not supported by the GGUF export yet (default, linear, llama3)")


def _llama_transform(name: str, weight: np.ndarray, config: Any) -> np.ndarray:
    if name.endswith("q_proj.weight"):
        return interleave_rope_rows(weight, config.num_attention_heads)
    if name.endswith("k_proj.weight"):
        return interleave_rope_rows(weight, config.num_key_value_heads)
    return weight


def llama3_rope_factors(config: Any) -> np.ndarray:
    """Llama 3.1+ stretches long rotary wavelengths; llama.cpp takes the per-frequency divisors as a tensor."""
    rope = rope_parameters(config)
    base, dim = float(rope.get("rope_theta", 10000.0)), head_dim(config)
    factor, low, high = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    original = float(rope["original_max_position_embeddings"])
    factors = []
    for i in range(0, dim, 2):
        wavelength = 2 * math.pi * base ** (i / dim)
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _llama_extra(config: Any) -> dict[str, np.ndarray]:
    if rope_parameters(config).get("rope_type") == "llama3":
        return {"rope_freqs.weight": llama3_rope_factors(config)}
    return {}


def _gemma3_hparams(writer: Any, config: Any) -> None:
    _common_hparams(writer, config)
    dim = head_dim(config)
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    writer.add_rope_freq_base(float(rope_parameters(config, "full_attention").get("rope_theta", 1_000_000.0)))
    writer.add_sliding_window(int(config.sliding_window))
    _check_gemma3(config, dim)


def _check_gemma3(config: Any, dim: int) -> None:
    """llama.cpp fixes some gemma3 choices that Hugging Face lets a config vary: refuse what it cannot load."""
    expected = ["full_attention" if (i + 1) % GEMMA3_SLIDING_PATTERN == 0 else "sliding_attention"
                for i in range(config.num_hidden_layers)]
    if list(getattr(config, "layer_types", expected)) != expected:
        raise ModelError("gemma3: llama.cpp expects every 6th layer to be global and the rest sliding-window; "
                         "this model's layer_types differ, so a GGUF would not answer as the adapter does")
    if int(getattr(config, "query_pre_attn_scalar", dim)) != dim:
        raise ModelError(f"gemma3: query_pre_attn_scalar {config.query_pre_attn_scalar} differs from head_dim "
                         f"{dim}, which llama.cpp assumes for this size")
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        raise ModelError("gemma3: logit soft-capping is not part of llama.cpp's gemma3; cannot export this config")
    if rope_parameters(config, "full_attention").get("rope_type", "default") != "default":
        raise ModelError("gemma3: rope scaling is not supported by the GGUF export yet")


def _gemma3_transform(name: str, weight: np.ndarray, config: Any) -> np.ndarray:
    return weight + 1 if name.endswith("norm.weight") else weight


ARCHITECTURES = {
    "llama": Architecture("llama", _llama_hparams, _llama_transform, _llama_extra),
    "gemma3_text": Architecture("gemma3", _gemma3_hparams, _gemma3_transform, lambda config: {}),
    "gemma3": Architecture("gemma3", _gemma3_hparams, _gemma3_transform, lambda config: {}),
}


def architecture(config: Any) -> Architecture:
    """The export rules for a Hugging Face config.

    Raises:
        ModelError: an architecture the GGUF export does not support.
    """
    kind = getattr(config, "model_type", "?")
    if kind not in ARCHITECTURES:
        raise ModelError(f"GGUF export: architecture {kind!r} is not supported; supported: llama (SmolLM2, "
                         f"TinyLlama, Llama 3.x) and gemma3 (Gemma-3 270M)")
    return ARCHITECTURES[kind]
