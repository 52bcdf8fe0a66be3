"""Load the tokenizer and the base model as the config asks (dtype, device, 4-bit)."""

from __future__ import annotations

import logging
from typing import Any

from lorakit.config.schema import ModelSection
from lorakit.errors import ModelError
from lorakit.model.resolve import ResolvedModel

log = logging.getLogger(__name__)


def load_tokenizer(resolved: ResolvedModel, revision: str | None = None) -> Any:
    """The tokenizer, with a pad token that needs no new embedding row."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, revision=revision)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer of {resolved.path}: {e}") from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer of {resolved.path} has neither a pad nor an eos token; "
                             "lorakit will not resize the embeddings to add one")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pick_dtype(name: str, device_type: str) -> Any:
    """float32 on the CPU (no fast bf16 there); bf16 on GPUs that have it, else fp16."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device_type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_quantization(section: ModelSection) -> None:
    """NF4 needs CUDA and bitsandbytes; say so before any weights are read."""
    if section.quantization != "nf4":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ModelError("model.quantization=nf4 needs a CUDA GPU, and none is available; "
                         "set model.quantization: none to train in full precision")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("model.quantization=nf4 needs bitsandbytes: pip install bitsandbytes")


def load_base_model(resolved: ResolvedModel, section: ModelSection, device_type: str) -> Any:
    """The base causal LM, frozen, in the configured dtype (or NF4).

    Raises:
        ModelError: the weights cannot be loaded, or NF4 is asked for without CUDA/bitsandbytes.
    """
    from transformers import AutoModelForCausalLM

    from lorakit.model.attention import pick_attention

    check_quantization(section)
    dtype = pick_dtype(section.dtype, device_type)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": section.revision}
    if section.quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    except Exception as e:
        raise ModelError(f"cannot load the model {resolved.path}: {e}") from e
    if section.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.set_attn_implementation(pick_attention(model.config, device_type, dtype))
    model.requires_grad_(False)
    model.config.use_cache = False  # training never reuses a KV cache
    log.info("loaded %s (%s, %.0fM parameters)", resolved.identity.get("name"), str(dtype).removeprefix("torch."),
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def enable_checkpointing(model: Any) -> None:
    """Recompute each layer's activations in backward (non-reentrant: works with frozen inputs)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns there
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
