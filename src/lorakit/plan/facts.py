"""What a model costs in memory, read from its config without loading its weights.

Parameter counts come from the model built on the ``meta`` device (shapes only, no storage),
with the adapter attached by PEFT, so tied embeddings and PEFT's target-module rules count
exactly as they will in training. Activations come from a probe: the same architecture cut
down to one and two decoder layers and a tiny vocabulary, randomly initialised on the CPU, runs
one forward of lorakit's real loss path while every tensor autograd saves for backward is
counted. The difference between the two probes is one layer's cost per token; what is left is
the cost outside the layers. The probe runs the real attention, norms and adapter code, so it
needs no per-architecture formula.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from lorakit.config.schema import LoraSection, ModelSection
from lorakit.errors import ModelError
from lorakit.model.resolve import ResolvedModel

log = logging.getLogger(__name__)

PROBE_VOCAB = 1024
PROBE_MAX_EXAMPLE = 1024  # longer examples are probed at this length (attention here is linear in length)


@dataclass(frozen=True)
class ActivationCost:
    """Bytes kept for backward per token, in float32: per decoder layer, and outside the layers."""

    per_layer: float
    outside: float


@dataclass(frozen=True)
class ModelFacts:
    """The numbers the memory estimate needs, for one model and adapter shape."""

    name: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    logit_softcap: bool
    base_params: int  # unique parameters (tied weights once)
    linear_params: int  # in the decoder's linear layers: what 4-bit quantization shrinks
    adapter_params: int
    max_position: int  # longest sequence the model supports
    activations: ActivationCost  # without gradient checkpointing
    checkpointed: ActivationCost  # with it: what stays between layers


def load_model_config(section: ModelSection) -> Any:
    """The model's transformers config, without converting a GGUF or reading any weights.

    Raises:
        ModelError: the model cannot be found, or its config cannot be read.
    """
    from lorakit.model.resolve import resolve_model

    return read_model_config(resolve_model(section.name_or_path, section.revision, convert=False), section.revision)


def read_model_config(resolved: ResolvedModel, revision: str | None = None) -> Any:
    """The (text) config of an already resolved model.

    Raises:
        ModelError: the config cannot be read.
    """
    from transformers import AutoConfig

    if resolved.gguf_file:
        log.info("reading the config of %s from the GGUF (it is not converted yet: about 20 s)", resolved.gguf_file)
    try:
        config = AutoConfig.from_pretrained(resolved.path, revision=revision, gguf_file=resolved.gguf_file)
    except Exception as e:
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot read the config of {resolved.identity.get('name')}: {first_line}") from e
    return config.get_text_config()


def measure_facts(config: Any, lora: LoraSection, max_length: int, name: str = "") -> ModelFacts:
    """Count parameters on the meta device and probe the activations of a cut-down copy."""
    adapters_log = logging.getLogger("lorakit.model.adapters")
    level = adapters_log.level
    adapters_log.setLevel(logging.WARNING)  # five adapters are attached here; none is the run's
    try:
        return _measure(config, lora, max_length, name)
    finally:
        adapters_log.setLevel(level)


def _measure(config: Any, lora: LoraSection, max_length: int, name: str) -> ModelFacts:
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    from lorakit.model.adapters import attach_adapter

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.requires_grad_(False)
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not head)
    base = sum(p.numel() for p in model.parameters())
    lora = lora.model_copy(update={"init_from": None})  # same shape; nothing to read from disk
    adapter = sum(p.numel() for p in attach_adapter(model, lora).parameters() if p.requires_grad)
    example = min(max_length, PROBE_MAX_EXAMPLE)
    return ModelFacts(
        name=name or getattr(config, "_name_or_path", "") or config.model_type,
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        logit_softcap=bool(getattr(config, "final_logit_softcapping", None)),
        base_params=base,
        linear_params=linear,
        adapter_params=adapter,
        max_position=getattr(config, "max_position_embeddings", None) or 1 << 20,
        activations=_probe(config, lora, example, checkpointing=False),
        checkpointed=_probe(config, lora, example, checkpointing=True),
    )


def _probe(config: Any, lora: LoraSection, example_length: int, checkpointing: bool) -> ActivationCost:
    one, tokens = _saved_bytes(config, lora, 1, example_length, checkpointing)
    two, _ = _saved_bytes(config, lora, 2, example_length, checkpointing)
    per_layer = (two - one) / tokens
    return ActivationCost(per_layer=per_layer, outside=max(0.0, one / tokens - per_layer))


def _cut_down(config: Any, layers: int) -> Any:
    """The same architecture with ``layers`` decoder layers and a tiny vocabulary."""
    small = copy.deepcopy(config)
    small.num_hidden_layers = layers
    if getattr(small, "layer_types", None):
        small.layer_types = list(small.layer_types[:layers])
    small.vocab_size = PROBE_VOCAB
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if hasattr(small, key):
            setattr(small, key, 0)
    return small


def _saved_bytes(config: Any, lora: LoraSection, layers: int, example_length: int,
                 checkpointing: bool) -> tuple[int, int]:
    """Bytes autograd keeps for backward in one forward of two examples, and the token count."""
    import torch
    from transformers import AutoModelForCausalLM

    from lorakit.data.packing import collate
    from lorakit.data.tokenize import Example
    from lorakit.model.adapters import attach_adapter
    from lorakit.model.attention import pick_attention
    from lorakit.model.load import enable_checkpointing
    from lorakit.train.loss import batch_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_cut_down(config, layers), dtype=torch.float32)
    model.set_attn_implementation(pick_attention(model.config, "cpu", torch.float32))
    model.requires_grad_(False)
    model.config.use_cache = False
    model = attach_adapter(model, lora)
    if checkpointing:
        enable_checkpointing(model)
    model.train()
    ids = [3 + i % (PROBE_VOCAB - 3) for i in range(example_length)]
    examples = [Example(ids, ids, "probe") for _ in range(2)]  # every token supervised: the worst case
    batch = collate([examples], pad_id=0).to_tensors()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def count(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        batch_loss(model, batch, chunk_tokens=256)
    return sum(saved.values()), 2 * example_length
