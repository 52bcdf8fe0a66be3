"""The planner's model facts: parameter counts from the meta device, activations from the probe."""

import pytest
from transformers import AutoConfig

from lorakit.config.schema import LoraSection, ModelSection
from lorakit.errors import ModelError
from lorakit.model.adapters import attach_adapter
from lorakit.plan.facts import load_model_config, measure_facts
from tests.conftest import build_model

LLAMA_TARGETS = 7  # q, k, v, o, gate, up, down


def test_parameter_counts_match_the_real_model(tiny_model_dir):
    config = load_model_config(ModelSection(name_or_path=str(tiny_model_dir)))
    facts = measure_facts(config, LoraSection(r=4), max_length=64)
    model = build_model("llama")
    assert facts.base_params == sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    embeddings = model.get_input_embeddings().weight.numel()
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert facts.linear_params == facts.base_params - head - embeddings - norms
    model.requires_grad_(False)
    trainable = sum(p.numel() for p in attach_adapter(model, LoraSection(r=4)).parameters() if p.requires_grad)
    assert facts.adapter_params == trainable


def test_activations_follow_the_adapter_rank_and_checkpointing(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    small, middle, large = (measure_facts(config, LoraSection(r=r), max_length=32) for r in (4, 12, 20))
    # Each adapted linear layer keeps what lora_B's backward needs, a few floats per rank per token (how many is
    # the installed peft's business): the cost grows with the rank, and by the same amount per rank step.
    step = middle.activations.per_layer - small.activations.per_layer
    # (whole byte counts divided by the probe's tokens: equal up to float division, hence 1e-6)
    assert step > 0 and large.activations.per_layer - middle.activations.per_layer == pytest.approx(step, rel=1e-6)
    assert step >= LLAMA_TARGETS * (12 - 4) * 4  # at least the lora_A output of every adapted layer, in float32
    # With checkpointing a layer keeps about its input hidden state, whatever the rank.
    assert small.checkpointed.per_layer == large.checkpointed.per_layer
    assert small.activations.per_layer > 10 * small.checkpointed.per_layer
    # Linear in the tokens: the same cost per token from a longer probe.
    longer = measure_facts(config, LoraSection(r=4), max_length=96)
    # per token from a longer probe: attention's small per-sequence terms spread over more tokens (< 2%)
    assert longer.activations.per_layer == pytest.approx(small.activations.per_layer, rel=0.02)


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_model_config(ModelSection(name_or_path=str(tmp_path / "nowhere")))
